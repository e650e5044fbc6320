"""``critical``: ATLaS-style training on the critical steps of expert trajectories.

Whole trajectories stay in the sample as context; loss lies only on the steps a
step selector picks, about 30% of each trajectory by default (rounded half up,
at least ``min_steps``). Each picked step records why in ``Step.selection``
(``selector``, ``category`` or ``reason``, ``score``); ``agentclone inspect
FILE --show-selection`` shows them. Selectors are plugins
(``register_step_selectors``): ``llm-judge``, ``disagreement``, ``progress``,
``random``, ``all`` are built in.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import Field

from agentclone.data import Trajectory
from agentclone.selectors.base import StepSelector, eligible_steps, make_selector, step_budget
from agentclone.builders.base import BuildContext, BuilderConfig, DataBuilder


class CriticalConfig(BuilderConfig):
    selector: str = Field("disagreement", description="registered step selector: llm-judge, disagreement, progress, random, all")
    budget: float = Field(0.3, gt=0.0, le=1.0, description="share of each trajectory's steps that carry loss")
    min_steps: int = Field(1, ge=0, description="at least this many loss steps per trajectory")
    selector_options: dict[str, Any] = Field(default_factory=dict, description="the selector's own options")
    only_successful: bool = Field(True, description="keep only trajectories that reached the goal")
    include_thoughts: bool = Field(True, description="learn the thoughts as well as the actions")


class CriticalSteps(DataBuilder):
    name = "critical"
    Config = CriticalConfig

    def __init__(self, config: CriticalConfig | dict | None = None, selector: StepSelector | None = None) -> None:
        super().__init__(config)
        self.selector = selector or make_selector(self.config.selector, self.config.selector_options)
        #: what the selection did: steps picked, by category or selector, and the selector's counters
        self.report: dict[str, Any] = {}

    def build(self, trajectories: list[Trajectory], context: BuildContext) -> list[Trajectory]:
        cfg: CriticalConfig = self.config
        self.stats.trajectories_in = len(trajectories)
        kept: list[Trajectory] = []
        for traj in trajectories:
            if traj.error:
                self.stats.drop("errored")
            elif cfg.only_successful and not traj.success:
                self.stats.drop("unsuccessful")
            elif not traj.steps:
                self.stats.drop("empty")
            elif not eligible_steps(traj):
                self.stats.drop("no valid step")
            else:
                new = traj.model_copy(deep=True)
                for step in new.steps:
                    step.loss = False
                    step.selection = None
                    if not cfg.include_thoughts:
                        step.thought = None
                kept.append(new)
        ks = [self.budget(t) for t in kept]
        picks = self.selector.select_all(kept, ks, context) if kept else []
        kinds: Counter[str] = Counter()
        ignored = 0
        for traj, k, chosen in zip(kept, ks, picks):
            allowed = set(eligible_steps(traj))
            taken = 0
            for index, info in chosen:
                step = traj.steps[index] if 0 <= index < len(traj.steps) else None
                if step is None or index not in allowed or step.loss or taken == k:
                    ignored += 1  # a selector plugin that returned a bad, repeated or extra index
                    continue
                step.loss = True
                step.selection = {"selector": self.selector.name, **info}
                taken += 1
                kinds[_kind(step.selection)] += 1
        out = [t for t in kept if any(s.loss for s in t.steps)]
        for _ in range(len(kept) - len(out)):
            self.stats.drop("nothing selected")
        self._count(out)
        self.report = {
            "selector": self.selector.name,
            "budget": cfg.budget if self.selector.uses_budget else 1.0,
            "steps": self.stats.steps,
            "loss_steps": self.stats.loss_steps,
            "selected_by": dict(sorted(kinds.items())),
            "selector_stats": dict(self.selector.stats),
        }
        if ignored:
            self.report["ignored_picks"] = ignored
        problems = getattr(self.selector, "problems", None)
        if problems:
            self.report["judge_problems_sample"] = problems[:5]
        return out

    def budget(self, traj: Trajectory) -> int:
        """Loss steps for ``traj``: ``budget`` of its steps (rounded half up, >= min_steps), at most its valid steps."""
        valid = len(eligible_steps(traj))
        if not self.selector.uses_budget:
            return valid
        return min(valid, step_budget(len(traj.steps), self.config.budget, self.config.min_steps))


def _kind(selection: dict) -> str:
    """``llm-judge/critical action``, ``progress (fallback)``, ``random``: for the build report."""
    if "fallback_for" in selection:
        return f"{selection['selector']} (fallback)"
    if "category" in selection:
        return f"{selection['selector']}/{selection['category']}"
    return selection["selector"]
