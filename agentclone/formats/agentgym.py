"""AgentGym / AgentInstruct: ``{"item_id": ..., "conversations": [{"from": "human" | "gpt", "loss": ..., "value": ...}]}``.

AgentGym's trajectories (AgentTraj) and AgentInstruct open with a preamble: a human turn holding the
instructions and a ``gpt`` acknowledgement with ``"loss": false``; then each human turn is an
observation and each ``gpt`` turn the agent's answer, with ``"loss": true`` (or false) where it
trains. On import, a first ``gpt`` turn with ``"loss": false`` after the first human turn marks that
preamble: the human turn becomes the instructions and the acknowledgement is dropped (kept in the
first step's ``info["agentgym_ack"]`` when it is not ``OK.``, and written back on export); without
it the first human turn is the first observation. Records name their task with ``item_id`` (or ``id``).
"""

from __future__ import annotations

from agentclone.data import Trajectory
from agentclone.formats.base import (
    ExportOptions,
    ImportOptions,
    conversation_to_trajectory,
    record_task_id,
    trajectory_to_conversation,
)
from agentclone.formats.sharegpt import ShareGPT

ACK = "OK."


class AgentGym(ShareGPT):
    name = "agentgym"
    description = "AgentGym / AgentInstruct: {item_id, conversations: [{from: human|gpt, value, loss}]}"
    carries_loss = True
    loss_field = "conversations[].loss"
    system_key = None
    user_tags = ("human",)
    assistant_tags = ("gpt",)

    def decode(self, record: dict, index: int, opts: ImportOptions) -> Trajectory:
        _, raw = self.read_turns(record)
        turns = [t for _, t in raw]
        system, info = None, None
        if len(turns) >= 2 and turns[0].role == "user" and turns[1].role == "assistant" and turns[1].loss is False:
            system, ack, turns = turns[0].content, turns[1].content, turns[2:]
            info = {"agentgym_ack": ack} if ack != ACK else None
        task_id = record_task_id(record, index)
        return conversation_to_trajectory(system, turns, task_id=task_id, traj_id=task_id, opts=opts,
                                          first_step_info=info)

    def encode(self, traj: Trajectory, opts: ExportOptions) -> dict:
        system, turns = trajectory_to_conversation(traj, opts.fmt)
        ack = traj.steps[0].info.get("agentgym_ack", ACK) if traj.steps else ACK
        conv = [{"from": "human", "loss": None, "value": system}, {"from": "gpt", "loss": False, "value": ack}]
        for t in turns:
            user = t.role == "user"
            conv.append({"from": "human" if user else "gpt", "loss": None if user else t.loss, "value": t.content})
        return {"item_id": traj.id, "conversations": conv}
