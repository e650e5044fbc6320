"""Data quality: measure a trajectory set, and curate it before training (``agentclone curate``).

The report (``quality_report``) counts what makes demonstrations bad teachers:

- **duplicates**: later copies of a trajectory with the same task and the same step sequence
  (each step's observation and normalised action; thoughts and timings are not compared);
- **conflicting states**: one *state* (the same task and the same observation history
  ``o_0 .. o_t``) where the trajectories that reached it took different normalised actions. Only steps
  that carry training loss take part (a ``loss=False`` step teaches nothing). ``action_entropy_bits`` is
  the mean, over states reached by at least two such steps, of the entropy of their action distribution;
  ``conflicting_steps`` counts the steps whose action is not their state's majority (on a tie there is
  no majority and every step at that state counts);
- **loops**: an (observation, normalised action) pair repeated inside one episode;
- episode length (steps) and return: min, median, max; invalid-action rate, success rate, errored
  episodes; task coverage (distinct tasks, distinct tasks per task kind).

Filters (``CurateOptions``; all off by default) run in this order, each on what the previous ones
kept, and each reports the trajectories and steps it removed: ``failed`` (not successful),
``max_steps`` (longer than N steps), ``min_return`` (return below X), ``length_outlier`` /
``return_outlier`` (robust z-score ``|x - median| / (1.4826 * MAD)`` above Z), ``looping``,
``duplicate`` (the first copy is kept), and ``conflicting``, which removes no trajectory: it turns
off the loss (``loss=False``) of the steps that disagree with their state's majority, so the rest
of each trajectory still trains and the state stays in the context. On a tie every step at that
state loses its loss: nothing says which answer is right.

Records are taken as the file holds them: a resumed collection's superseded records of an episode
(errored, unsuccessful) count as episodes of their own, and ``--drop-failed`` removes them.

With no filter the output is a byte-for-byte copy of the input. With filters, every kept record
that no filter changed is written as the exact line it was read from; a record whose loss flags
changed is serialised anew. Either way the output appears atomically (a temporary file renamed),
and a malformed line (a torn last line included) is one ``TrajectoryFileError`` and no output.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agentclone.data import AtomicFile, Trajectory, atomic_write_bytes, iter_trajectory_lines, normalize_action


class CurateOptions(BaseModel):
    """The filters, all off by default: ``agentclone curate``'s options and a recipe's ``curate:`` section."""

    model_config = ConfigDict(extra="forbid")

    drop_failed: bool = Field(False, description="remove unsuccessful trajectories")
    max_steps: int | None = Field(None, ge=1, description="remove trajectories longer than this many steps")
    min_return: float | None = Field(None, description="remove trajectories whose return is below this")
    outlier_z: float | None = Field(None, gt=0, description="remove length / return outliers (robust z-score above this)")
    drop_looping: bool = Field(False, description="remove trajectories that repeat an (observation, action) pair")
    drop_duplicates: bool = Field(False, description="keep one copy of trajectories with the same task and steps")
    drop_conflicting: bool = Field(False, description="turn off the loss of steps that disagree with their state's "
                                   "majority (needs builder option keep_loss_off: true for bc)")

    def any(self) -> bool:
        return any(v not in (None, False) for v in self.model_dump().values())


@dataclass
class Record:
    """One trajectory with the exact bytes of its line (``None`` once a filter changed it)."""

    traj: Trajectory
    raw: bytes | None


# -- reading -----------------------------------------------------------------------------------

def read_records(path: str | Path) -> list[Record]:
    """Every record of a JSONL trajectory file with its line's bytes. Any malformed line, a torn last
    line included, is a ``TrajectoryFileError`` naming the file and line."""
    path = Path(path)
    if path.suffix == ".parquet":
        from agentclone.errors import UserError

        raise UserError(f"{path}: curate reads JSONL trajectory files; export Parquet to JSONL first")
    if not path.exists():
        raise FileNotFoundError(2, "No such file or directory", str(path))
    records = [Record(traj, raw) for raw, traj in iter_trajectory_lines(path, on_torn="raise")]
    return records


# -- measuring ---------------------------------------------------------------------------------

def _digest(parts) -> bytes:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8", errors="backslashreplace")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.digest()


def state_keys(traj: Trajectory) -> list[tuple[str, bytes]]:
    """The state of each step: (task id, a hash of the observations so far, this step's included)."""
    keys, h = [], hashlib.sha256()
    for step in traj.steps:
        data = step.observation.encode("utf-8", errors="backslashreplace")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
        keys.append((traj.task_id, h.copy().digest()))
    return keys


def sequence_key(traj: Trajectory) -> tuple[str, bytes]:
    """What makes two trajectories duplicates: the task and every step's observation and normalised action."""
    return traj.task_id, _digest(x for s in traj.steps for x in (s.observation, normalize_action(s.action)))


def repeated_pairs(traj: Trajectory) -> int:
    """How many (observation, normalised action) pairs of ``traj`` repeat an earlier one of the same episode."""
    counts = Counter((s.observation, normalize_action(s.action)) for s in traj.steps)
    return sum(c - 1 for c in counts.values())


def _states(trajs: list[Trajectory]) -> dict[tuple, list[tuple[int, int, str]]]:
    """Each state reached by a loss-carrying step: [(trajectory index, step index, normalised action)]."""
    states: dict[tuple, list[tuple[int, int, str]]] = defaultdict(list)
    for ti, traj in enumerate(trajs):
        for si, (key, step) in enumerate(zip(state_keys(traj), traj.steps)):
            if step.loss:
                states[key].append((ti, si, normalize_action(step.action)))
    return states


def minority_steps(trajs: list[Trajectory]) -> tuple[set[tuple[int, int]], dict[str, Any]]:
    """The (trajectory index, step index) of every step whose action is not its state's majority, and the
    state statistics (repeated and conflicting states, mean action entropy in bits)."""
    minority: set[tuple[int, int]] = set()
    repeated = conflicting = 0
    entropies = []
    for visits in _states(trajs).values():
        if len(visits) < 2:
            continue
        repeated += 1
        counts = Counter(action for _, _, action in visits)
        n = len(visits)
        entropies.append(-sum(c / n * math.log2(c / n) for c in counts.values()) + 0.0)
        if len(counts) < 2:
            continue
        conflicting += 1
        ranked = counts.most_common()
        majority = ranked[0][0] if ranked[0][1] > ranked[1][1] else None
        minority.update((ti, si) for ti, si, action in visits if action != majority)
    stats = {
        "repeated_states": repeated,
        "conflicting_states": conflicting,
        "conflicting_steps": len(minority),
        "action_entropy_bits": (sum(entropies) / len(entropies)) if entropies else None,
    }
    return minority, stats


def _spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"min": None, "median": None, "max": None}
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def quality_report(trajs: list[Trajectory]) -> dict[str, Any]:
    """The numbers ``agentclone curate`` reports for a trajectory set (see the module's docstring)."""
    n = len(trajs)
    steps = sum(len(t.steps) for t in trajs)
    seen: set = set()
    dup_trajs = dup_steps = 0
    for t in trajs:
        key = sequence_key(t)
        if key in seen:
            dup_trajs += 1
            dup_steps += len(t.steps)
        seen.add(key)
    loops = [repeated_pairs(t) for t in trajs]
    _, state_stats = minority_steps(trajs)
    kinds: dict[str, set[str]] = defaultdict(set)
    for t in trajs:
        kinds[t.task_kind or "(none)"].add(t.task_id)
    return {
        "episodes": n,
        "steps": steps,
        "loss_steps": sum(s.loss for t in trajs for s in t.steps),
        "duplicates": {"trajectories": dup_trajs, "steps": dup_steps},
        **state_stats,
        "looping": {"trajectories": sum(x > 0 for x in loops), "repeated_pairs": sum(loops)},
        "length": _spread([len(t.steps) for t in trajs]),
        "return": _spread([t.return_ for t in trajs]),
        "invalid_action_rate": sum(t.num_invalid for t in trajs) / steps if steps else 0.0,
        "success_rate": sum(t.success for t in trajs) / n if n else 0.0,
        "errored": sum(t.error is not None for t in trajs),
        "tasks": len({t.task_id for t in trajs}),
        "tasks_per_kind": {k: len(v) for k, v in sorted(kinds.items())},
    }


