"""``sft``: supervised fine-tuning with TRL's SFTTrainer, loss exactly where the builder said.

Its config is TRL's SFTConfig plus ``robust`` / ``loss_cap`` / ``mom_groups`` (``train.trl``): robust
per-sample losses for demonstrations that cannot be cleaned (``agentclone.objectives.robust``)."""

from __future__ import annotations

from typing import Any

from agentclone.objectives.base import Objective


class SFT(Objective):
    name = "sft"
    accepts = ("conversation", "completion")

    def config_class(self) -> type:
        from agentclone.objectives.robust import SFTConfig  # TRL's, plus the robust-loss fields

        return SFTConfig

    def config_fields(self, settings) -> dict[str, Any]:
        return {
            # TRL refuses max_length with padding_free (it would not truncate); the rows are already cut to it
            "max_length": None if settings.padding_free else settings.max_length,
            "padding_free": settings.padding_free,
        }

    def dataset(self, samples, tokenizer, fmt, max_length):
        from agentclone.training import tokenize_trajectories

        return tokenize_trajectories(samples, tokenizer, fmt, max_length)

    def trainer(self, model, args, dataset, tokenizer, peft_config):
        from trl import SFTTrainer

        if getattr(args, "robust", "none") != "none":
            from agentclone.objectives.robust import RobustSFTTrainer as SFTTrainer
        return SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                          peft_config=peft_config)
