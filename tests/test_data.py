import json

import pytest

from agentclone.data import (
    Step,
    Trajectory,
    TrajectoryFileError,
    TrajectoryWriter,
    from_dataset,
    load_parquet,
    read_trajectories,
    save_parquet,
    to_dataset,
    write_trajectories,
)
from agentclone.prompting import ActionFormat, trajectory_messages


def make_traj(i=0, steps=3, success=True):
    return Trajectory(
        id=f"e/t{i}#0",
        env_id="e/x-v1",
        task_id=f"t{i}",
        instructions="Do it.",
        steps=[
            Step(observation=f"obs {j} ünïcode", thought=f"think {j}", action=f"act {j}", reward=float(j == steps - 1),
                 info={"k": [j, {"nested": True}]}, loss=j % 2 == 0)
            for j in range(steps)
        ],
        success=success,
        return_=1.0,
        timings={"wall_s": 0.5},
        env_kwargs={"max_depth": 2},
    )


def test_jsonl_round_trip(tmp_path):
    path = tmp_path / "t.jsonl"
    trajs = [make_traj(i) for i in range(5)]
    with TrajectoryWriter(path) as w:
        for t in trajs:
            w.write(t)
    back = read_trajectories(path)
    assert [t.model_dump() for t in back] == [t.model_dump() for t in trajs]
    # "return" is the field name on disk
    assert "return" in json.loads(path.read_text().splitlines()[0])


def test_dataset_and_parquet_round_trip(tmp_path):
    trajs = [make_traj(i, steps=i + 1) for i in range(4)]
    ds = to_dataset(trajs)
    assert len(ds) == 4
    assert [t.model_dump() for t in from_dataset(ds)] == [t.model_dump() for t in trajs]
    save_parquet(trajs, tmp_path / "t.parquet")
    assert [t.model_dump() for t in load_parquet(tmp_path / "t.parquet")] == [t.model_dump() for t in trajs]


def test_chat_messages_follow_steps():
    t = make_traj(steps=3)
    messages, loss = trajectory_messages(t, ActionFormat())
    assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * 3
    assert messages[2]["content"] == "Thought: think 0\nAction: act 0"
    assert loss == [True, False, True]
    messages, _ = trajectory_messages(t, ActionFormat("action"))
    assert messages[2]["content"] == "Action: act 0"


