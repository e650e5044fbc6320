"""``bc``: behaviour cloning on every expert action (thoughts included: thought cloning)."""

from __future__ import annotations

from pydantic import Field

from agentclone.data import Trajectory
from agentclone.builders.base import BuildContext, BuilderConfig, DataBuilder


class BCConfig(BuilderConfig):
    only_successful: bool = Field(True, description="keep only trajectories that reached the goal")
    last_turn_only: bool = Field(False, description="loss on the last assistant turn only")
    include_thoughts: bool = Field(True, description="learn the thoughts as well as the actions")
    skip_invalid_steps: bool = Field(True, description="no loss on steps whose action was invalid")
    keep_loss_off: bool = Field(False, description="a step the input already marks loss=false stays without loss "
                                "(e.g. conflicting steps from `agentclone curate --drop-conflicting`)")


class BehaviourCloning(DataBuilder):
    name = "bc"
    Config = BCConfig

    def build(self, trajectories: list[Trajectory], context: BuildContext) -> list[Trajectory]:
        cfg: BCConfig = self.config
        self.stats.trajectories_in = len(trajectories)
        out = []
        for traj in trajectories:
            if traj.error:
                self.stats.drop("errored")
                continue
            if cfg.only_successful and not traj.success:
                self.stats.drop("unsuccessful")
                continue
            if not traj.steps:
                self.stats.drop("empty")
                continue
            new = traj.model_copy(deep=True)
            last = len(new.steps) - 1
            for i, step in enumerate(new.steps):
                step.loss = (i == last) if cfg.last_turn_only else True
                if cfg.skip_invalid_steps and step.invalid:
                    step.loss = False
                if cfg.keep_loss_off and not traj.steps[i].loss:
                    step.loss = False
                if not cfg.include_thoughts:
                    step.thought = None
            out.append(new)
        return self._count(out)
