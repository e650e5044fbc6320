"""One stage runner for every recipe shape: a changed setting redoes exactly the stages that depend on it."""

import json

import pytest

from agentclone.data import read_trajectories
from agentclone.pipeline import run_recipe
from agentclone.recipes import validate_recipe

from test_disagreement import tiny_model  # noqa: F401  (a fixture)

TRAIN = {"max_steps": 1, "batch_size": 2, "save_steps": 100, "logging_steps": 1}
GEN = {"max_new_tokens": 6, "batch_size": 8}
ROLLOUT = {"concurrency": 4, "max_consecutive_invalid": 1}


def plain(model, **over):
    spec = {
        "env": {"id": "test/counter-v0", "kwargs": {"targets": 4, "max_steps": 3}}, "model": model,
        "collect": {"policy": "expert"},
        "train": dict(TRAIN),
        "eval": {"episodes": 2, "generation": GEN, "rollout": ROLLOUT},
    }
    for key, value in over.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    return validate_recipe(spec)


def ran(result):
    return sorted(name for name, what in result["stages"].items() if what == "ran")


def test_plain_recipe_redoes_only_what_a_changed_setting_touches(tmp_path, counter_env_registered, tiny_model,
                                                                 capsys):
    out = tmp_path / "run"
    first = run_recipe(plain(tiny_model), out)
    assert ran(first) == ["build", "collect", "eval adapter", "eval base", "train"]
    assert ran(run_recipe(plain(tiny_model), out)) == []  # everything complete and current
    # the run folder says what this run did, also when it did nothing
    assert set(json.loads((out / "stages.json").read_text()).values()) == {"skipped"}
    # a train setting: the adapter and its evaluation, nothing else
    changed = run_recipe(plain(tiny_model, train={"learning_rate": 0.01}), out)
    assert ran(changed) == ["eval adapter", "train"]
    assert len(list((out / "eval").glob("adapter.stale-*.jsonl"))) == 1  # the old adapter's rollouts moved aside
    # an eval setting: both evaluations only, and the log names what changed
    capsys.readouterr()
    assert ran(run_recipe(plain(tiny_model, train={"learning_rate": 0.01}, eval={"episodes": 3}), out)) == [
        "eval adapter", "eval base"]
    assert len(read_trajectories(out / "eval" / "adapter.jsonl")) == 3
    log = " ".join(capsys.readouterr().err.split())
    assert "base.jsonl was made from other inputs: eval.episodes (2 -> 3); moved it to base.stale-" in log


def rounds_recipe(model, **train):
    return validate_recipe({
        "env": {"id": "test/counter-v0", "kwargs": {"targets": 4, "max_steps": 3}}, "model": model,
        "collect": {"policy": "hf", "generation": {**GEN, "temperature": 1.0}, "rollout": ROLLOUT,
                    "expert_labels": True},
        "builder": {"name": "leap", "options": {"states": "all"}},
        "rounds": {"count": 2, "collect_episodes": 2, "baseline": None},
        "train": {**TRAIN, **train},
        "eval": {"episodes": 2, "generation": GEN, "rollout": ROLLOUT},
    })


def test_rounds_redo_every_round_after_a_changed_train_setting(tmp_path, counter_env_registered, tiny_model):
    """Review item 1: a changed train: must not leave round k's evaluation or round k+1's collection
    from the old adapter."""
    out = tmp_path / "rounds"
    first = run_recipe(rounds_recipe(tiny_model), out)
    assert "round-2 eval" in ran(first)
    old_eval = read_trajectories(out / "round-1" / "eval.jsonl")
    assert ran(run_recipe(rounds_recipe(tiny_model), out)) == []
    again = run_recipe(rounds_recipe(tiny_model, learning_rate=0.01), out)
    # round 1 collected with the start policy and built from that: both still current
    assert ran(again) == ["round-1 eval", "round-1 train", "round-2 build", "round-2 collect", "round-2 eval",
                          "round-2 train"]
    assert "round-0 eval" not in ran(again) and "expert demos" not in ran(again)
    assert len(list((out / "round-1").glob("eval.stale-*.jsonl"))) == 1
    assert len(list((out / "round-2").glob("demos.stale-*.jsonl"))) == 1
    new_eval = read_trajectories(out / "round-1" / "eval.jsonl")
    assert min(t.created_at for t in new_eval) > max(t.created_at for t in old_eval)
    meta = json.loads((out / "round-2" / "adapter" / "agentclone.json").read_text())
    assert meta["init_adapter"] == str(out / "round-1" / "adapter")


def test_a_rounds_run_killed_anywhere_resumes_without_redoing_finished_work(tmp_path, counter_env_registered,
                                                                            tiny_model):
    """As if killed twice: after round 2's adapter was saved but before its stage was marked done, and in the
    middle of round 2's evaluation (one episode written)."""
    out = tmp_path / "rounds"
    run_recipe(rounds_recipe(tiny_model), out)
    stamp = out / "round-2" / ".adapter.inputs"
    stamp.write_text(stamp.read_text().replace('"done": true', '"done": false'))
    evals = out / "round-2" / "eval.jsonl"
    first, *_ = evals.read_text().splitlines(keepends=True)
    evals.write_text(first)
    (out / "round-2" / ".eval.jsonl.inputs").write_text(
        (out / "round-2" / ".eval.jsonl.inputs").read_text().replace('"done": true', '"done": false'))
    again = run_recipe(rounds_recipe(tiny_model), out)
    assert ran(again) == ["round-2 eval"]
    resumed = read_trajectories(evals)
    assert len(resumed) == 2 and resumed[0].to_json_line() == first.strip()


