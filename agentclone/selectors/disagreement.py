"""``disagreement``: the steps where the current model is furthest from the expert.

Each trajectory is scored by teacher forcing in one forward pass of the model:
the log-probability of every expert assistant turn given the whole history
before it. The ``k`` turns the model finds least likely are the ones it has
most to learn from. No judge needed, only the model being trained (or its
current adapter, for iterative rounds).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from agentclone.data import Trajectory
from agentclone.selectors.base import Pick, SelectorConfig, StepSelector, eligible_steps
from agentclone.building import BuildContext


class DisagreementConfig(SelectorConfig):
    model: str | None = Field(None, description="model to score with; None: the recipe's model")
    adapter: str | None = Field(None, description="LoRA adapter of the current model (for iterative rounds)")
    reduce: Literal["mean", "sum"] = Field("mean", description="per-token mean or sum of a turn's log-probs")
    format: Literal["thought-action", "action"] | None = Field(
        None, description="how turns are written; None: the build's format (thought-action by default)"
    )
    max_batch_tokens: int = Field(4096, description="tokens per forward pass (several short trajectories share one)")
    device: str | None = Field(None, description="cpu, cuda, ...; None: a GPU when there is one")


class DisagreementSteps(StepSelector):
    name = "disagreement"
    Config = DisagreementConfig

    def __init__(self, config=None, scorer=None) -> None:
        super().__init__(config)
        self._scorer = scorer  # an HFPolicy already loaded (tests, or a caller that has one)

    def _policy(self, context: BuildContext):
        if self._scorer is not None:
            return self._scorer
        from agentclone.policies.hf import HFPolicy
        from agentclone.prompting import ActionFormat

        cfg: DisagreementConfig = self.config
        model = cfg.model or context.model
        if not model:
            raise ValueError(
                "the disagreement selector needs a model to score with: run it from a recipe, or set "
                "selector_options: {model: smollm2-135m}"
            )
        fmt = ActionFormat(cfg.format or context.format)
        return HFPolicy(fmt=fmt, model=model, adapter=cfg.adapter, device=cfg.device)

    def select(self, traj: Trajectory, k: int, context: BuildContext) -> list[Pick]:
        return self.select_all([traj], [k], context)[0]

    def select_all(self, trajs: list[Trajectory], ks: list[int], context: BuildContext) -> list[list[Pick]]:
        todo = [i for i, (t, k) in enumerate(zip(trajs, ks)) if k > 0 and eligible_steps(t)]
        out: list[list[Pick]] = [[] for _ in trajs]
        if not todo:
            return out
        policy = self._policy(context)
        try:
            scores = policy.turn_logprobs(
                [trajs[i] for i in todo], reduce=self.config.reduce, max_batch_tokens=self.config.max_batch_tokens
            )
        finally:
            if self._scorer is None:
                policy.close()
        self.count("trajectories_scored", len(todo))
        model_id = policy.model_id
        for i, turn_scores in zip(todo, scores):
            ranked = sorted(eligible_steps(trajs[i]), key=lambda j: (turn_scores[j], j))
            out[i] = [
                (
                    j,
                    self.info(
                        reason=f"expert turn least likely under {model_id} (rank {r + 1} of {len(ranked)})",
                        score=round(turn_scores[j], 4),
                    ),
                )
                for r, j in enumerate(ranked[: ks[i]])
            ]
        return out
