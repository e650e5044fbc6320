"""Hugging Face datasets and Parquet for the trajectory formats (agentclone.formats.hf), with the real
``datasets`` and ``pyarrow``: export as one Parquet file or a dataset folder with a card that
``datasets.load_dataset`` opens offline; import from Parquet, dataset folders, ``save_to_disk`` folders;
Arrow's nulls read as absent fields; errors naming file, row and field; atomic writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from agentclone.data import ExpertLabel, Step, Trajectory, write_trajectories
from agentclone.formats import ExportOptions, FormatError, ImportOptions, export_file, iter_import, make_format
from agentclone.formats.hf import drop_nulls, iter_table_records, write_dataset_folder, write_parquet
from test_formats import agentclone  # noqa: F401  (a fixture: the CLI's entry point -> (status, stderr))

FORMATS = ["agentgym", "sharegpt", "openai", "llamafactory"]


def sample() -> list[Trajectory]:
    return [
        Trajectory(id="a", env_id="e", task_id="a", instructions="Reach 2.", created_at=0.0, steps=[
            Step(observation="Value 0.", thought="up", action="add 1", loss=False),
            Step(observation="Value 1.", action="add 1", loss=True),
        ], final_observation="Value 2."),
        Trajectory(id="b", env_id="e", task_id="b", instructions="", created_at=0.0, steps=[
            Step(observation="Value 5.", raw_output="free text, no action", action="free text, no action",
                 info={"verbatim": True}, loss=True),
        ]),
        Trajectory(id="c", env_id="e", task_id="c", created_at=0.0, steps=[]),  # skipped by the chat formats
    ]


def load(folder: Path, tmp_path: Path) -> list[dict]:
    return list(datasets.load_dataset(str(folder), split="train", cache_dir=str(tmp_path / "hf-cache")))


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def imported(name: str, source: Path, loss: str = "last", **kw) -> list[Trajectory]:
    return list(iter_import(make_format(name), source, ImportOptions(loss=loss), **kw))


@pytest.mark.parametrize("name", FORMATS)
def test_dataset_folder_loads_as_the_records_and_imports_like_the_jsonl(name, tmp_path):
    export_file(make_format(name), sample(), tmp_path / "x.jsonl", ExportOptions())
    stats = export_file(make_format(name), sample(), tmp_path / "ds", ExportOptions(), hf_dataset=True,
                        command="agentclone export x.jsonl")
    assert sorted(p.relative_to(tmp_path / "ds").as_posix() for p in (tmp_path / "ds").rglob("*")) == [
        "README.md", "data", "data/train-00000-of-00001.parquet"]
    records = jsonl(tmp_path / "x.jsonl")
    rows = load(tmp_path / "ds", tmp_path)
    assert len(rows) == len(records) == stats.records == 2
    assert [drop_nulls(r) for r in rows] == [drop_nulls(r) for r in records]
    assert imported(name, tmp_path / "ds") == imported(name, tmp_path / "x.jsonl")
    # the card's dataset_info is what datasets uses: the features of the Parquet file, the row count
    info = datasets.load_dataset_builder(str(tmp_path / "ds"), cache_dir=str(tmp_path / "hf-cache")).info
    assert info.features == datasets.Dataset.from_parquet(
        str(tmp_path / "ds" / "data" / "train-00000-of-00001.parquet"), cache_dir=str(tmp_path / "hf-cache")).features
    assert info.splits["train"].num_examples == 2

    card = (tmp_path / "ds" / "README.md").read_text()
    assert f"**{name}** format" in card and "`agentclone export x.jsonl`" in card
    assert "| 2 | 3 | 2 | 1 |" in card  # records, steps, steps with loss, skipped
    assert ("Per-turn loss flags are kept" in card) == make_format(name).carries_loss


@pytest.mark.parametrize("name", ["agentgym", "openai"])
def test_a_missing_loss_flag_stays_missing(name, tmp_path):
    if name == "agentgym":
        turns = [{"from": "human", "value": "Value 0."}, {"from": "gpt", "value": "Action: add 1", "loss": False},
                 {"from": "human", "value": "Value 1."}, {"from": "gpt", "value": "Action: add 1"},
                 {"from": "human", "value": "Value 2."}, {"from": "gpt", "value": "Action: stop", "loss": True}]
        records = [{"item_id": "x", "conversations": turns}]
    else:
        records = [{"messages": [{"role": "user", "content": "Value 0."},
                                 {"role": "assistant", "content": "Action: add 1", "weight": 1},
                                 {"role": "user", "content": "Value 1."},
                                 {"role": "assistant", "content": "Action: add 1"},
                                 {"role": "user", "content": "Value 2."},
                                 {"role": "assistant", "content": "Action: stop", "weight": 0}]}]
    (tmp_path / "x.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    write_dataset_folder(iter(records), tmp_path / "ds", card=lambda info: "")
    from_jsonl, from_table = imported(name, tmp_path / "x.jsonl", "all"), imported(name, tmp_path / "ds", "all")
    assert from_table == from_jsonl
    # the middle turn had no flag: --loss all gave it one (the null Arrow stored for it is no flag, not false)
    assert [s.loss for s in from_table[0].steps] == ([True, True, False] if name == "openai" else [True, True])


def test_single_parquet_and_save_to_disk_folders(tmp_path, agentclone):
    write_trajectories(tmp_path / "t.jsonl", sample())
    code, err = agentclone("export", tmp_path / "t.jsonl", "--to", "agentgym", "--output", tmp_path / "x.parquet")
    assert code == 0, err
    export_file(make_format("agentgym"), sample(), tmp_path / "x.jsonl", ExportOptions())
    expected = imported("agentgym", tmp_path / "x.jsonl")
    assert imported("agentgym", tmp_path / "x.parquet") == expected

    dataset = datasets.Dataset.from_parquet(str(tmp_path / "x.parquet"), cache_dir=str(tmp_path / "hf-cache"))
    dataset.save_to_disk(str(tmp_path / "saved"))
    assert imported("agentgym", tmp_path / "saved") == expected
    datasets.DatasetDict({"test": dataset}).save_to_disk(str(tmp_path / "saved-dict"))
    assert imported("agentgym", tmp_path / "saved-dict", split="test") == expected
    with pytest.raises(FormatError, match=r"no split 'train'; its splits: test \(pass --split\)"):
        imported("agentgym", tmp_path / "saved-dict")

    # a format's sidecar file is written for a .parquet file (LLaMA-Factory reads Parquet data files)
    export_file(make_format("llamafactory"), sample(), tmp_path / "lf.parquet", ExportOptions())
    assert json.loads((tmp_path / "dataset_info.json").read_text())["lf"]["file_name"] == "lf.parquet"
    assert imported("llamafactory", tmp_path / "lf.parquet") == imported("sharegpt", tmp_path / "lf.parquet")

    code, err = agentclone("import", tmp_path / "saved-dict", "--from", "agentgym", "--split", "test",
                           "--output", tmp_path / "back.jsonl")
    assert code == 0, err
    assert len(jsonl(tmp_path / "back.jsonl")) == 2


def test_a_folder_of_json_lines_files_by_split(tmp_path):
    export_file(make_format("openai"), sample(), tmp_path / "x.jsonl", ExportOptions())
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "test.jsonl").write_bytes((tmp_path / "x.jsonl").read_bytes())
    assert imported("openai", tmp_path / "ds", split="test") == imported("openai", tmp_path / "x.jsonl")
    with pytest.raises(FormatError, match="no split 'train'; its splits: test"):
        imported("openai", tmp_path / "ds")


def test_mixed_optional_fields_get_one_schema(tmp_path):
    # ShareGPT's `tools` may be a string or absent; a nested key may be missing; an int column may hold a float
    records = [
        {"id": "a", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "Action: go"}],
         "tools": "[]", "score": 1},
        {"id": "b", "conversations": [{"from": "human", "value": "hi"},
                                      {"from": "gpt", "value": "Action: go", "loss": False}], "score": 0.5},
    ]
    write_dataset_folder(iter(records), tmp_path / "ds", card=lambda info: "")
    write_parquet(iter(records), tmp_path / "x.parquet")
    assert [drop_nulls(r) for r in load(tmp_path / "ds", tmp_path)] == records
    for source in (tmp_path / "ds", tmp_path / "x.parquet"):
        trajs = imported("sharegpt", source)
        assert [[s.loss for s in t.steps] for t in trajs] == [[True], [False]]

    # an object that is {} in every record has no Arrow type: stored as null, read back as absent
    write_parquet(iter([{"id": "a", "meta": {}}, {"id": "b", "meta": {}}]), tmp_path / "empty.parquet")
    assert [r for _, r in iter_table_records(tmp_path / "empty.parquet")] == [{"id": "a"}, {"id": "b"}]
    (tmp_path / "empty.parquet").unlink()

    # a field of two types is refused before anything is written
    bad = [*records, {"id": "c", "conversations": [], "tools": [{"name": "search"}]}]
    for write, target in ((write_parquet, tmp_path / "bad.parquet"), (write_dataset_folder, tmp_path / "bad")):
        kw = {} if write is write_parquet else {"card": lambda info: ""}
        with pytest.raises(FormatError, match=r"record 2: field 'tools': is a list here but string in earlier"):
            write(iter(bad), target, **kw)
        assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "hf-cache", "x.parquet"]


def test_a_bad_record_in_a_parquet_file_names_file_row_and_field(tmp_path, agentclone):
    turns = [{"from": "human", "value": "v"}, {"from": "gpt", "value": "Action: a"}]
    records = [{"item_id": "0", "conversations": turns},
               {"item_id": "1", "conversations": [*turns, {"from": "robot", "value": "?"}]}]
    write_parquet(iter(records), tmp_path / "bad.parquet")
    code, err = agentclone("import", tmp_path / "bad.parquet", "--from", "agentgym", "--output", tmp_path / "o.jsonl")
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{tmp_path / 'bad.parquet'}: row 1: field 'conversations[2].from': unknown role 'robot'" in err
    assert not (tmp_path / "o.jsonl").exists() and len(list(tmp_path.iterdir())) == 1


def test_an_export_that_fails_midway_leaves_nothing(tmp_path):
    def trajs():
        yield from sample()[:2]
        raise RuntimeError("collector died")

    with pytest.raises(RuntimeError):
        export_file(make_format("openai"), trajs(), tmp_path / "ds", ExportOptions(), hf_dataset=True)
    with pytest.raises(RuntimeError):
        export_file(make_format("openai"), trajs(), tmp_path / "x.parquet", ExportOptions())
    assert list(tmp_path.iterdir()) == []

    # a folder agentclone wrote is replaced; any other folder is refused, untouched
    export_file(make_format("openai"), sample(), tmp_path / "ds", ExportOptions(), hf_dataset=True)
    export_file(make_format("openai"), sample()[:1], tmp_path / "ds", ExportOptions(), hf_dataset=True)
    assert len(load(tmp_path / "ds", tmp_path)) == 1
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(FormatError, match="did not write"):
        export_file(make_format("openai"), sample(), tmp_path / "mine", ExportOptions(), hf_dataset=True)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "hf-cache", "mine"]


def test_agentclone_rows_share_whole_trajectories(tmp_path, agentclone):
    trajs = sample()
    trajs[0].steps[0].expert = ExpertLabel(action="add 2")
    trajs[0].steps[1].reward = 1.5
    trajs[0].success, trajs[0].env_kwargs, trajs[0].seed = True, {"level": 3}, 7
    write_trajectories(tmp_path / "t.jsonl", trajs)
    code, err = agentclone("export", tmp_path / "t.jsonl", "--to", "agentclone", "--output", tmp_path / "ds",
                           "--hf-dataset")
    assert code == 0, err
    assert len(load(tmp_path / "ds", tmp_path)) == 3  # trajectories without steps are kept
    card = (tmp_path / "ds" / "README.md").read_text()
    assert f"agentclone export {tmp_path / 't.jsonl'} --to agentclone" in card and "`steps[].loss`" in card
    code, err = agentclone("import", tmp_path / "ds", "--from", "agentclone", "--output", tmp_path / "back.jsonl")
    assert code == 0, err
    assert (tmp_path / "back.jsonl").read_text() == (tmp_path / "t.jsonl").read_text()
    assert imported("agentclone", tmp_path / "t.jsonl") == trajs  # its own JSONL too
    # export reads such a folder as it reads the trajectory file
    for source, out in ((tmp_path / "t.jsonl", "a.jsonl"), (tmp_path / "ds", "b.jsonl")):
        code, err = agentclone("export", source, "--to", "openai", "--output", tmp_path / out)
        assert code == 0, err
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()


def test_keep_meta_in_a_table_is_json_text(tmp_path):
    trajs = sample()
    trajs[1].steps[0].info["extra"] = [1, 2]
    export_file(make_format("sharegpt"), trajs, tmp_path / "ds", ExportOptions(keep_meta=True), hf_dataset=True)
    assert isinstance(load(tmp_path / "ds", tmp_path)[0]["agentclone"], str)
    assert imported("sharegpt", tmp_path / "ds") == trajs[:2]


def test_from_hub_offline_is_one_clear_error(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "cache"),
           "HF_HOME": str(tmp_path / "home")}
    proc = subprocess.run([sys.executable, "-m", "agentclone.cli", "import", "--from-hub", "someone/trajectories",
                           "--from", "sharegpt", "--output", str(tmp_path / "o.jsonl")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: cannot reach the Hugging Face Hub to load 'someone/trajectories'")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "pass its folder instead" in proc.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_import_needs_a_file_or_a_hub_name(tmp_path, agentclone):
    code, err = agentclone("import", "--from", "sharegpt", "--output", tmp_path / "o.jsonl")
    assert code == 2 and "give either FILE" in err