def test_recipe_stages_apply_to_rounds(tmp_path, counter_env_registered, tiny_model):
    recipe = rounds_recipe(tiny_model).model_copy(update={"stages": ["collect"]})
    result = run_recipe(recipe, tmp_path / "r")
    # no adapter is trained, so there is no round-2 policy to collect with
    assert ran(result) == ["expert demos", "round-1 collect"]
    assert not (tmp_path / "r" / "round-1" / "adapter").exists()


def methods_recipe(model, bc_train=None):
    return validate_recipe({
        "env": {"id": "test/counter-v0", "kwargs": {"targets": 4, "max_steps": 3}}, "model": model,
        "collect": {"policy": "expert"},
        "train": TRAIN,
        "eval": {"episodes": 2, "generation": GEN, "rollout": ROLLOUT, "expert_labels": True},
        "variants": [
            {"name": "bc", "builder": {"name": "bc"}, "train": bc_train or {}},
            {"name": "leap", "builder": {"name": "leap"},
             "rounds": {"count": 1, "start_from": "bc", "collect_episodes": 2, "baseline": None,
                        "collect": {"policy": "hf", "generation": GEN, "rollout": ROLLOUT, "expert_labels": True}}},
        ],
    })


def test_variants_compose_with_rounds(tmp_path, counter_env_registered, tiny_model):
    recipe = methods_recipe(tiny_model)
    out = tmp_path / "v"
    result = run_recipe(recipe, out)
    # round 0 of the LEAP variant is the BC variant's evaluation, not a second one
    assert ran(result) == ["bc: build", "bc: eval", "bc: train", "collect", "eval base", "leap: round-1 build", "leap: round-1 collect", "leap: round-1 eval", "leap: round-1 train"]
    meta = json.loads((out / "variants" / "leap" / "round-1" / "adapter" / "agentclone.json").read_text())
    assert meta["init_adapter"] == str(out / "variants" / "bc" / "adapter")
    rows = {r["variant"]: r for r in json.loads((out / "comparison.json").read_text())["rows"]}
    assert rows["leap"]["episodes"] == 2 and "expert_agreement" in rows["leap"]
    assert rows["leap"]["paired_vs_reference"]["episodes"] == 2
    # the LEAP variant's expert data is the shared collection, not a second one
    assert not (out / "variants" / "leap" / "expert.jsonl").exists()
    assert ran(run_recipe(recipe, out)) == []
    # the BC variant's adapter changes: everything LEAP built on it is redone; shared stages are not
    changed = run_recipe(methods_recipe(tiny_model, bc_train={"learning_rate": 0.01}), out)
    assert ran(changed) == ["bc: eval", "bc: train", "leap: round-1 build",
                            "leap: round-1 collect", "leap: round-1 eval", "leap: round-1 train"]


def test_collect_only_successful_is_refused_with_the_fix(counter_env_registered):
    from agentclone.recipes import RecipeError

    with pytest.raises(RecipeError, match="collect.*only_successful.*builder.options.only_successful"):
        validate_recipe({"env": {"id": "test/counter-v0"}, "collect": {"only_successful": True}})


def test_format_reaches_the_builder_in_a_plain_run(tmp_path, counter_env_registered):
    """Review item 3: the recipe's format reached the disagreement selector only in variants."""
    from agentclone.builders.base import DataBuilder
    from agentclone.plugins import get_registry

    seen = []

    class Spy(DataBuilder):
        name = "spy"

        def build(self, trajectories, context):
            seen.append(context.format)
            return self._count(trajectories)

    builders = get_registry().builders
    builders["spy"] = Spy
    try:
        run_recipe(validate_recipe({"env": {"id": "test/counter-v0"}, "format": "action",
                                    "collect": {"policy": "expert", "episodes": 2}, "builder": {"name": "spy"},
                                    "stages": ["collect", "build"]}), tmp_path)
    finally:
        builders.pop("spy")
    assert seen == ["action"]


def test_an_eval_only_recipe_runs_in_an_empty_folder(tmp_path, counter_env_registered, tiny_model):
    # stages: [eval] with the base policy alone (e.g. a served model): nothing to collect, build or train
    recipe = plain(tiny_model, eval={"policies": ["base"]}).model_copy(update={"stages": ["eval"]})
    result = run_recipe(recipe, tmp_path / "r")
    assert ran(result) == ["eval base"]
    assert result["stages"]["build"] == result["stages"]["train"] == "disabled"
    assert len(read_trajectories(tmp_path / "r" / "eval" / "base.jsonl")) == 2
    assert not (tmp_path / "r" / "demos.jsonl").exists()


def test_eval_takes_set_overrides_like_run(tmp_path, counter_env_registered, tiny_model, cli):
    import yaml

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"env": {"id": "test/counter-v0", "kwargs": {"targets": 4, "max_steps": 3}},
                                    "model": tiny_model, "eval": {"episodes": 2, "generation": GEN,
                                                                  "rollout": ROLLOUT}}))

    code, io = cli("eval", path, "-o", tmp_path / "out", "--set", "eval.policies=[base]", "--set", "eval.episodes=3")
    assert code == 0, io.err
    assert len(read_trajectories(tmp_path / "out" / "eval" / "base.jsonl")) == 3
    assert not (tmp_path / "out" / "eval" / "adapter.jsonl").exists()
    code, io = cli("eval", path, "-o", tmp_path / "out2", "--set", "eval.episodez=3")
    assert code == 2 and "eval.episodez" in io.err and not (tmp_path / "out2").exists()