# -- curating ----------------------------------------------------------------------------------

def _outliers(values: list[float], z: float) -> list[bool]:
    """Robust z-score above ``z``: ``|x - median| / (1.4826 * MAD)``. When the MAD is 0 (most values equal)
    the mean absolute deviation from the median (times 1.2533) stands in; when that is 0 too, none is."""
    if not values:
        return []
    med = statistics.median(values)
    dev = [abs(v - med) for v in values]
    scale = 1.4826 * statistics.median(dev)
    if scale == 0:
        scale = 1.2533 * sum(dev) / len(dev)
    if scale == 0:
        return [False] * len(values)
    return [d / scale > z for d in dev]


def curate(records: list[Record], options: CurateOptions) -> tuple[list[Record], dict[str, dict[str, int]]]:
    """Apply the filters of ``options`` in order; (kept records, what each filter removed)."""
    removed: dict[str, dict[str, int]] = {}

    def drop(reason: str, flags: list[bool]) -> None:
        nonlocal records
        gone = [r for r, f in zip(records, flags) if f]
        removed[reason] = {"trajectories": len(gone), "steps": sum(len(r.traj.steps) for r in gone)}
        records = [r for r, f in zip(records, flags) if not f]

    if options.drop_failed:
        drop("failed", [not r.traj.success for r in records])
    if options.max_steps is not None:
        drop("max_steps", [len(r.traj.steps) > options.max_steps for r in records])
    if options.min_return is not None:
        drop("min_return", [r.traj.return_ < options.min_return for r in records])
    if options.outlier_z is not None:
        drop("length_outlier", _outliers([len(r.traj.steps) for r in records], options.outlier_z))
        drop("return_outlier", _outliers([r.traj.return_ for r in records], options.outlier_z))
    if options.drop_looping:
        drop("looping", [repeated_pairs(r.traj) > 0 for r in records])
    if options.drop_duplicates:
        seen: set = set()
        flags = []
        for r in records:
            key = sequence_key(r.traj)
            flags.append(key in seen)
            seen.add(key)
        drop("duplicate", flags)
    if options.drop_conflicting:
        minority, _ = minority_steps([r.traj for r in records])
        by_traj: dict[int, list[int]] = defaultdict(list)
        for ti, si in minority:
            by_traj[ti].append(si)
        out = list(records)
        for ti, sis in by_traj.items():
            traj = records[ti].traj.model_copy(deep=True)
            for si in sis:
                traj.steps[si].loss = False
            out[ti] = Record(traj, None)
        records = out
        removed["conflicting"] = {"trajectories": 0, "steps": 0, "steps_loss_off": len(minority),
                                  "trajectories_touched": len(by_traj)}
    return records, removed


