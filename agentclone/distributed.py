"""Several processes of one run (``accelerate launch --num_processes N``): which process this is, and how
the processes wait for each other.

``accelerate launch`` (like ``torchrun``) sets ``WORLD_SIZE`` and ``RANK`` in every process it starts. A
single process (no ``WORLD_SIZE``, or 1) reads only those variables: nothing here imports torch, and
every helper is a plain call (``on_main(fn)`` is ``fn()``), so a single-process run behaves as if this
module did not exist. With several processes the process group is started on first use through
accelerate's ``PartialState`` (gloo on a CPU, NCCL on GPUs), the same state the Trainer uses afterwards,
with a long timeout: the other processes wait at a barrier while the main one writes files.

Where each stage runs (``agentclone.stages``): collection and evaluation split their episodes across the
processes (each writes its own part file, the main process merges them), a build and every report or
stamp runs on the main process only, training runs on every process (data-parallel, the Trainer's DDP).
"""

from __future__ import annotations

import os
from typing import Any, Callable, TypeVar

from agentclone.errors import UserError

T = TypeVar("T")

#: how long a process waits at a barrier for the others (a long evaluation on the main process)
TIMEOUT_S = float(os.environ.get("AGENTCLONE_DIST_TIMEOUT_S", 7 * 24 * 3600))

_main_only = False  # True while the main process runs an ``on_main`` function alone


class OtherProcessFailed(UserError):
    """Raised in every process when the work of another process failed (its error is in its own log)."""


def world_size() -> int:
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def rank() -> int:
    return int(os.environ.get("RANK", "0")) if world_size() > 1 else 0


def is_main() -> bool:
    return rank() == 0


def _dist():
    import torch.distributed as dist

    if not dist.is_initialized():
        from datetime import timedelta

        from accelerate import PartialState

        PartialState(timeout=timedelta(seconds=TIMEOUT_S))
    return dist


def _shut_down() -> None:
    """Close the process group at exit, whoever started it: in `agentclone run` it is already started when this
    module first needs it, so a hook registered there (the first fix) never ran.
    Left open, gloo's worker threads outlive the interpreter: a worker that drops the last reference to a
    finished collective's tensors needs the GIL while Python finalizes, and the process aborts
    ("terminate called without an active exception", exit status -6; seen in about 1 run in 10 on a
    loaded 2-core machine, from a core dump). Destroying the group joins those threads first."""
    import sys

    dist = sys.modules.get("torch.distributed")
    try:
        if dist is not None and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001 (exiting anyway; a peer already gone is not this process's error)
        pass


if world_size() > 1:
    import atexit

    atexit.register(_shut_down)


def together() -> bool:
    """Whether several processes run this code together (several of them, and not inside the main
    process's ``on_main``): work can be split, and every process must meet at each collective."""
    return world_size() > 1 and not _main_only


def barrier() -> None:
    if together():
        _dist().barrier()


def on_main(fn: Callable[[], T], what: str = "") -> T:
    """Run ``fn`` on the main process while the others wait; every process returns its result (which must
    pickle). When ``fn`` fails on the main process it raises there, and ``OtherProcessFailed`` elsewhere.

    Every process must call it (the same number of times, in the same order); inside another ``on_main``
    it is a plain call.
    """
    global _main_only
    if not together():
        return fn()
    result, error = None, None
    if is_main():
        _main_only = True
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001 (told to the others, then raised)
            error = exc
        finally:
            _main_only = False
    box = [(result, None if error is None else f"{type(error).__name__}: {error}")]
    _dist().broadcast_object_list(box, src=0)
    if error is not None:
        raise error
    result, message = box[0]
    if message is not None:
        raise OtherProcessFailed(f"the main process failed{' ' + what if what else ''}: {message}")
    return result


def on_every(fn: Callable[[], T], what: str = "") -> T:
    """Run ``fn`` on every process; when it fails on any, every process raises (the failing one its own
    error, the others ``OtherProcessFailed``), so none waits for a process that is gone."""
    if not together():
        return fn()
    result, error = None, None
    try:
        result = fn()
    except BaseException as exc:  # noqa: BLE001
        error = exc
    errors: list[Any] = [None] * world_size()
    _dist().all_gather_object(errors, None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    failed = [(r, e) for r, e in enumerate(errors) if e is not None]
    if failed:
        r, message = failed[0]
        raise OtherProcessFailed(f"process {r} failed{' ' + what if what else ''}: {message}")
    return result
