"""Robust SFT losses, for demonstrations that cannot be cleaned (issue #21).

The ``sft`` objective's config is TRL's ``SFTConfig`` plus three fields, set like any other TRL field
in a recipe's ``train.trl``::

    train:
      trl: {robust: loss_cap, loss_cap: 4.0}          # or {robust: median_of_means, mom_groups: 3}

- ``robust: none`` (the default): TRL's own loss, untouched (its trainer is the stock SFTTrainer).
- ``robust: loss_cap``: each sample's loss is the mean negative log-likelihood of its loss tokens
  (those the builder marked), and the batch loss is the mean over samples of ``min(loss, loss_cap)``: a
  sample above the cap adds nothing to the gradient (loss truncation). Set the cap above what clean
  samples cost, e.g. a little above the loss a clean run logs after its first steps.
- ``robust: median_of_means``: the micro-batch's per-sample losses are split, in batch order, into
  ``mom_groups`` groups; the loss is the median of the group means (the mean of the two middle ones for
  an even count). With ``mom_groups >= 3`` one corrupted sample moves at most one group mean, and the
  median ignores it. A micro-batch with fewer samples than groups uses one group per sample.

Both are per-sample means, so a long sample weighs no more than a short one (TRL's default loss is a
mean over tokens). The options need padded batches (``padding_free: false``, no ``packing``) and the
``nll`` loss type; the config refuses anything else when the recipe is loaded. A mixture-of-experts
model's router loss is not added to a robust loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import trl

ROBUST_MODES = ("none", "loss_cap", "median_of_means")


@dataclass
class SFTConfig(trl.SFTConfig):
    """TRL's ``SFTConfig`` with agentclone's robust-loss fields (the same class name, so messages read the same)."""

    robust: str = field(default="none", metadata={"help": "none, loss_cap or median_of_means"})
    loss_cap: float | None = field(default=None, metadata={"help": "robust: loss_cap: the per-sample loss cap"})
    mom_groups: int = field(default=3, metadata={"help": "robust: median_of_means: groups per micro-batch (>= 3)"})

    def __post_init__(self):
        super().__post_init__()
        if self.robust not in ROBUST_MODES:
            raise ValueError(f"robust: {self.robust!r} is not one of {', '.join(ROBUST_MODES)}")
        if self.robust == "loss_cap":
            if self.loss_cap is None or not self.loss_cap > 0:
                raise ValueError("robust: loss_cap needs loss_cap: a positive number (a per-sample mean token loss)")
        elif self.loss_cap is not None:
            raise ValueError(f"loss_cap is only used with robust: loss_cap (robust is {self.robust!r})")
        if self.robust == "median_of_means":
            if isinstance(self.mom_groups, bool) or not isinstance(self.mom_groups, int) or self.mom_groups < 3:
                raise ValueError("mom_groups must be an integer of at least 3 (with 2 groups the median is the mean)")
            if self.per_device_train_batch_size < self.mom_groups:
                raise ValueError(f"robust: median_of_means needs a batch_size of at least mom_groups "
                                 f"({self.per_device_train_batch_size} < {self.mom_groups})")
        if self.robust != "none":
            if self.padding_free or self.packing:
                raise ValueError(f"robust: {self.robust} needs padded batches (padding_free: false, packing: false)")
            if self.loss_type != "nll":
                raise ValueError(f"robust: {self.robust} works on the nll loss, not loss_type {self.loss_type!r}")


def robust_aggregate(per_sample: torch.Tensor, mode: str, loss_cap: float | None = None,
                     groups: int = 3) -> torch.Tensor:
    """One loss from a 1-d tensor of per-sample losses: their mean (``none``), the mean of the capped
    losses (``loss_cap``), or the median of ``groups`` contiguous group means (``median_of_means``)."""
    if per_sample.numel() == 0:
        return per_sample.sum()
    if mode == "none":
        return per_sample.mean()
    if mode == "loss_cap":
        return torch.clamp(per_sample, max=loss_cap).mean()
    if mode == "median_of_means":
        k = min(groups, per_sample.numel())
        means = torch.stack([g.mean() for g in torch.tensor_split(per_sample, k)])
        ordered = torch.sort(means).values
        mid = k // 2
        return ordered[mid] if k % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    raise ValueError(f"unknown robust mode {mode!r}")


def per_sample_losses(log_probs: torch.Tensor, label_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean negative log-likelihood of each row's loss tokens, which rows have any)."""
    tokens = label_mask.sum(dim=1)
    losses = -(log_probs * label_mask).sum(dim=1) / tokens.clamp(min=1)
    return losses, tokens > 0


class RobustSFTTrainer(trl.SFTTrainer):
    """TRL's SFTTrainer with the loss of ``args.robust`` (see the module's docstring)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        args = self.args
        if getattr(args, "robust", "none") == "none":
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        inputs["use_cache"] = False
        outputs = model(**inputs, fused_lm_head=True)
        mask = outputs.label_mask.to(outputs.log_probs.dtype)
        losses, valid = per_sample_losses(outputs.log_probs, mask)
        kept = losses[valid]
        if kept.numel() == 0:
            loss = outputs.log_probs.sum() * 0.0  # a differentiable zero
        else:
            loss = robust_aggregate(kept, args.robust, args.loss_cap, args.mom_groups)
        if self.model.training:
            # the Trainer divides by the accumulation steps only when the loss was not normalised by
            # num_items_in_batch; this loss is a per-micro-batch mean, so divide here when it will not
            scaled = getattr(self, "loss_is_scaled_for_ga", None)
            if scaled is None:
                scaled = (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or \
                    self.compute_loss_func is not None
            if scaled:
                loss = loss / self.current_gradient_accumulation_steps
        with torch.no_grad():
            metrics = self._metrics[mode]
            if kept.numel():
                metrics["per_sample_loss_mean"].append(float(kept.mean()))
                if args.robust == "loss_cap":
                    metrics["capped_fraction"].append(float((kept > args.loss_cap).float().mean()))
            n_valid = outputs.label_mask.sum()
            if n_valid > 0 and outputs.entropy is not None:
                metrics["entropy"].append(float(outputs.entropy.sum() / n_valid))
            if n_valid > 0 and outputs.is_top1 is not None:
                metrics["mean_token_accuracy"].append(float(outputs.is_top1.sum() / n_valid))
            if mode == "train" and "attention_mask" in inputs:
                self._total_train_tokens += int(inputs["attention_mask"].sum()) // self._tp_size
            metrics["num_tokens"] = [self._total_train_tokens]
        return (loss, outputs) if return_outputs else loss
