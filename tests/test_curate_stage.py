"""``curate:`` in a recipe: the demonstrations are curated before the build, the report is curate.json, the
loss flags the filter turned off reach the training samples, and the stage reruns only when its inputs change."""

import json

import pytest

from agentclone.data import read_trajectories, write_trajectories
from agentclone.pipeline import run_recipe
from agentclone.recipes import RecipeError, validate_recipe

from test_curate import defective

ENV = {"id": "test/counter-v0", "kwargs": {"targets": 4, "max_steps": 3}}


def ran(result):
    return sorted(name for name, what in result["stages"].items() if what == "ran")


@pytest.fixture
def demos(tmp_path):
    path = tmp_path / "defective.jsonl"
    write_trajectories(path, defective())
    return path


def recipe(demos, curate, keep_loss_off=True, **more):
    return validate_recipe({
        "env": ENV, "collect": {"from_file": {"path": str(demos)}}, "curate": curate,
        "builder": {"name": "bc", "options": {"only_successful": False, "keep_loss_off": keep_loss_off}},
        "stages": ["collect", "build"], **more})


def test_a_recipe_curates_before_the_build(tmp_path, demos, counter_env_registered):
    out = tmp_path / "run"
    result = run_recipe(recipe(demos, {"drop_duplicates": True, "drop_conflicting": True}), out)
    assert ran(result) == ["build", "collect", "curate"]
    report = json.loads((out / "curate.json").read_text())
    assert report["before"]["episodes"] == 7 and report["after"]["episodes"] == 6
    assert report["removed"]["duplicate"]["trajectories"] == 1
    # after the duplicate is gone, a and c tie at (t1, [o0]), and e and f at (t3, [q0]): four steps lose their loss
    assert report["removed"]["conflicting"]["steps_loss_off"] == 4
    trained = {t.id: [s.loss for s in t.steps] for t in read_trajectories(out / "train.jsonl")}
    assert "b" not in trained
    assert trained["a"] == [False, True] and trained["c"] == [False, True]
    assert trained["e"] == [False] or "e" not in trained  # a sample without loss may be dropped by the builder
    # unchanged: nothing reruns; another filter: curate and build only
    assert ran(run_recipe(recipe(demos, {"drop_duplicates": True, "drop_conflicting": True}), out)) == []
    changed = run_recipe(recipe(demos, {"drop_duplicates": True, "drop_conflicting": True, "drop_failed": True}), out)
    assert ran(changed) == ["build", "curate"]
    assert json.loads((out / "curate.json").read_text())["removed"]["failed"]["trajectories"] == 1


def test_variants_curate_their_own_copy_of_the_shared_demonstrations(tmp_path, demos, counter_env_registered):
    spec = recipe(demos, None, variants=[
        {"name": "plain", "builder": {"name": "bc", "options": {"only_successful": False}}},
        {"name": "curated", "curate": {"drop_duplicates": True},
         "builder": {"name": "bc", "options": {"only_successful": False}}},
    ])
    out = tmp_path / "run"
    run_recipe(spec, out)
    assert not (out / "variants" / "plain" / "curate.json").exists()
    assert json.loads((out / "variants" / "curated" / "curate.json").read_text())["after"]["episodes"] == 6
    assert len(read_trajectories(out / "variants" / "plain" / "train.jsonl")) == 7
    assert len(read_trajectories(out / "variants" / "curated" / "train.jsonl")) == 6


def test_curate_settings_that_would_do_nothing_are_refused(demos, counter_env_registered):
    with pytest.raises(RecipeError, match="keep_loss_off: curate.drop_conflicting turns off the loss"):
        recipe(demos, {"drop_conflicting": True}, keep_loss_off=False)
    with pytest.raises(RecipeError, match="curate applies to the demonstrations of a plain run or of variants"):
        validate_recipe({"env": ENV, "curate": {"drop_failed": True}, "rounds": {"count": 1}})
    with pytest.raises(RecipeError, match="curate.drop_duplcates: unknown key"):
        recipe(demos, {"drop_duplcates": True})
