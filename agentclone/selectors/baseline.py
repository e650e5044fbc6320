"""Selectors that need no model: ``all`` (behaviour cloning), ``random`` (the baseline), ``progress``."""

from __future__ import annotations

import hashlib
import random

from pydantic import Field

from agentclone.data import Trajectory
from agentclone.selectors.base import Pick, SelectorConfig, StepSelector, eligible_steps
from agentclone.building import BuildContext


class AllSteps(StepSelector):
    """Every valid step: plain behaviour cloning through the ``critical`` trainer."""

    name = "all"
    uses_budget = False

    def select(self, traj: Trajectory, k: int, context: BuildContext) -> list[Pick]:
        return [(i, self.info(reason="every step")) for i in eligible_steps(traj)[:k]]


class RandomConfig(SelectorConfig):
    seed: int | None = Field(None, description="seed; None: the build's seed")


class RandomSteps(StepSelector):
    """``k`` steps drawn uniformly: the baseline a selector must beat at the same budget.

    Seeded per trajectory (the seed and the trajectory id), so a trajectory gets
    the same steps whatever else is in the file.
    """

    name = "random"
    Config = RandomConfig

    def select(self, traj: Trajectory, k: int, context: BuildContext) -> list[Pick]:
        seed = self.config.seed if self.config.seed is not None else context.seed
        digest = hashlib.sha256(f"{seed}:{traj.id}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))
        steps = eligible_steps(traj)
        chosen = rng.sample(steps, min(k, len(steps)))
        return [(i, self.info(reason=f"random draw (seed {seed})", score=None)) for i in chosen]


class ProgressConfig(SelectorConfig):
    info_keys: dict[str, float] = Field(
        default_factory=lambda: {"crafted": 2.0, "got": 1.0},
        description="step info keys that signal progress, with their weight (TextCraft: crafted, got)",
    )
    goal_weight: float = Field(10.0, description="weight of the step that reaches the goal")
    reward_weight: float = Field(5.0, description="weight per unit of reward at a step (a change of the return)")
    prefer: str = Field("later", pattern="^(later|earlier)$", description="tie break: the later or the earlier step")


class ProgressSteps(StepSelector):
    """Steps where the environment signals progress: the goal reached, a reward change, info keys.

    Score of a step = goal_weight if it ends the episode successfully
    + reward_weight * |reward| (the return changed) + the weights of its progress info keys.
    Ties are broken by position (later steps first by default), so the choice is
    deterministic.
    """

    name = "progress"
    Config = ProgressConfig

    def score(self, traj: Trajectory, i: int) -> tuple[float, list[str]]:
        cfg: ProgressConfig = self.config
        step = traj.steps[i]
        why: list[str] = []
        score = 0.0
        if step.terminated and (step.info.get("success") or (traj.success and i == len(traj.steps) - 1)):
            score += cfg.goal_weight
            why.append("reaches the goal")
        if step.reward:
            score += cfg.reward_weight * abs(step.reward)
            why.append(f"reward {step.reward:+g}")
        for key, weight in cfg.info_keys.items():
            if step.info.get(key):
                score += weight
                why.append(f"{key} {_short(step.info[key])}")
        return score, why

    def select(self, traj: Trajectory, k: int, context: BuildContext) -> list[Pick]:
        later = self.config.prefer == "later"
        scored = [(*self.score(traj, i), i) for i in eligible_steps(traj)]
        scored.sort(key=lambda x: (-x[0], -x[2] if later else x[2]))
        return [
            (i, self.info(reason=", ".join(why) or "no progress signal (tie break)", score=round(score, 4)))
            for score, why, i in scored[:k]
        ]


def _short(value) -> str:
    text = str(value).removeprefix("minecraft:")
    return text if len(text) <= 40 else text[:37] + "..."
