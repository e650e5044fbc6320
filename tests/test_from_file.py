"""Recipes whose demonstrations come from a file (``collect.from_file``) instead of a collection."""

import json

import pytest

from agentclone.data import read_trajectories
from agentclone.formats import ExportOptions, export_file, make_format
from agentclone.pipeline import run_recipe
from agentclone.prompting import ActionFormat, trajectory_messages
from agentclone.recipes import RecipeError, validate_recipe

ENV = {"id": "test/counter-v0", "kwargs": {"targets": 4, "max_steps": 3}}


def ran(result):
    return sorted(name for name, what in result["stages"].items() if what == "ran")


def recipe(collect, stages=("collect", "build"), **more):
    return validate_recipe({"env": ENV, "collect": collect, "stages": list(stages), **more})


def samples(path):
    """The built samples' chat messages and loss flags: what training sees."""
    return [trajectory_messages(t, ActionFormat()) for t in read_trajectories(path)]


@pytest.fixture
def collected(tmp_path, counter_env_registered):
    out = tmp_path / "collected"
    run_recipe(recipe({"policy": "expert", "episodes": 4}), out)
    return out


def test_a_file_in_another_format_trains_on_what_the_collection_would(tmp_path, collected):
    agentgym = tmp_path / "demos.agentgym.json"
    export_file(make_format("agentgym"), read_trajectories(collected / "demos.jsonl"), agentgym, ExportOptions())
    out = tmp_path / "from_file"
    source = {"path": str(agentgym), "format": "agentgym", "successful": True}
    result = run_recipe(recipe({"from_file": source}), out)
    assert ran(result) == ["build", "collect"]
    imported = [json.loads(line) for line in (out / "demos.jsonl").read_text().splitlines()]
    assert len(imported) == 4 and {t["env_id"] for t in imported} == {"test/counter-v0"}
    assert samples(out / "train.jsonl") == samples(collected / "train.jsonl")

    # unchanged file: nothing redone; a changed file: imported again and rebuilt
    assert ran(run_recipe(recipe({"from_file": source}), out)) == []
    records = json.loads(agentgym.read_text())
    agentgym.write_text(json.dumps(records[:2]))
    again = run_recipe(recipe({"from_file": source}), out)
    assert ran(again) == ["build", "collect"]
    assert len((out / "demos.jsonl").read_text().splitlines()) == 2


def test_agentclone_trajectories_are_read_as_they_are(tmp_path, collected):
    out = tmp_path / "from_file"
    run_recipe(recipe({"from_file": {"path": str(collected / "demos.jsonl")}}), out)
    assert samples(out / "train.jsonl") == samples(collected / "train.jsonl")


def test_bad_from_file_settings_are_refused_at_load(tmp_path, counter_env_registered):
    with pytest.raises(RecipeError, match="collect.from_file.path: no such file or folder"):
        recipe({"from_file": {"path": str(tmp_path / "missing.jsonl")}})
    data = tmp_path / "d.jsonl"
    data.write_text("")
    with pytest.raises(RecipeError, match="collect.from_file.format: unknown trajectory format 'nope'"):
        recipe({"from_file": {"path": str(data), "format": "nope"}})
    with pytest.raises(RecipeError, match="remove episodes, policy"):
        recipe({"from_file": {"path": str(data)}, "policy": "hf", "episodes": 3})
    with pytest.raises(RecipeError, match="rounds.collect: rounds collect with the policy of each round"):
        recipe({"from_file": {"path": str(data)}}, rounds={"count": 1})
