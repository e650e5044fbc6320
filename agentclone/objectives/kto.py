"""``kto``: Kahneman-Tversky optimisation with TRL's KTOTrainer on ``labelled`` samples (or preference pairs,
unpaired: chosen desirable, rejected undesirable), LoRA.

Each completion is one assistant turn, tokenised as SFT tokenises it (``tokenize_completion``: the
content and its end-of-turn token). Trajectory-level pairs, whose continuations hold environment
turns, are for ``dpo``: KTO's KL estimate rotates whole completions across a batch and has no
assistant mask.

The reference is the start policy, as for ``dpo``: ``init_adapter`` loaded trainable and a frozen copy
of it (TRL's ``ref`` adapter) for the reference log-probabilities; the base model with a fresh LoRA.
KTO's KL term pairs each prompt with its neighbour's completion in a fixed-order batch, so the
sampler is sequential (TRL requires it) and the rows are shuffled once, deterministically, here;
``batch_size`` must be above 1.

``settings.trl`` passes KTOConfig fields: ``beta``, ``desirable_weight``, ``undesirable_weight``,
``loss_type`` (``kto``, ``apo_zero_unpaired``), ``precompute_ref_log_probs``, ...
"""

from __future__ import annotations

import hashlib
from typing import Any

from agentclone.objectives.base import Objective
from agentclone.objectives.dpo import check_reference_adapter, drop_too_long


def _trainer_class():
    from trl import KTOTrainer

    class AgentKTOTrainer(KTOTrainer):
        """KTOTrainer on agentclone's pre-tokenised rows (``prompt_ids``, ``completion_ids``, ``label``)."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if "prompt_ids" not in dataset.column_names:
                return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            if self.calculate_KL:  # TRL's KL completions: each batch's completions rotated by one
                def add_kl(batch):
                    batch["KL_completion_ids"] = [batch["completion_ids"][-1]] + batch["completion_ids"][:-1]
                    return batch

                dataset = dataset.map(add_kl, batched=True, batch_size=args.per_device_train_batch_size)
            return dataset

    return AgentKTOTrainer


class KTO(Objective):
    name = "kto"
    accepts = ("labelled", "preference")

    def config_class(self) -> type:
        from trl import KTOConfig

        return KTOConfig

    def config_fields(self, settings) -> dict[str, Any]:
        from agentclone.errors import UserError

        loss_type = settings.trl.get("loss_type", "kto")
        if loss_type != "apo_zero_unpaired" and settings.batch_size <= 1:
            raise UserError("train.batch_size: kto needs at least 2 samples a batch (its KL term pairs each prompt "
                            "with another sample's completion)")
        if settings.padding_free:
            raise UserError("train.padding_free: the kto objective (TRL's KTOTrainer) has no padding-free mode")
        # TRL: the KL completions are fixed per batch, so the order must be too (rows are shuffled in `dataset`)
        return {"max_length": settings.max_length, "train_sampling_strategy": "sequential"}

    def read_samples(self, path) -> list:
        from agentclone.preferences import read_preference_file

        return read_preference_file(path)

    def policy_model(self, model, init_adapter, lora_config):
        """As ``dpo``: a fresh LoRA, or ``init_adapter`` trainable with TRL's frozen ``ref`` copy as reference."""
        if init_adapter is None:
            return model, lora_config
        from peft import PeftModel

        return PeftModel.from_pretrained(model, str(init_adapter), adapter_name="default", is_trainable=True), None

    @staticmethod
    def labelled(samples) -> list:
        """``LabelledCompletion`` samples; preference pairs unpaired (chosen desirable, rejected undesirable)."""
        from agentclone.errors import UserError
        from agentclone.preferences import LabelledCompletion, PreferencePair

        out = []
        for s in samples:
            if isinstance(s, LabelledCompletion):
                out.append(s)
            elif isinstance(s, PreferencePair):
                out.append(LabelledCompletion(id=f"{s.id}:chosen", task_id=s.task_id, prompt=s.prompt,
                                              completion=s.chosen, desirable=True, info=s.info))
                out.append(LabelledCompletion(id=f"{s.id}:rejected", task_id=s.task_id, prompt=s.prompt,
                                              completion=s.rejected, desirable=False, info=s.info))
            else:
                raise UserError(f"kto trains on labelled completions or preference pairs; sample "
                                f"{getattr(s, 'id', '?')} is a {type(s).__name__}")
        for s in out:
            if len(s.completion) != 1:
                raise UserError(f"kto: sample {s.id} has a multi-turn completion (environment turns between the "
                                "assistant's); kto scores whole completions: train trajectory-level pairs with dpo")
        return out

    def dataset(self, samples, tokenizer, fmt, max_length):
        from datasets import Dataset

        from agentclone.errors import UserError
        from agentclone.preferences import tokenize_completion

        rows, lengths = [], []
        for s in self.labelled(samples):
            prompt_ids, completion_ids, _ = tokenize_completion(tokenizer, s.prompt, s.completion)
            rows.append({"id": s.id, "prompt_ids": prompt_ids, "completion_ids": completion_ids, "label": s.desirable})
            lengths.append(len(prompt_ids) + len(completion_ids))
        rows = drop_too_long(rows, lengths, max_length, "labelled completions")
        if not rows:
            raise UserError("no training samples: every labelled completion was longer than max_length")
        # a fixed, content-independent shuffle: the sampler is sequential, so batches must not be all one label
        rows.sort(key=lambda r: hashlib.sha256(r["id"].encode()).hexdigest())
        return Dataset.from_list(rows)

    def trainer(self, model, args, dataset, tokenizer, peft_config):
        from peft import PeftModel

        started_from_adapter = isinstance(model, PeftModel) and peft_config is None
        trainer = _trainer_class()(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                   peft_config=peft_config)
        check_reference_adapter(trainer.model, started_from_adapter, self.name)
        return trainer

    def dataset_tokens(self, dataset) -> tuple[int, int]:
        tokens = sum(len(p) + len(c) for p, c in zip(dataset["prompt_ids"], dataset["completion_ids"]))
        return tokens, sum(len(c) for c in dataset["completion_ids"])
