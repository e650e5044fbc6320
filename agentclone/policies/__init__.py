"""Policy backends: one interface, ``act(batch of requests) -> texts``."""

from agentclone.policies.base import Policy, PolicyRequest, make_policy

__all__ = ["Policy", "PolicyRequest", "make_policy"]