def test_torn_last_line_keeps_earlier_episodes(tmp_path, capsys):
    path = tmp_path / "t.jsonl"
    write_trajectories(path, [make_traj(0), make_traj(1)])
    line = make_traj(2).to_json_line()
    with open(path, "a") as fh:
        fh.write(line[: len(line) // 2])  # crash mid-write
    back = read_trajectories(path)
    assert [t.id for t in back] == ["e/t0#0", "e/t1#0"]
    assert "torn last line" in capsys.readouterr().err
    with pytest.raises(TrajectoryFileError, match=":3:"):
        read_trajectories(path, on_torn="raise")
    # appending repairs the tail first: the file reads cleanly afterwards
    with TrajectoryWriter(path) as w:
        w.write(make_traj(3))
    assert [t.id for t in read_trajectories(path)] == ["e/t0#0", "e/t1#0", "e/t3#0"]


def test_malformed_line_names_file_line_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = make_traj(0).to_json_line()
    bad = json.loads(good)
    bad["steps"][1]["action"] = 42
    path.write_text(good + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(TrajectoryFileError) as exc:
        read_trajectories(path)
    msg = str(exc.value)
    assert str(path) in msg and ":2:" in msg and "steps.1.action" in msg


def test_not_json_and_unknown_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("{not json}\n")
    with pytest.raises(TrajectoryFileError, match=r"bad.jsonl:1: not valid JSON"):
        read_trajectories(path)
    obj = json.loads(make_traj().to_json_line())
    obj["surprise"] = 1
    path.write_text(json.dumps(obj) + "\n")
    with pytest.raises(TrajectoryFileError, match="surprise"):
        read_trajectories(path)


def test_parallel_parquet_saves_to_one_path_leave_a_whole_file_and_no_temporaries(tmp_path):
    import threading

    path = tmp_path / "t.parquet"
    sets = [[make_traj(i, steps=2) for i in range(3)], [make_traj(i, steps=4) for i in range(5)]]
    for _ in range(4):  # several rounds: the two saves overlap in a different place each time
        barrier = threading.Barrier(2)
        errors = []

        def save(trajs):
            try:
                barrier.wait(timeout=10)
                save_parquet(trajs, path)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=save, args=(s,)) for s in sets]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        back = [t.model_dump() for t in load_parquet(path)]
        assert back in ([t.model_dump() for t in s] for s in sets)  # one save's data, whole
        assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_atomically_written_files_and_folders_get_the_users_usual_permissions(tmp_path, monkeypatch):
    """Temporary files are 0600 and temporary folders 0700; what is renamed into place from them must not be:
    a run folder, an exported dataset or a merged model is read by other users and by servers."""
    import os
    import stat

    import agentclone.data
    from agentclone.data import atomic_write_text, mkdtemp_public, save_parquet
    from agentclone.formats import hf

    monkeypatch.setattr(agentclone.data, "_UMASK", 0o022)  # what the module read at import, whatever CI's is
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        save_parquet([make_traj()], tmp_path / "t.parquet")
        folder = mkdtemp_public(dir=tmp_path)
        # the formats' table writers go through the same mechanism (a Parquet file, a dataset folder)
        hf.write_parquet([{"a": 1}], tmp_path / "x.parquet")
        hf.write_dataset_folder([{"a": 1}], tmp_path / "ds", lambda info: "---\ntags:\n- agentclone\n---\n")
        (tmp_path / "plain.txt").write_text("x")
        (tmp_path / "plain").mkdir()
    finally:
        os.umask(old)

    def mode(p):
        return stat.S_IMODE((tmp_path / p).stat().st_mode)

    assert mode("a.json") == mode("t.parquet") == mode("plain.txt") == 0o644
    assert stat.S_IMODE(folder.stat().st_mode) == mode("plain") == 0o755
    assert mode("x.parquet") == mode("ds/data/train-00000-of-00001.parquet") == mode("ds/README.md") == 0o644
    assert mode("ds") == mode("ds/data") == 0o755


# -- AtomicFolder: a folder staged next to its target, then renamed into place ---------------------------


def _siblings(folder):
    return sorted(p.name for p in folder.parent.iterdir())


def test_atomic_folder_puts_the_contents_in_place_with_the_usual_modes(tmp_path, monkeypatch):
    import os
    import stat

    import agentclone.data
    from agentclone.data import AtomicFolder

    monkeypatch.setattr(agentclone.data, "_UMASK", 0o022)
    target = tmp_path / "new" / "out"  # its parent is made
    old = os.umask(0o022)
    try:
        with AtomicFolder(target) as staged:
            assert staged.tmp.parent == target.parent and staged.tmp.name.startswith(".out.")
            assert staged.tmp.name.endswith(".tmp") and not target.exists()  # nothing seen before the end
            (staged.tmp / "sub").mkdir()
            (staged.tmp / "sub" / "a.txt").write_text("a")
    finally:
        os.umask(old)
    assert (target / "sub" / "a.txt").read_text() == "a"
    assert _siblings(target) == ["out"]  # no temporary folder left
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE((target / "sub").stat().st_mode) == 0o755
    assert stat.S_IMODE((target / "sub" / "a.txt").stat().st_mode) == 0o644


@pytest.mark.parametrize("check", ["default", None])
def test_atomic_folder_leaves_the_target_as_it_was_when_the_block_raises(tmp_path, check):
    from agentclone.data import AtomicFolder

    target = tmp_path / "out"
    target.mkdir()
    if check is None:  # a policy that replaces whatever is there: the old contents survive a failure too
        (target / "old.txt").write_text("old")
    kwargs = {} if check == "default" else {"check": check}
    with pytest.raises(KeyboardInterrupt):
        with AtomicFolder(target, **kwargs) as staged:
            (staged.tmp / "new.txt").write_text("new")
            raise KeyboardInterrupt
    assert not staged.tmp.exists() and _siblings(target) == ["out"]
    assert sorted(p.name for p in target.iterdir()) == ([] if check == "default" else ["old.txt"])


def test_atomic_folder_refuses_by_default_a_target_that_is_not_an_empty_folder(tmp_path):
    from agentclone.data import AtomicFolder
    from agentclone.errors import UserError

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("keep")
    (tmp_path / "file").write_text("file")
    for name in ("full", "file"):
        with pytest.raises(UserError) as exc:
            AtomicFolder(tmp_path / name)
        assert str(exc.value) == f"{tmp_path / name} exists and is not an empty directory; choose another --output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "full"]  # refused before any temporary folder
    assert (tmp_path / "full" / "keep.txt").read_text() == "keep"
    (tmp_path / "empty").mkdir()  # an empty folder is replaced
    with AtomicFolder(tmp_path / "empty") as staged:
        (staged.tmp / "x").write_text("x")
    assert (tmp_path / "empty" / "x").read_text() == "x"


def test_atomic_folder_checks_again_before_replacing(tmp_path):
    """What is put into the target while the folder is being filled is not lost: the policy refuses it then."""
    from agentclone.data import AtomicFolder
    from agentclone.errors import UserError

    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(UserError, match="exists and is not an empty directory"):
        with AtomicFolder(target) as staged:
            (staged.tmp / "new.txt").write_text("new")
            (target / "theirs.txt").write_text("theirs")
    assert [p.name for p in target.iterdir()] == ["theirs.txt"] and _siblings(target) == ["out"]


def test_atomic_folder_replaces_what_its_policy_allows(tmp_path):
    """A policy of the caller's: replace a folder only when a marker says it was written by us."""
    from agentclone.data import AtomicFolder

    def ours_only(folder):
        if not (folder / "MARK").is_file():
            raise ValueError(f"{folder}: not ours")

    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for folder in (ours, theirs):
        folder.mkdir()
        (folder / "old.txt").write_text("old")
    (ours / "MARK").write_text("")
    with pytest.raises(ValueError, match="not ours"):
        AtomicFolder(theirs, check=ours_only)
    assert sorted(p.name for p in theirs.iterdir()) == ["old.txt"]
    with AtomicFolder(ours, check=ours_only) as staged:
        (staged.tmp / "MARK").write_text("")
        (staged.tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in ours.iterdir()) == ["MARK", "new.txt"]  # replaced, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ours", "theirs"]  # no temporary or old folder left


def test_atomic_folder_puts_the_old_target_back_when_the_rename_fails(tmp_path, monkeypatch):
    import os
    from pathlib import Path

    import agentclone.data
    from agentclone.data import AtomicFolder

    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    real_replace = os.replace

    def failing_replace(src, dst):
        if Path(src).name.endswith(".tmp"):
            raise OSError("disk on fire")
        real_replace(src, dst)

    monkeypatch.setattr(agentclone.data.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk on fire"):
        with AtomicFolder(target, check=None) as staged:
            (staged.tmp / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["old.txt"] and _siblings(target) == ["out"]
