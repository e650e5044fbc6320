"""Preference data from the agent's own mistakes: ``step-pairs`` and ``kto-labels`` (step level), ``eto-pairs``
(trajectory level).

``step-pairs`` and ``kto-labels`` read the agent's rollouts collected with ``collect.expert_labels: true``:
every step carries what the environment's privileged expert would have done from that state
(``Step.expert``). The prompt of a sample is the agent's own history up to that state (its own
answers, unparsable ones included, exactly as it wrote them), so the agent learns at the states it
actually reaches:

- ``step-pairs`` (DPO): at each state where the agent's action differed from the expert's, chosen =
  the expert's answer (``ActionFormat.render(action, thought)``), rejected = what the agent said
  (its raw text when it did not parse).
- ``kto-labels`` (KTO, unpaired): the agent's answer is desirable where it agreed with the expert and
  undesirable where it did not; ``expert_at_disagreements`` adds the expert's answer as desirable there.

``eto-pairs`` (ETO, trajectory level) pairs, for each task the agent failed, the expert's successful
demonstration (``BuildContext.expert_demos``, collected by ``rounds:``) with the agent's failed episode:
prompt = system + the first observation, chosen = the expert's continuation, rejected = the agent's;
both continuations hold the environment's turns between the assistant turns (only assistant tokens
are scored by the ``dpo`` objective).
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Literal

from pydantic import Field

from agentclone.builders.base import (
    BuildContext,
    BuilderConfig,
    DataBuilder,
    RolloutBuilder,
    labelled_states,
    state_id,
)
from agentclone.data import Trajectory
from agentclone.preferences import LabelledCompletion, PreferencePair
from agentclone.prompting import ActionFormat, assistant_text, trajectory_messages


class StepPairsConfig(BuilderConfig):
    states: Literal["disagree", "first_disagreement"] = Field(
        "disagree", description="every state where the agent's action differed from the expert's, or only the "
        "first such state of each episode",
    )
    only_failed: bool = Field(False, description="use only the agent's failed episodes")
    include_thoughts: bool = Field(True, description="the chosen answer includes the expert's thought")
    aggregate: bool = Field(False, description="add pairs from every earlier round's rollouts")


class StepPairs(RolloutBuilder):
    name = "step-pairs"
    Config = StepPairsConfig
    sample_kind = "preference"

    def build(self, trajectories: list[Trajectory], context: BuildContext) -> list[PreferencePair]:
        cfg: StepPairsConfig = self.config
        fmt = ActionFormat(context.format)
        out: list[PreferencePair] = []
        for label, traj in self._rollouts(trajectories, context):
            messages, _ = trajectory_messages(traj, fmt)
            states = [i for i in labelled_states(traj) if traj.steps[i].agrees_with_expert is False]
            if cfg.states == "first_disagreement":
                states = states[:1]
            for k in states:
                step = traj.steps[k]
                chosen = fmt.render(step.expert.action, step.expert.thought if cfg.include_thoughts else None)
                rejected = assistant_text(step, fmt)
                if chosen.strip() == rejected.strip():
                    self.counts["skipped_same_text"] += 1
                    continue
                out.append(PreferencePair(
                    id=state_id(traj, k, label), task_id=traj.task_id, level="step",
                    prompt=messages[: 2 + 2 * k],
                    chosen=[{"role": "assistant", "content": chosen}],
                    rejected=[{"role": "assistant", "content": rejected}],
                    info={"state": k, "agent_action": step.action, "expert_action": step.expert.action,
                          "agent_invalid": step.invalid, "episode_success": traj.success},
                ))
                self.counts[f"pairs_{label}"] += 1
                self.counts["pairs_on_invalid_answers"] += step.invalid
        self.counts["pairs"] = len(out)
        return self._finish(out)


class KTOLabelsConfig(BuilderConfig):
    only_failed: bool = Field(False, description="use only the agent's failed episodes")
    agreements: bool = Field(True, description="the agent's answers where it agreed with the expert, as desirable")
    disagreements: bool = Field(True, description="the agent's answers where it disagreed, as undesirable")
    expert_at_disagreements: bool = Field(
        False, description="also the expert's answer at each disagreement state, as desirable")
    include_thoughts: bool = Field(True, description="the expert's answers include its thought")
    aggregate: bool = Field(False, description="add samples from every earlier round's rollouts")


class KTOLabels(RolloutBuilder):
    name = "kto-labels"
    Config = KTOLabelsConfig
    sample_kind = "labelled"

    def build(self, trajectories: list[Trajectory], context: BuildContext) -> list[LabelledCompletion]:
        cfg: KTOLabelsConfig = self.config
        fmt = ActionFormat(context.format)
        out: list[LabelledCompletion] = []
        for label, traj in self._rollouts(trajectories, context):
            messages, _ = trajectory_messages(traj, fmt)
            for k in labelled_states(traj):
                step = traj.steps[k]
                agrees = bool(step.agrees_with_expert)
                prompt = messages[: 2 + 2 * k]
                info = {"state": k, "agent_action": step.action, "expert_action": step.expert.action,
                        "agent_invalid": step.invalid}
                if (agrees and cfg.agreements) or (not agrees and cfg.disagreements):
                    out.append(LabelledCompletion(
                        id=f"{state_id(traj, k, label)}:agent", task_id=traj.task_id, prompt=prompt, desirable=agrees,
                        completion=[{"role": "assistant", "content": assistant_text(step, fmt)}],
                        info={**info, "answer": "agent"},
                    ))
                    self.counts["desirable_agent" if agrees else "undesirable_agent"] += 1
                if not agrees and cfg.expert_at_disagreements:
                    text = fmt.render(step.expert.action, step.expert.thought if cfg.include_thoughts else None)
                    out.append(LabelledCompletion(
                        id=f"{state_id(traj, k, label)}:expert", task_id=traj.task_id, prompt=prompt, desirable=True,
                        completion=[{"role": "assistant", "content": text}], info={**info, "answer": "expert"},
                    ))
                    self.counts["desirable_expert"] += 1
        self.counts["desirable"] = sum(s.desirable for s in out)
        self.counts["undesirable"] = len(out) - self.counts["desirable"]
        return self._finish(out)


class ETOPairsConfig(BuilderConfig):
    include_thoughts: bool = Field(True, description="the expert's continuation includes its thoughts")
    max_pairs_per_task: int | None = Field(
        None, ge=1, description="at most this many of the agent's failed episodes per task (None: all)")


class ETOPairs(DataBuilder):
    name = "eto-pairs"
    Config = ETOPairsConfig
    sample_kind = "preference"
    uses_expert_demos = True

    def __init__(self, config=None) -> None:
        super().__init__(config)
        self.counts: Counter = Counter()

    @property
    def report(self) -> dict:
        return dict(self.counts)

    def build(self, trajectories: list[Trajectory], context: BuildContext) -> list[PreferencePair]:
        cfg: ETOPairsConfig = self.config
        fmt = ActionFormat(context.format)
        self.stats.trajectories_in = len(trajectories)
        demos: dict[str, list[Trajectory]] = {}
        for d in context.expert_demos or []:
            if d.success and not d.error and d.steps:
                demos.setdefault(d.task_id, []).append(d)
        if not demos:
            self.stats.drop("no successful expert demonstrations (BuildContext.expert_demos)")
        rng = random.Random(context.seed)
        per_task: Counter = Counter()
        out: list[PreferencePair] = []
        for traj in trajectories:
            if traj.error:
                self.stats.drop("errored")
                continue
            if traj.success:
                self.stats.drop("successful")
                continue
            if not traj.steps:
                self.stats.drop("empty")
                continue
            candidates = demos.get(traj.task_id)
            if not candidates:
                self.stats.drop("no expert demonstration of its task")
                continue
            demo = candidates[rng.randrange(len(candidates))]
            if demo.steps[0].observation != traj.steps[0].observation or demo.instructions != traj.instructions:
                self.stats.drop("the expert demonstration starts from another first observation")
                continue
            if cfg.max_pairs_per_task is not None and per_task[traj.task_id] >= cfg.max_pairs_per_task:
                self.stats.drop("max_pairs_per_task")
                continue
            if not cfg.include_thoughts:
                demo = demo.model_copy(update={"steps": [s.model_copy(update={"thought": None}) for s in demo.steps]})
            chosen_messages, _ = trajectory_messages(demo, fmt)
            rejected_messages, _ = trajectory_messages(traj, fmt)
            per_task[traj.task_id] += 1
            out.append(PreferencePair(
                id=f"{traj.id}~{demo.id}", task_id=traj.task_id, level="trajectory",
                prompt=rejected_messages[:2], chosen=chosen_messages[2:], rejected=rejected_messages[2:],
                info={"expert_demo": demo.id, "chosen_steps": len(demo.steps), "rejected_steps": len(traj.steps),
                      "rejected_invalid": traj.num_invalid},
            ))
            self.counts["chosen_steps"] += len(demo.steps)
            self.counts["rejected_steps"] += len(traj.steps)
        self.counts["pairs"] = len(out)
        self.counts["tasks"] = len(per_task)
        self.stats.trajectories_out = len(out)
        self.stats.steps = self.counts["chosen_steps"] + self.counts["rejected_steps"]
        self.stats.loss_steps = self.stats.steps
        return out


__all__ = ["StepPairs", "KTOLabels", "ETOPairs"]
