"""agentclone's own trajectory rows: ``{id, env_id, task_id, ..., steps: [{observation, thought, action, loss,
reward, expert, ...}], success, return, ...}``, one row per ``Trajectory``, nothing lost.

The row is ``agentclone.data``'s Parquet row (what ``save_parquet`` writes): a trajectory's fields as
they are, except its free-form objects (a trajectory's ``env_kwargs`` and ``timings``, a step's ``info``
and ``selection``), which are JSON text so that every row has one Arrow schema. Import reads those as
JSON text or as objects (an agentclone JSONL file), so ``--from agentclone`` also reads agentclone's own
files and its Parquet. Each step's ``loss`` is its training loss flag. Trajectories without steps are
kept.
"""

from __future__ import annotations

import json

from pydantic import ValidationError

from agentclone.data import _JSON_STEP_FIELDS, _JSON_TRAJ_FIELDS, Trajectory, _to_record
from agentclone.formats.base import ExportOptions, Format, ImportOptions, RecordError


def _parse_json_fields(obj: dict, keys: tuple[str, ...], where: str) -> dict:
    obj = dict(obj)
    for key in keys:
        if isinstance(obj.get(key), str):
            try:
                obj[key] = json.loads(obj[key])
            except json.JSONDecodeError as exc:
                raise RecordError(f"{where}{key}", f"not valid JSON ({exc.msg})") from None
    return obj


class AgentcloneRows(Format):
    name = "agentclone"
    description = "agentclone's own trajectories, one row each, lossless: {id, env_id, task_id, steps: [...], ...}"
    carries_loss = True
    loss_field = "steps[].loss"
    skip_empty = False

    def decode(self, record: dict, index: int, opts: ImportOptions) -> Trajectory:
        record = _parse_json_fields(record, _JSON_TRAJ_FIELDS, "")
        steps = record.get("steps")
        if isinstance(steps, list):
            record["steps"] = [_parse_json_fields(step, _JSON_STEP_FIELDS, f"steps[{i}].") if isinstance(step, dict)
                               else step for i, step in enumerate(steps)]
        try:
            traj = Trajectory.model_validate(record)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]).lstrip(".")
            raise RecordError(loc or "(record)", first["msg"]) from None
        stats = opts.stats
        stats.steps += len(traj.steps)
        stats.flagged_turns += len(traj.steps)
        stats.loss_steps += sum(s.loss for s in traj.steps)
        return traj

    def encode(self, traj: Trajectory, opts: ExportOptions) -> dict:
        return _to_record(traj)
