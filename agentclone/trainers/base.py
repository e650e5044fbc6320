"""The data-builder interface that every trainer plugin implements.

A builder turns trajectories into training trajectories: it chooses which
trajectories to keep (or creates new ones, e.g. revisions) and sets
``Step.loss`` on each step. Tokenisation, one sample per trajectory with loss
exactly on the chosen assistant turns, is shared (``agentclone.training``).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from agentclone.building import BuildContext, BuildStats
from agentclone.data import Trajectory


class BuilderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataBuilder(abc.ABC):
    name: ClassVar[str] = ""
    Config: ClassVar[type[BuilderConfig]] = BuilderConfig

    def __init__(self, config: BuilderConfig | dict | None = None) -> None:
        if not isinstance(config, BuilderConfig):
            config = self.Config.model_validate(config or {})
        self.config = config
        self.stats = BuildStats()

    @abc.abstractmethod
    def build(self, trajectories: list[Trajectory], context: BuildContext) -> list[Trajectory]:
        """Return training trajectories with ``Step.loss`` set."""

    def _count(self, out: list[Trajectory]) -> list[Trajectory]:
        self.stats.trajectories_out = len(out)
        self.stats.steps = sum(len(t.steps) for t in out)
        self.stats.loss_steps = sum(s.loss for t in out for s in t.steps)
        return out


def make_builder(name: str, config: dict | None = None) -> DataBuilder:
    from agentclone.plugins import get_registry

    trainers = get_registry().trainers
    if name not in trainers:
        raise KeyError(f"unknown trainer {name!r}; registered: {', '.join(sorted(trainers))}")
    cls = trainers[name]
    try:
        return cls(config)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        allowed = ", ".join(cls.Config.model_fields)
        raise ValueError(f"trainer {name!r}: option '{loc}': {first['msg']} (allowed: {allowed})") from None
