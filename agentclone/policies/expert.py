"""The environment's own privileged expert as a policy."""

from __future__ import annotations

from agentclone.policies.base import Policy, PolicyRequest


class ExpertPolicy(Policy):
    name = "expert"
    needs_env = True

    def __init__(self, fmt=None, include_thoughts: bool = True) -> None:
        super().__init__(fmt)
        self.include_thoughts = include_thoughts

    def act(self, requests: list[PolicyRequest]) -> list[str]:
        out = []
        for req in requests:
            if req.env is None:
                raise ValueError("the expert policy needs the environment of each episode")
            move = req.env.expert_action()
            out.append(self.fmt.render(move.action, move.thought if self.include_thoughts else None))
        return out
