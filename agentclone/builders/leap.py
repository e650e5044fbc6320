"""``leap``: learning on the agent's own states with the privileged expert's corrections (LEAP / DAgger).

The input is the agent's own rollouts collected with ``collect.expert_labels: true``: every step
carries what the environment's expert would have done from that state (``Step.expert``). For each
chosen state the builder makes one *completion* sample: the agent's real history up to that state
as context (its own actions, parse failures included, without loss) and the expert's thought and
action as the only target. So the agent learns what to do in the states it actually reaches,
including the ones after its own mistakes, which expert demonstrations never contain.

Which states get a target (``states``):

- ``disagree`` (default): where the agent's action differed from the expert's;
- ``all``: every labelled state (agreements too: they reinforce what the agent did right);
- ``from_divergence``: every state from the agent's first disagreement on.

``aggregate`` adds the samples of the earlier rounds' rollouts (DAgger's growing dataset) and
``expert_demos`` mixes in that share of the expert's demonstrations (whole trajectories, loss on
every step, as behaviour cloning), so the agent does not forget the expert's own states.
"""

from __future__ import annotations

import random
from typing import Literal

from pydantic import Field

from agentclone.builders.base import BuildContext, BuilderConfig, RolloutBuilder, labelled_states, state_id
from agentclone.data import Step, Trajectory


class LeapConfig(BuilderConfig):
    states: Literal["disagree", "all", "from_divergence"] = Field(
        "disagree", description="which of the agent's states get the expert's action as target"
    )
    only_failed: bool = Field(False, description="use only the agent's failed episodes")
    include_thoughts: bool = Field(True, description="the target includes the expert's thought")
    aggregate: bool = Field(True, description="add samples from every earlier round's rollouts (DAgger)")
    expert_demos: float = Field(
        1.0, ge=0.0, le=1.0,
        description="share of the expert's successful demonstrations mixed in (whole trajectories, as bc)",
    )


class Leap(RolloutBuilder):
    name = "leap"
    Config = LeapConfig
    sample_kind = "completion"

    @property
    def uses_expert_demos(self) -> bool:
        return self.config.expert_demos > 0

    def targets(self, traj: Trajectory) -> list[int]:
        """Indices of the states of ``traj`` that get the expert's action as target."""
        cfg: LeapConfig = self.config
        labelled = labelled_states(traj)
        if cfg.states == "all":
            return labelled
        disagree = [i for i in labelled if traj.steps[i].agrees_with_expert is False]
        if cfg.states == "disagree":
            return disagree
        return [i for i in labelled if disagree and i >= disagree[0]]

    def sample(self, traj: Trajectory, k: int, label: str = "this_round") -> Trajectory:
        """The agent's history before state ``k`` (no loss), then the expert's answer at ``k`` (loss)."""
        cfg: LeapConfig = self.config
        history = [s.model_copy(update={"loss": False, "expert": None, "selection": None}) for s in traj.steps[:k]]
        here = traj.steps[k]
        expert = here.expert
        target = Step(
            observation=here.observation,
            thought=expert.thought if cfg.include_thoughts else None,
            action=expert.action,
            loss=True,
            info={"target": "expert", "agent_action": here.action, "agent_invalid": here.invalid},
        )
        return traj.model_copy(update={"id": state_id(traj, k, label), "steps": [*history, target]}, deep=True)

    def build(self, trajectories: list[Trajectory], context: BuildContext) -> list[Trajectory]:
        cfg: LeapConfig = self.config
        out: list[Trajectory] = []
        for label, traj in self._rollouts(trajectories, context):
            for k in self.targets(traj):
                out.append(self.sample(traj, k, label))
                self.counts[f"targets_{label}"] += 1
                self.counts["targets_after_invalid"] += k > 0 and traj.steps[k - 1].invalid
        self.counts["targets"] = len(out)
        demos = [t for t in (context.expert_demos or []) if t.success and not t.error and t.steps]
        if demos and cfg.expert_demos > 0:
            rng = random.Random(context.seed)
            chosen = rng.sample(demos, round(cfg.expert_demos * len(demos)))
            for t in chosen:
                new = t.model_copy(deep=True)
                for s in new.steps:
                    s.loss = not s.invalid
                    if not cfg.include_thoughts:
                        s.thought = None
                out.append(new)
            self.counts["expert_demos"] = len(chosen)
        return self._count(out)
