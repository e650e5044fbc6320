"""What data builders and step selectors share: the build context and the build counters.

Both builders (``agentclone.builders``) and selectors (``agentclone.selectors``) import
from here, so neither imports the other to get them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agentclone.data import Trajectory


@dataclass
class BuildContext:
    """What a builder may use beyond the trajectories it is given.

    ``expert_demos``: the environment expert's demonstrations on training tasks, for builders that
    mix them in (DAgger's initial dataset). ``earlier_rollouts``: the rollouts of earlier rounds,
    oldest first, for builders that aggregate them (DAgger). Both are filled by ``rounds:``.
    """

    seed: int = 0
    model: str | None = None
    format: str = "thought-action"  # how the agent answers (ActionFormat name)
    expert_demos: list[Trajectory] | None = None
    earlier_rollouts: list[list[Trajectory]] = field(default_factory=list)
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
