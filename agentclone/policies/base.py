"""The policy interface shared by every backend."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from agentclone.envs import TextEnv
from agentclone.prompting import ActionFormat


@dataclass
class PolicyRequest:
    """One live episode asking for its next action."""

    messages: list[dict]
    env: TextEnv | None = None  # privileged access, used only by the expert
    episode_id: str = ""


@dataclass
class GenerationSettings:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Policy(abc.ABC):
    """Turns a batch of conversations into the agent's raw answers (one text each)."""

    name: str = ""
    #: True for policies that read the environment's privileged state.
    needs_env: bool = False

    def __init__(self, fmt: ActionFormat | None = None) -> None:
        self.fmt = fmt or ActionFormat()

    @abc.abstractmethod
    def act(self, requests: list[PolicyRequest]) -> list[str]:
        """One answer per request, in order."""

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` (for the history budget); a rough estimate by default."""
        return max(1, len(text) // 4)

    @property
    def model_id(self) -> str | None:
        return None

    def close(self) -> None:
        pass


def make_policy(name: str, fmt: ActionFormat | None = None, **options: Any) -> Policy:
    """Make a registered policy backend by name (``hf``, ``expert``, ...)."""
    from agentclone.plugins import get_registry

    backends = get_registry().policy_backends
    if name not in backends:
        raise KeyError(f"unknown policy backend {name!r}; registered: {', '.join(sorted(backends))}")
    return backends[name](fmt=fmt, **options)
