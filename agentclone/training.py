"""LoRA fine-tuning with TRL's SFTTrainer on trajectories.

One training sample per trajectory (never one per step): the whole episode is
one conversation, and loss lies exactly on the assistant turns whose step has
``loss=True`` (the end-of-turn token included). Cost grows linearly with the
trajectory's length.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentclone.data import Trajectory, atomic_write_text
from agentclone.prompting import ActionFormat, trajectory_messages


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, description="LoRA rank")
    alpha: int = Field(32, description="LoRA alpha (scale = alpha / r)")
    dropout: float = Field(0.0, description="LoRA dropout")
    target_modules: list[str] | Literal["all-linear"] = Field("all-linear", description="modules to adapt")


class TrainSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    learning_rate: float = Field(1e-3, description="peak learning rate")
    epochs: float = Field(1.0, description="passes over the data (ignored when max_steps is set)")
    max_steps: int | None = Field(None, description="optimizer steps; overrides epochs")
    batch_size: int = Field(4, description="sequences per device per step")
    gradient_accumulation: int = Field(1, description="micro-batches per optimizer step")
    max_length: int = Field(2048, description="tokens per sample; longer samples are cut at the end")
    warmup_ratio: float = Field(0.05, description="share of steps spent warming up the learning rate")
    lr_scheduler: str = Field("cosine", description="transformers scheduler name")
    weight_decay: float = Field(0.0)
    seed: int = Field(0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: float32 on a CPU (bf16 is slow there), bf16 on a GPU"
    )
    gradient_checkpointing: bool | None = Field(None, description="None: off on a CPU, on on a GPU")
    group_by_length: bool = Field(True, description="batch samples of similar length to waste less padding")
    padding_free: bool = Field(
        False, description="TRL padding-free batches (correct with SDPA or flash attention; see docs/benchmarks.md)"
    )
    logging_steps: int = Field(5)
    save_steps: int = Field(50, description="checkpoint every N steps (for resume)")
    lora: LoraSettings = Field(default_factory=LoraSettings)


def tokenize_trajectories(trajs: list[Trajectory], tokenizer, fmt: ActionFormat, max_length: int | None = None):
    """A ``datasets.Dataset`` of ``input_ids`` and ``assistant_masks``, one row per trajectory.

    The chat template's generation markers give every assistant span; spans of
    steps whose ``loss`` is False are zeroed, so loss lands only where the
    builder said.
    """
    from datasets import Dataset

    rows = []
    for traj in trajs:
        messages, loss = trajectory_messages(traj, fmt)
        if not any(loss):
            continue
        enc = tokenizer.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        ids, mask = list(enc["input_ids"]), list(enc["assistant_masks"])
        spans = _spans(mask)
        if len(spans) != len(loss):
            raise RuntimeError(
                f"chat template marked {len(spans)} assistant spans for {len(loss)} assistant turns "
                f"in trajectory {traj.id}; the template needs {{% generation %}} markers"
            )
        for (a, b), keep in zip(spans, loss):
            if not keep:
                for i in range(a, b):
                    mask[i] = 0
        if max_length is not None:
            ids, mask = ids[:max_length], mask[:max_length]
            if not any(mask):
                continue
        rows.append({"input_ids": ids, "assistant_masks": mask, "id": traj.id})
    if not rows:
        raise ValueError("no training samples: every trajectory was dropped or carried no loss")
    return Dataset.from_list(rows)


def _spans(mask: list[int]) -> list[tuple[int, int]]:
    spans, start = [], None
    for i, m in enumerate(mask):
        if m and start is None:
            start = i
        elif not m and start is not None:
            spans.append((start, i))
            start = None
    if start is not None:
        spans.append((start, len(mask)))
    return spans


def data_hash(trajs: list[Trajectory]) -> str:
    h = hashlib.sha256()
    for t in trajs:
        h.update(t.content_hash().encode())
    return h.hexdigest()[:16]


def _on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def train_lora(
    trajs: list[Trajectory],
    model: str,
    output_dir: str | Path,
    settings: TrainSettings | None = None,
    fmt: ActionFormat | None = None,
    recipe: dict | None = None,
    progress: bool = True,
    init_adapter: str | Path | None = None,
) -> dict[str, Any]:
    """Train a LoRA adapter on ``trajs`` and save it in ``output_dir``; return the metrics.

    ``output_dir`` ends up holding the adapter, the tokenizer, ``agentclone.json``
    (recipe, data hash, metrics) and ``checkpoints/`` (for resume). A rerun with
    checkpoints present resumes from the last one.
    """
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from agentclone.models import load_tokenizer, resolve_model

    settings = settings or TrainSettings()
    fmt = fmt or ActionFormat()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = resolve_model(model)
    tokenizer = load_tokenizer(path)
    dataset = tokenize_trajectories(trajs, tokenizer, fmt, settings.max_length)
    gpu = _on_gpu()
    precision = settings.precision
    if precision == "auto":
        precision = "bf16" if gpu and torch.cuda.is_bf16_supported() else "fp32"
    grad_ckpt = settings.gradient_checkpointing if settings.gradient_checkpointing is not None else gpu

    model_obj = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.bfloat16 if precision == "bf16" else torch.float32
    )
    lora = LoraConfig(
        r=settings.lora.r,
        lora_alpha=settings.lora.alpha,
        lora_dropout=settings.lora.dropout,
        target_modules=settings.lora.target_modules,
        task_type="CAUSAL_LM",
    )
    if init_adapter is not None:  # continue training an existing adapter (e.g. the last round's)
        from peft import PeftModel

        if not (Path(init_adapter) / "adapter_config.json").exists():
            raise FileNotFoundError(f"no LoRA adapter at {init_adapter} (adapter_config.json missing)")
        model_obj = PeftModel.from_pretrained(model_obj, str(init_adapter), is_trainable=True)
        lora = None
    ckpt_dir = output_dir / "checkpoints"
    config = SFTConfig(
        output_dir=str(ckpt_dir),
        learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps if settings.max_steps is not None else -1,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation,
        warmup_steps=settings.warmup_ratio,  # a float below 1 is a ratio of all steps
        lr_scheduler_type=settings.lr_scheduler,
        weight_decay=settings.weight_decay,
        seed=settings.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        gradient_checkpointing=grad_ckpt,
        # TRL refuses max_length with padding_free (it would not truncate); the rows are already cut to it
        max_length=None if settings.padding_free else settings.max_length,
        padding_free=settings.padding_free,
        train_sampling_strategy="group_by_length" if settings.group_by_length else "random",
        logging_steps=settings.logging_steps,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=2,
        report_to="none",
        disable_tqdm=not progress,
        use_cpu=not gpu,
        dataloader_pin_memory=gpu,
    )
    trainer = SFTTrainer(
        model=model_obj,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
    )
    resume = _last_checkpoint(ckpt_dir)
    t0 = time.perf_counter()
    out = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    wall = time.perf_counter() - t0
    tokens = sum(len(x) for x in dataset["input_ids"])
    loss_tokens = sum(sum(x) for x in dataset["assistant_masks"])
    steps_done = out.global_step
    epochs_done = out.metrics.get("epoch", settings.epochs)
    metrics = {
        "train_loss": out.training_loss,
        "global_step": steps_done,
        "epochs": epochs_done,
        "samples": len(dataset),
        "tokens_per_epoch": tokens,
        "loss_tokens_per_epoch": loss_tokens,
        "tokens_trained": int(tokens * (epochs_done or 0)),
        "train_wall_s": round(wall, 2),
        "train_tokens_per_s": round(tokens * (epochs_done or 0) / wall, 2) if wall > 0 else None,
        "resumed_from": str(resume) if resume else None,
        "precision": precision,
        "log_history": trainer.state.log_history,
    }
    if trainer.is_world_process_zero():
        _save_adapter(trainer, tokenizer, output_dir)
        meta = {
            "base_model": model,
            "base_model_path": path,
            "format": fmt.name,
            "data_hash": data_hash(trajs),
            "init_adapter": str(init_adapter) if init_adapter is not None else None,
            "settings": settings.model_dump(),
            "recipe": recipe,
            "metrics": {k: v for k, v in metrics.items() if k != "log_history"},
        }
        atomic_write_text(output_dir / "agentclone.json", json.dumps(meta, indent=2, default=str))
        atomic_write_text(output_dir / "metrics.json", json.dumps(metrics, indent=2, default=str))
    return metrics


def _save_adapter(trainer, tokenizer, output_dir: Path) -> None:
    """Save adapter and tokenizer into a temporary folder, then move the files in."""
    tmp = output_dir / ".adapter-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    for f in tmp.iterdir():
        os.replace(f, output_dir / f.name)
    shutil.rmtree(tmp, ignore_errors=True)


def _last_checkpoint(ckpt_dir: Path) -> Path | None:
    if not ckpt_dir.is_dir():
        return None
    ckpts = [p for p in ckpt_dir.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    if not ckpts:
        return None
    return max(ckpts, key=lambda p: int(p.name.split("-")[-1]))


def is_adapter_complete(output_dir: str | Path) -> bool:
    output_dir = Path(output_dir)
    return (output_dir / "adapter_config.json").exists() and (output_dir / "agentclone.json").exists()


def estimate_steps(n_samples: int, settings: TrainSettings) -> int:
    if settings.max_steps is not None:
        return settings.max_steps
    per_step = settings.batch_size * settings.gradient_accumulation
    return math.ceil(n_samples / per_step * settings.epochs)
