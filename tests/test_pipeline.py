"""`agentclone run` skips stages whose outputs match their inputs and redoes (without deleting) those that do not."""

from agentclone.data import read_trajectories
from agentclone.pipeline import run_recipe
from agentclone.recipes import validate_recipe


def recipe(episodes, **extra):
    return validate_recipe({
        "env": {"id": "test/counter-v0"},
        "collect": {"policy": "expert", "episodes": episodes},
        "stages": ["collect", "build"],
        **extra,
    })


def test_rerun_skips_and_changed_inputs_redo_without_loss(tmp_path, counter_env_registered):
    out = tmp_path / "run"
    run_recipe(recipe(6), out)
    first = read_trajectories(out / "demos.jsonl")
    assert len(first) == 6 and all(t.success for t in first)
    assert len(read_trajectories(out / "train.jsonl")) == 6
    stamp = (out / ".demos.jsonl.inputs").read_text()

    run_recipe(recipe(6), out)  # same inputs: nothing collected again
    again = read_trajectories(out / "demos.jsonl")
    assert [t.created_at for t in again] == [t.created_at for t in first]

    run_recipe(recipe(8, seed=3), out)  # other inputs: the old file is moved aside, the stage redone
    stale = list(out.glob("demos.stale-*.jsonl"))
    assert len(stale) == 1 and len(read_trajectories(stale[0])) == 6
    fresh = read_trajectories(out / "demos.jsonl")
    assert len(fresh) == 8 and (out / ".demos.jsonl.inputs").read_text() != stamp
    assert len(read_trajectories(out / "train.jsonl")) == 8