def _record_bytes(r: Record) -> bytes:
    if r.raw is not None:
        return r.raw if r.raw.endswith(b"\n") else r.raw + b"\n"
    return (r.traj.to_json_line() + "\n").encode("utf-8", errors="backslashreplace")


def _atomic_copy(src: Path, dst: Path) -> None:
    with AtomicFile(dst) as out, open(src, "rb") as inp:
        shutil.copyfileobj(inp, out.fh)


def curate_file(input: str | Path, output: str | Path, options: CurateOptions | None = None) -> dict[str, Any]:
    """Read ``input``, write the curated set to ``output`` atomically, return the report:
    ``before`` (the input's quality report), ``removed`` (per filter reason), ``after`` (the output's)."""
    options = options or CurateOptions()
    input, output = Path(input), Path(output)
    records = read_records(input)  # raises before anything is written
    before = quality_report([r.traj for r in records])
    if options.any():
        kept, removed = curate(records, options)
        atomic_write_bytes(output, b"".join(_record_bytes(r) for r in kept))
        after = quality_report([r.traj for r in kept])
    else:
        kept, removed, after = records, {}, before
        _atomic_copy(input, output)
    return {
        "input": str(input),
        "output": str(output),
        "options": options.model_dump(),
        "before": before,
        "removed": removed,
        "after": after,
    }
