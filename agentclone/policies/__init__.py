"""Policy backends: one interface, ``act(batch of requests) -> texts``."""

from agentclone.policies.base import (
    GenerationSettings,
    ModelPolicy,
    Policy,
    PolicyRequest,
    cut_after_action_line,
    make_policy,
)

__all__ = ["GenerationSettings", "ModelPolicy", "Policy", "PolicyRequest", "cut_after_action_line", "make_policy"]
