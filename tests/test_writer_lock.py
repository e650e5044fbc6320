"""One writer per trajectory file: a second process collecting into the same file is refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from agentclone.data import TrajectoryWriter, Trajectory, lock_path, read_trajectories
from agentclone.errors import UserError
from agentclone.policies.base import make_policy
from agentclone.rollout import plan_episodes, run_rollouts

from conftest import CounterEnv

HOLDER = """
import sys
from agentclone.data import Trajectory, TrajectoryWriter
writer = TrajectoryWriter(sys.argv[1])
writer.write(Trajectory(id="held#0", env_id="test/counter-v0", task_id="held"))
print("locked", flush=True)
sys.stdin.readline()
writer.close()
print("closed", flush=True)
"""


def hold(path):
    """Another process that opens a writer of ``path`` and keeps it until told (a line on its stdin)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip() == "locked", proc.stderr.read()
    return proc


def test_a_second_process_is_refused_until_the_first_closes(tmp_path):
    out = tmp_path / "x.jsonl"
    plan = plan_episodes(CounterEnv().tasks("train"), 5, shuffle=False)
    run_rollouts(lambda: CounterEnv(), make_policy("expert"), plan[:3], output=out, progress=False)
    holder = hold(out)
    try:
        before = out.read_bytes()
        with pytest.raises(UserError) as exc:
            TrajectoryWriter(out)
        assert str(exc.value) == (f"another process (pid {holder.pid}) is writing {out}; wait for it to finish or "
                                  "choose another --output")
        with pytest.raises(UserError, match=f"pid {holder.pid}"):  # a collection stops before running anything
            run_rollouts(lambda: CounterEnv(), make_policy("expert"), plan, output=out, progress=False)
        cli = subprocess.run([sys.executable, "-m", "agentclone.cli", "collect", "--env", "textcraft/craft-v1",
                              "-n", "1", "--output", str(out)], capture_output=True, text=True, timeout=120)
        assert cli.returncode == 2 and f"error: another process (pid {holder.pid}) is writing" in cli.stderr
        assert out.read_bytes() == before  # nothing written, nothing cut
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "closed"
        holder.wait(timeout=30)
    assert not lock_path(out).exists()  # a clean close leaves no lock file behind
    res = run_rollouts(lambda: CounterEnv(), make_policy("expert"), plan, output=out, progress=False)
    assert res.skipped == 3 and len(res.trajectories) == 2  # resume still counts what is in the file
    ids = [t.id for t in read_trajectories(out)]
    assert sorted(ids) == sorted([e.id for e in plan] + ["held#0"])


def test_a_killed_writer_leaves_no_lock(tmp_path):
    out = tmp_path / "x.jsonl"
    holder = hold(out)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    assert lock_path(out).exists()  # the file stays, but the kernel dropped the lock with the process
    with TrajectoryWriter(out) as writer:
        assert lock_path(out).read_text().strip() == str(os.getpid())
        writer.write(Trajectory(id="mine#0", env_id="e", task_id="mine"))
    assert [t.id for t in read_trajectories(out)] == ["held#0", "mine#0"]


def test_two_writers_in_one_process_are_refused_too(tmp_path):
    out = tmp_path / "x.jsonl"
    with TrajectoryWriter(out):
        with pytest.raises(UserError, match=f"pid {os.getpid()}"):
            TrajectoryWriter(out, mode="w")  # refused before it could truncate anything
    with TrajectoryWriter(out):  # closed: free again
        pass


def test_a_waiting_lock_waits_for_the_holder(tmp_path):
    """``WriteLock(wait=True)`` (the first-use model conversion's) blocks until the holder lets go, where a
    writer's lock (``wait=False``) is refused at once."""
    import threading

    from agentclone.data import WriteLock

    out = tmp_path / "x.jsonl"
    holder = hold(out)
    acquired = threading.Event()
    errors = []

    def wait_for_it():
        try:
            with WriteLock(out, wait=True):
                acquired.set()
                assert lock_path(out).read_text().strip() == str(os.getpid())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    waiter = threading.Thread(target=wait_for_it)
    try:
        waiter.start()
        assert not acquired.wait(timeout=1)  # still held by the other process
        with pytest.raises(UserError, match=f"another process \\(pid {holder.pid}\\) is writing"):
            WriteLock(out)
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "closed"
        holder.wait(timeout=30)
    waiter.join(timeout=30)
    assert acquired.is_set() and not errors
    assert not lock_path(out).exists()  # released: the lock file is gone
