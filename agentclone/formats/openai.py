"""OpenAI chat messages: ``{"messages": [{"role": "system" | "user" | "assistant", "content": ...}]}``.

The fine-tuning format of OpenAI's API (and of many trainers that take ``messages``). An assistant
message's ``weight`` (0 or 1, OpenAI's per-message switch) or ``loss`` (true / false) is its loss
flag; without either, ``--loss`` decides. Export writes ``weight`` on every assistant message. A
``tool`` message counts as a user turn (an observation); ``content`` must be a string.
"""

from __future__ import annotations

from agentclone.data import Trajectory
from agentclone.formats.base import (
    ExportOptions,
    Format,
    ImportOptions,
    RecordError,
    Turn,
    conversation_to_trajectory,
    get_list,
    get_loss,
    get_str,
    record_task_id,
    trajectory_to_conversation,
)


class OpenAIMessages(Format):
    name = "openai"
    description = "OpenAI chat fine-tuning: {messages: [{role, content, weight}]}"
    carries_loss = True
    loss_field = "messages[].weight"

    def decode(self, record: dict, index: int, opts: ImportOptions) -> Trajectory:
        system, turns = None, []
        for i, msg in enumerate(get_list(record, "messages")):
            where = f"messages[{i}]"
            if not isinstance(msg, dict):
                raise RecordError(where, f"expected an object, got {type(msg).__name__}")
            role = get_str(msg, "role", where)
            content = get_str(msg, "content", where)
            if role in ("system", "developer"):
                if i != 0:
                    raise RecordError(f"{where}.role", "a system message must come first")
                system = content
            elif role in ("user", "tool"):
                turns.append(Turn("user", content, field=where))
            elif role == "assistant":
                turns.append(Turn("assistant", content, self._loss(msg, where), field=where))
            else:
                raise RecordError(f"{where}.role", f"unknown role {role!r} (expected system, user, assistant or tool)")
        task_id = record_task_id(record, index, ("id",))
        return conversation_to_trajectory(system, turns, task_id=task_id, traj_id=task_id, opts=opts)

    @staticmethod
    def _loss(msg: dict, where: str) -> bool | None:
        if "weight" in msg and msg["weight"] is not None:
            weight = msg["weight"]
            if weight not in (0, 1) or isinstance(weight, bool):
                raise RecordError(f"{where}.weight", f"expected 0 or 1, got {weight!r}")
            return bool(weight)
        return get_loss(msg, "loss", where)

    def encode(self, traj: Trajectory, opts: ExportOptions) -> dict:
        system, turns = trajectory_to_conversation(traj, opts.fmt)
        messages = [{"role": "system", "content": system}]
        for t in turns:
            msg = {"role": t.role, "content": t.content}
            if t.role == "assistant":
                msg["weight"] = int(bool(t.loss))
            messages.append(msg)
        return {"messages": messages}
