"""``dpo``: direct preference optimisation with TRL's DPOTrainer on ``preference`` samples, LoRA.

Tokenisation is agentclone's own (``agentclone.preferences.tokenize_completion``): the chat template's
generation markers say which completion tokens are the assistant's, and only those are scored. A
step-level pair has one assistant turn on each side, so this is the whole answer; a trajectory-level
(ETO) pair's continuations also hold the environment's turns, whose tokens get ``completion_mask`` 0
(label -100): stock TRL would score the whole completion, environment text included.

The reference policy is the policy the round started from. With ``init_adapter`` (e.g. the
behaviour-cloning adapter) the model is that adapter loaded trainable, and TRL 1.16 (with PEFT >= 0.20)
adds a frozen copy of it named ``ref`` and computes every reference log-probability with that copy
active (precomputed or not): the reference is base + init adapter, not the bare base model. Training
continues the same adapter, so the saved adapter applies to the unmerged base as is. Without
``init_adapter`` a fresh LoRA is trained and the reference is the base model (adapter disabled), which
is then the starting policy. ``trainer`` refuses to run if TRL did not make the ``ref`` copy.

``settings.trl`` passes DPOConfig fields: ``beta``, ``loss_type`` (a list with ``loss_weights``, e.g.
``[sigmoid, sft]`` for DPO plus SFT on the chosen answers), ``precompute_ref_log_probs``, ...
"""

from __future__ import annotations

import sys
from typing import Any

from agentclone.objectives.base import Objective


def _preference_collator():
    """TRL's preference collator, with the completion mask taken from the rows' assistant masks."""
    from dataclasses import dataclass

    from trl.trainer.dpo_trainer import DataCollatorForPreference
    from trl.trainer.utils import pad

    @dataclass
    class AssistantMaskPreferenceCollator(DataCollatorForPreference):
        def torch_call(self, examples):
            import torch

            out = super().torch_call(examples)
            if "chosen_mask" not in examples[0]:
                return out
            masks = [[0] * len(e["prompt_ids"]) + list(e["chosen_mask"]) for e in examples]
            masks += [[0] * len(e["prompt_ids"]) + list(e["rejected_mask"]) for e in examples]
            if self.max_length is not None:
                sl = slice(None, self.max_length) if self.truncation_mode == "keep_start" else slice(-self.max_length, None)
                masks = [m[sl] for m in masks]
            out["completion_mask"] = pad([torch.tensor(m, dtype=torch.long) for m in masks], padding_value=0,
                                         padding_side="right", pad_to_multiple_of=self.pad_to_multiple_of)
            assert out["completion_mask"].shape == out["input_ids"].shape
            return out

    return AssistantMaskPreferenceCollator


def _trainer_class():
    from trl import DPOTrainer

    class AgentDPOTrainer(DPOTrainer):
        """DPOTrainer on agentclone's pre-tokenised rows (``prompt_ids``, ``chosen_ids``, ``rejected_ids`` and
        their assistant masks): only assistant tokens count in the log-probabilities."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if "prompt_ids" in dataset.column_names:
                return dataset
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            extra = ["chosen_mask", "rejected_mask", self.args.length_column_name]
            self._signature_columns = list(self._signature_columns) + [c for c in extra if c not in self._signature_columns]

    return AgentDPOTrainer


def check_reference_adapter(model, started_from_adapter: bool, objective: str) -> None:
    """Refuse to train when the reference would silently be the bare base model instead of the start policy."""
    from peft import PeftModel

    if started_from_adapter and isinstance(model, PeftModel) and "ref" not in model.peft_config:
        raise RuntimeError(
            f"{objective}: TRL made no frozen 'ref' copy of the starting adapter, so the reference log-probabilities "
            "would come from the base model; this needs TRL >= 1.16 with PEFT >= 0.20"
        )


def drop_too_long(rows: list[dict], lengths: list[int], max_length: int | None, what: str) -> list[dict]:
    if max_length is None:
        return rows
    kept = [r for r, n in zip(rows, lengths) if n <= max_length]
    if len(kept) < len(rows):
        print(f"warning: {len(rows) - len(kept)} of {len(rows)} {what} are longer than max_length={max_length} "
              "tokens and were left out (a cut answer would be compared with a whole one)", file=sys.stderr)
    return kept


class DPO(Objective):
    name = "dpo"
    accepts = ("preference",)

    def config_class(self) -> type:
        from trl import DPOConfig

        return DPOConfig

    def config_fields(self, settings) -> dict[str, Any]:
        # the rows are already cut to max_length (too long pairs are left out); TRL's own padding-free mode
        # falls back to padding in 1.16, with a warning
        return {"max_length": settings.max_length, "padding_free": settings.padding_free}

    def read_samples(self, path) -> list:
        from agentclone.preferences import read_preference_file

        return read_preference_file(path, kind="preference")

    def policy_model(self, model, init_adapter, lora_config):
        """A fresh LoRA (reference: the base model, the start policy) or ``init_adapter`` loaded trainable as
        adapter ``default``, which TRL copies into a frozen ``ref`` adapter for the reference (checked in
        ``trainer``). Merging the start adapter into the base and training a second LoRA on top would give
        the same reference but an adapter that no longer applies to the unmerged base."""
        if init_adapter is None:
            return model, lora_config
        from peft import PeftModel

        return PeftModel.from_pretrained(model, str(init_adapter), adapter_name="default", is_trainable=True), None

    def dataset(self, samples, tokenizer, fmt, max_length):
        from datasets import Dataset

        from agentclone.errors import UserError
        from agentclone.preferences import PreferencePair, tokenize_completion

        rows, lengths = [], []
        for s in samples:
            if not isinstance(s, PreferencePair):
                raise UserError(f"dpo trains on preference pairs; sample {getattr(s, 'id', '?')} is a "
                                f"{type(s).__name__}")
            prompt_ids, chosen_ids, chosen_mask = tokenize_completion(tokenizer, s.prompt, s.chosen)
            _, rejected_ids, rejected_mask = tokenize_completion(tokenizer, s.prompt, s.rejected)
            n = len(prompt_ids) + max(len(chosen_ids), len(rejected_ids))
            rows.append({"id": s.id, "prompt_ids": prompt_ids, "chosen_ids": chosen_ids, "rejected_ids": rejected_ids,
                         "chosen_mask": chosen_mask, "rejected_mask": rejected_mask, "length": n})
            lengths.append(n)
        rows = drop_too_long(rows, lengths, max_length, "preference pairs")
        if not rows:
            raise UserError("no training samples: every preference pair was longer than max_length")
        return Dataset.from_list(rows)

    def trainer(self, model, args, dataset, tokenizer, peft_config):
        from peft import PeftModel

        started_from_adapter = isinstance(model, PeftModel) and peft_config is None
        trainer = _trainer_class()(
            model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config,
            data_collator=_preference_collator()(pad_token_id=tokenizer.pad_token_id, max_length=args.max_length,
                                                 truncation_mode=args.truncation_mode,
                                                 pad_to_multiple_of=args.pad_to_multiple_of),
        )
        check_reference_adapter(trainer.model, started_from_adapter, self.name)
        return trainer

    def dataset_tokens(self, dataset) -> tuple[int, int]:
        """Tokens of one epoch (each pair is two sequences: prompt + chosen, prompt + rejected) and scored tokens."""
        tokens = sum(2 * len(p) + len(c) + len(r) for p, c, r in
                     zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"]))
        scored = sum(sum(m) for m in dataset["chosen_mask"]) + sum(sum(m) for m in dataset["rejected_mask"])
        return tokens, scored
