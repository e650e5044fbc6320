"""ShareGPT: ``{"conversations": [{"from": "human" | "gpt", "value": ...}, ...], "system": ..., "tools": ...}``.

The system prompt is the record's ``system`` key (or a first turn ``from: system``). Turns from
``human`` (and ``observation``, a tool's result) are user turns, turns from ``gpt`` (and
``function_call``) assistant turns. ShareGPT has no per-turn loss flag: a turn's optional ``loss``
key (true / false) is read when present, otherwise ``--loss`` decides; export writes none.
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


class ShareGPT(Format):
    name = "sharegpt"
    description = "ShareGPT conversations: {conversations: [{from: human|gpt, value}], system, tools}"
    carries_loss = False

    messages_key = "conversations"
    role_key = "from"
    content_key = "value"
    system_key: str | None = "system"
    user_tags: tuple[str, ...] = ("human", "user", "observation")
    assistant_tags: tuple[str, ...] = ("gpt", "assistant", "function_call")
    system_tag = "system"
    user_tag = "human"
    assistant_tag = "gpt"
    id_key = "id"

    def read_turns(self, record: dict) -> tuple[str | None, list[tuple[dict, Turn]]]:
        """The record's system prompt and its turns (each with its raw dict)."""
        system = get_str(record, self.system_key, "", required=False) if self.system_key else None
        turns = []
        for i, msg in enumerate(get_list(record, self.messages_key)):
            where = f"{self.messages_key}[{i}]"
            if not isinstance(msg, dict):
                raise RecordError(where, f"expected an object, got {type(msg).__name__}")
            role = get_str(msg, self.role_key, where)
            content = get_str(msg, self.content_key, where)
            if role == self.system_tag and i == 0 and not system:
                system = content
                continue
            if role in self.user_tags:
                kind = "user"
            elif role in self.assistant_tags:
                kind = "assistant"
            else:
                allowed = ", ".join((*self.user_tags, *self.assistant_tags))
                raise RecordError(f"{where}.{self.role_key}", f"unknown role {role!r} (expected one of: {allowed})")
            turns.append((msg, Turn(kind, content, self.turn_loss(msg, where, kind), field=where)))
        return system, turns

    def turn_loss(self, msg: dict, where: str, kind: str) -> bool | None:
        return get_loss(msg, "loss", where) if kind == "assistant" else None

    def decode(self, record: dict, index: int, opts: ImportOptions) -> Trajectory:
        system, turns = self.read_turns(record)
        task_id = record_task_id(record, index)
        return conversation_to_trajectory(system, [t for _, t in turns], task_id=task_id, traj_id=task_id,
                                          opts=opts)

    def encode(self, traj: Trajectory, opts: ExportOptions) -> dict:
        system, turns = trajectory_to_conversation(traj, opts.fmt)
        conv = [{self.role_key: self.user_tag if t.role == "user" else self.assistant_tag, self.content_key: t.content}
                for t in turns]
        return {self.id_key: traj.id, self.messages_key: conv, self.system_key: system}
