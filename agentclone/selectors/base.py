"""The step-selector interface: which steps of a trajectory deserve the training loss.

A selector ranks the steps of one trajectory and returns the best ``k`` as
``(index, info)`` pairs, best first. ``info`` says why (``category`` or
``reason``) and how strongly (``score``); the ``critical`` trainer stores it in
``Step.selection``. Selectors are registered through the
``register_step_selectors`` hook, like every other plugin piece::

    @hookimpl
    def register_step_selectors(register):
        register("my-selector", MySelector)

Invalid steps (an action the environment rejected) are never selected: loss on
them would teach the mistake.
"""

from __future__ import annotations

import abc
import math
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from agentclone.data import Trajectory
from agentclone.building import BuildContext

Pick = tuple[int, dict[str, Any]]


class SelectorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StepSelector(abc.ABC):
    """Picks the critical steps of trajectories; subclasses set ``name``, ``Config`` and ``select``."""

    name: ClassVar[str] = ""
    Config: ClassVar[type[SelectorConfig]] = SelectorConfig
    #: False for selectors that ignore the budget (``all``: plain behaviour cloning).
    uses_budget: ClassVar[bool] = True

    def __init__(self, config: SelectorConfig | dict | None = None) -> None:
        if not isinstance(config, SelectorConfig):
            config = self.Config.model_validate(config or {})
        self.config = config
        #: counters a user wants to see after a build (judge calls, cache hits, fallbacks, ...)
        self.stats: dict[str, int] = {}

    @abc.abstractmethod
    def select(self, traj: Trajectory, k: int, context: BuildContext) -> list[Pick]:
        """The ``k`` most critical steps of ``traj`` as ``(index, info)``, best first (fewer if it has fewer)."""

    def select_all(self, trajs: list[Trajectory], ks: list[int], context: BuildContext) -> list[list[Pick]]:
        """``select`` for many trajectories; selectors that batch work (a model, a judge) override this."""
        return [self.select(t, k, context) for t, k in zip(trajs, ks)]

    def count(self, key: str, n: int = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + n

    def info(self, **fields: Any) -> dict[str, Any]:
        return {"selector": self.name, **fields}


def eligible_steps(traj: Trajectory) -> list[int]:
    """Indices of the steps a selector may pick: every step whose action the environment accepted."""
    return [i for i, s in enumerate(traj.steps) if not s.invalid]


def step_budget(n_steps: int, fraction: float, min_steps: int = 1) -> int:
    """Steps to select: ``fraction`` of ``n_steps`` rounded half up, at least ``min_steps``, at most ``n_steps``."""
    if n_steps <= 0:
        return 0
    k = math.floor(fraction * n_steps + 0.5 + 1e-9)
    return min(n_steps, max(min_steps, k))


def make_selector(name: str, options: dict | None = None) -> StepSelector:
    """Make a registered step selector by name with its options (a clear error for a bad name or option)."""
    from agentclone.plugins import create

    return create("step_selector", name, **(options or {}))
