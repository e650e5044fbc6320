import pytest

from agentclone.recipes import RecipeError, load_recipe

from conftest import REPO


def write(tmp_path, text, name="r.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_quickstart_recipe_validates():
    r = load_recipe(REPO / "recipes" / "quickstart.yaml")
    assert r.env.id == "textcraft/craft-v1"
    assert r.train.batch_size == 4 and r.train.lora.r == 16  # from configs/train/cpu-lora.yaml
    assert r.model == "smollm2-135m"  # from configs/models/smollm2-135m.yaml


def test_unknown_key_names_path_and_allowed_keys(tmp_path, counter_env_registered):
    p = write(tmp_path, "env: {id: test/counter-v0}\ntrain:\n  lerning_rate: 0.1\n")
    with pytest.raises(RecipeError) as exc:
        load_recipe(p)
    msg = str(exc.value)
    assert str(p) in msg and "train.lerning_rate" in msg and "unknown key" in msg and "learning_rate" in msg


def test_unknown_nested_key(tmp_path, counter_env_registered):
    p = write(tmp_path, "env: {id: test/counter-v0}\ntrain:\n  lora: {rank: 8}\n")
    with pytest.raises(RecipeError, match=r"train\.lora\.rank: unknown key; allowed keys here: r, alpha"):
        load_recipe(p)


def test_wrong_type(tmp_path, counter_env_registered):
    p = write(tmp_path, "env: {id: test/counter-v0}\ntrain:\n  batch_size: lots\n")
    with pytest.raises(RecipeError, match=r"train\.batch_size: .*integer.*'lots'"):
        load_recipe(p)


def test_unknown_environment_and_trainer(tmp_path, counter_env_registered):
    with pytest.raises(RecipeError, match="env.id: unknown environment 'nope/x-v1'"):
        load_recipe(write(tmp_path, "env: {id: nope/x-v1}\n"))
    with pytest.raises(RecipeError, match="builder: unknown builder 'magic'"):
        load_recipe(write(tmp_path, "env: {id: test/counter-v0}\ntrainer: {name: magic}\n"))


def test_policy_backend_options_are_checked_before_any_stage(tmp_path, counter_env_registered):
    """A backend option's wrong name or value is refused when the recipe loads, not when its stage
    starts (after collection and training have run)."""
    with pytest.raises(RecipeError, match=r"eval\.backend_options: policy backend 'hf': option 'attention': "
                                          r"expected one of 'varlen', 'sdpa', got str 'flash'"):
        load_recipe(write(tmp_path, "env: {id: test/counter-v0}\neval: {backend_options: {attention: flash}}\n"))
    with pytest.raises(RecipeError, match=r"collect\.backend_options: policy backend 'hf': option 'pagesize': "
                                          r"unknown option"):
        load_recipe(write(tmp_path, "env: {id: test/counter-v0}\ncollect: {policy: hf, backend_options: {pagesize: 16}}\n"))
    with pytest.raises(RecipeError, match=r"rounds\.collect\.policy: unknown policy backend 'magic'"):
        load_recipe(write(tmp_path, "env: {id: test/counter-v0}\nrounds: {collect: {policy: magic}}\n"))
    ok = load_recipe(write(tmp_path, "env: {id: test/counter-v0}\n"
                                     "eval: {backend_options: {engine: continuous, attention: sdpa, page_size: 16}}\n"))
    assert ok.eval.backend_options["attention"] == "sdpa"


def test_yaml_is_parsed_safely(tmp_path):
    p = write(tmp_path, "env: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(p)


def test_not_a_mapping_and_missing_file(tmp_path):
    with pytest.raises(RecipeError, match="a recipe is a mapping"):
        load_recipe(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(RecipeError, match="recipe not found"):
        load_recipe(tmp_path / "missing.yaml")


def test_unknown_preset(tmp_path, counter_env_registered):
    with pytest.raises(RecipeError, match="no preset 'nope'"):
        load_recipe(write(tmp_path, "defaults: [nope]\nenv: {id: test/counter-v0}\n"))


def test_old_trainer_key_still_works_with_a_warning(tmp_path, counter_env_registered):
    with pytest.warns(FutureWarning, match="'trainer:' is now 'builder:'"):
        recipe = load_recipe(write(tmp_path, "env: {id: test/counter-v0}\ntrainer: {name: bc, options: {last_turn_only: true}}\n"))
    assert recipe.builder.name == "bc" and recipe.builder.options == {"last_turn_only": True}
    with pytest.raises(RecipeError, match="both 'builder' and its old name 'trainer'"):
        load_recipe(write(tmp_path, "env: {id: test/counter-v0}\ntrainer: {name: bc}\nbuilder: {name: bc}\n"))


def test_environment_options_are_checked_when_the_recipe_is_loaded(tmp_path, counter_env_registered):
    """Review item 8: a wrong or unknown env option surfaced only when the collect stage ran."""
    with pytest.raises(RecipeError, match=r"env.kwargs: .*'targets'.*int"):
        load_recipe(write(tmp_path, "env: {id: test/counter-v0, kwargs: {targets: many}}\n"))
    with pytest.raises(RecipeError, match=r"env.kwargs: .*'target'.*unknown option"):
        load_recipe(write(tmp_path, "env: {id: test/counter-v0, kwargs: {target: 3}}\n"))


def test_a_model_that_does_not_exist_fails_when_the_recipe_is_loaded(tmp_path, counter_env_registered):
    """Review item 8: a missing model path surfaced as a deep transformers message only at the train stage."""
    with pytest.raises(RecipeError, match=r"model: model '\./no/such/model': no such directory"):
        load_recipe(write(tmp_path, "env: {id: test/counter-v0}\nmodel: ./no/such/model\n"))
    with pytest.raises(RecipeError, match=r"model: model 'nobody/nothing' is not a registered alias.*offline"):
        load_recipe(write(tmp_path, "env: {id: test/counter-v0}\nmodel: nobody/nothing\n"))


@pytest.mark.parametrize("path", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_textcraft_recipe_validates(path, tmp_path, monkeypatch):
    """A shipped recipe that no longer loads (a renamed key, a removed option) is caught here, not by a user.
    Recipes of plugins the test run does not load are left to those plugins' own test runs."""
    import yaml

    if yaml.safe_load(path.read_text())["env"]["id"].split("/")[0] != "textcraft":
        pytest.skip("environment of a plugin this run does not load")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "textcraft.agentgym.json").write_text("[]")  # textcraft_from_file.yaml's data, made by a command
    load_recipe(path)
