"""What data builders and step selectors share: the build context and the build counters.

Both builders (``agentclone.trainers``) and selectors (``agentclone.selectors``) import
from here, so neither imports the other to get them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class BuildContext:
    """What a builder may use beyond the trajectories: a model for scoring, the seed."""

    seed: int = 0
    model: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class BuildStats:
    trajectories_in: int = 0
    trajectories_out: int = 0
    steps: int = 0
    loss_steps: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
