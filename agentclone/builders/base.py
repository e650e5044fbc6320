"""The data-builder interface that every builder plugin implements.

A builder turns trajectories into training trajectories: it chooses which
trajectories to keep (or creates new ones, e.g. revisions) and sets
``Step.loss`` on each step. Tokenisation, one sample per trajectory with loss
exactly on the chosen assistant turns, is shared (``agentclone.training``).
"""

from __future__ import annotations

import abc
from collections import Counter
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from agentclone.building import BuildContext, BuildStats
from agentclone.data import Trajectory


class BuilderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataBuilder(abc.ABC):
    name: ClassVar[str] = ""
    Config: ClassVar[type[BuilderConfig]] = BuilderConfig
    #: what ``build`` returns (agentclone.objectives.base.SAMPLE_KINDS): ``conversation`` (whole
    #: trajectories, loss per step) or ``completion`` (trajectory prefixes whose last step is the
    #: target and the only one with loss)
    sample_kind: ClassVar[str] = "conversation"
    #: True when ``build`` uses ``BuildContext.expert_demos`` (``rounds:`` then collects them)
    uses_expert_demos: ClassVar[bool] = False

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
    """Make a registered data builder by name with its options (``agentclone.plugins.create``)."""
    from agentclone.plugins import create

    return create("builder", name, **(config or {}))


def labelled_states(traj: Trajectory) -> list[int]:
    """Indices of the steps whose state the expert labelled with an action."""
    return [i for i, s in enumerate(traj.steps) if s.expert is not None and s.expert.action]


class RolloutBuilder(DataBuilder):
    """A builder on the agent's own rollouts with expert labels (``leap``, ``step-pairs``, ``kto-labels``):
    which rollouts to use (``only_failed``, ``aggregate`` over earlier rounds) and the counters."""

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.counts: Counter = Counter()

    @property
    def report(self) -> dict:
        return dict(self.counts)

    def _rollouts(self, trajectories: list[Trajectory], context: BuildContext) -> list[tuple[str, Trajectory]]:
        """(round label, rollout) for every usable rollout; drops counted in ``stats``."""
        rounds = [("this_round", trajectories)]
        if getattr(self.config, "aggregate", False):
            rounds = [(f"round_{i}", t) for i, t in enumerate(context.earlier_rollouts, start=1)] + rounds
        out = []
        for label, trajs in rounds:
            self.stats.trajectories_in += len(trajs)
            for traj in trajs:
                if traj.error:
                    self.stats.drop("errored")
                elif self.config.only_failed and traj.success:
                    self.stats.drop("successful (only_failed)")
                elif not any(s.expert is not None for s in traj.steps):
                    self.stats.drop("no expert labels (collect with expert_labels: true)")
                else:
                    self.counts["states"] += len(traj.steps)
                    self.counts["states_without_expert"] += sum(
                        s.expert is None or not s.expert.action for s in traj.steps)
                    self.counts["disagreements"] += sum(s.agrees_with_expert is False for s in traj.steps)
                    out.append((label, traj))
        return out

    def _finish(self, out: list) -> list:
        self.stats.trajectories_out = len(out)
        self.stats.steps = self.counts["states"]
        self.stats.loss_steps = len(out)
        return out


def state_id(traj: Trajectory, k: int, label: str) -> str:
    """A sample's id for state ``k`` of a rollout: unique across aggregated rounds, whose episodes share
    ids (the same task and repetition each round)."""
    return f"{traj.id}@{k}" if label == "this_round" else f"{traj.id}@{k}~{label}"
