"""LoRA fine-tuning through a training objective (``agentclone.objectives``: TRL's SFT today).

What every objective shares lives here: the model and LoRA, the settings every TRL
config has, resume from checkpoints, an exponential moving average of the LoRA weights,
the data hash and the adapter's save (a manifest of file hashes written last, so a
half-written adapter is never taken for a complete one).

For SFT, one training sample per trajectory (never one per step): the whole episode
is one conversation, and loss lies exactly on the assistant turns whose step has
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

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentclone.data import Trajectory, atomic_write_text
from agentclone.distributed import barrier, is_main
from agentclone.memory import memory_total_bytes
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
    gradient_checkpointing: bool | None = Field(
        None, description="None: on on a GPU; on a CPU, on only when the largest step (batch_size rows padded "
        "to the longest sample) may not fit the machine's memory (choose_checkpointing)")
    group_by_length: bool = Field(True, description="batch samples of similar length to waste less padding")
    padding_free: bool = Field(
        False, description="TRL padding-free batches (correct with SDPA or flash attention; see docs/benchmarks.md)"
    )
    logging_steps: int = Field(5)
    report_to: Literal["none", "tensorboard"] = Field(
        "none", description="where the trainer also logs: none, or tensorboard (needs the tensorboard package; "
        "logs go to the adapter's checkpoints/runs/)",
    )
    save_steps: int = Field(50, description="checkpoint every N steps (for resume)")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    objective: str = Field("sft", description="registered training objective: sft, ...")
    ema_decay: float | None = Field(
        None, ge=0.0, lt=1.0,
        description="exponential moving average of the LoRA weights with this decay (e.g. 0.9); the "
        "average is what is saved and evaluated. None: the last iterate",
    )
    trl: dict[str, Any] = Field(
        default_factory=dict,
        description="any other field of the objective's TRL config (e.g. optim, max_grad_norm, packing), "
        "checked by building the config when the recipe is loaded",
    )

    @field_validator("report_to")
    @classmethod
    def _reporter_installed(cls, value: str) -> str:
        if value == "tensorboard":
            import importlib.util

            if importlib.util.find_spec("tensorboard") is None:
                raise ValueError("report_to: tensorboard needs the tensorboard package (pip install tensorboard), "
                                 "or use report_to: none")
        return value


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
        from agentclone.errors import UserError

        raise UserError("no training samples: every trajectory was dropped or carried no loss")
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


#: resident bytes that one training step of a Llama-shaped model holds per token, per layer and per unit of
#: hidden size, in float32 without gradient checkpointing: 182, from bench/train_memory.py on SmolLM2-135M
#: (13.07 GB after the backward pass at 4 x 1000 tokens, 0.46 GB of it the loaded model; docs/benchmarks.md)
ACTIVATION_BYTES = 182


#: the rest of a training process (torch, the Trainer, the dataset): what the quickstart's train stage held
#: beyond the model and the activations of its longest batch (7.83 GB peak, 4 rows padded to 481 tokens)
PROCESS_BYTES = int(1.2e9)


def estimate_step_bytes(model_config, tokens: int, precision: str) -> int:
    """Resident memory a training step of ``tokens`` tokens (rows x padded length) may need without gradient
    checkpointing: the model (about 12 h^2 weights a layer, and the embeddings), the saved activations scaled
    from the measured float32 figure, and the process around them. Preference objectives hold more
    (reference passes: 1.75x measured for DPO, docs/benchmarks.md)."""
    h = int(getattr(model_config, "hidden_size", 0) or 0)
    layers = int(getattr(model_config, "num_hidden_layers", 0) or 0)
    vocab = int(getattr(model_config, "vocab_size", 0) or 0)
    width = 4 if precision == "fp32" else 2
    weights = (12 * layers * h * h + vocab * h) * width
    return int(PROCESS_BYTES + weights + tokens * layers * h * ACTIVATION_BYTES * width / 4)


def longest_batch_tokens(dataset, settings: TrainSettings) -> int:
    """Tokens of the largest batch: ``batch_size`` rows padded to the longest row (sorted by length, the
    longest rows share a batch); ``max_length`` per row where rows are not plain token sequences."""
    longest = settings.max_length
    if "input_ids" in getattr(dataset, "column_names", ()) and len(dataset):
        longest = min(settings.max_length, max(len(x) for x in dataset["input_ids"]))
    return settings.batch_size * longest


def choose_checkpointing(settings: TrainSettings, gpu: bool, model_config, precision: str, tokens: int,
                         total: int | None = None) -> tuple[bool, str]:
    """Gradient checkpointing on or off, and why. A setting of true or false is kept; unset, it is on on a GPU
    and, on a CPU, on only where the largest step (``tokens``, ``estimate_step_bytes``) may exceed 80% of the
    machine's memory: off on the 24 GB machine the quickstart is measured on (it trains 1.5x faster
    without), on on an 8 GB laptop (the quickstart's training peaked at 7.8 GB without, 4.7 GB with, the
    same adapter's actions; docs/benchmarks.md)."""
    if settings.gradient_checkpointing is not None:
        return settings.gradient_checkpointing, "set by train.gradient_checkpointing"
    if gpu:
        return True, "on a GPU"
    total = memory_total_bytes() if total is None else total
    if total is None:
        return False, "this machine's memory is unknown"
    # every process of `accelerate launch` on this machine trains its own step
    procs = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    need = procs * estimate_step_bytes(model_config, tokens, precision)
    on = need > 0.8 * total
    each = f" in each of {procs} processes" if procs > 1 else ""
    return on, (f"the largest step ({tokens} tokens{each}) may need about {need / 1e9:.1f} GB without it; this "
                f"machine has {total / 1e9:.1f} GB (set train.gradient_checkpointing to decide)")


def _common_config_fields(settings: TrainSettings, precision: str, grad_ckpt: bool, gpu: bool, progress: bool,
                          output_dir: str) -> dict[str, Any]:
    """The fields every TRL config (a ``TrainingArguments``) has, from the shared settings."""
    return dict(
        output_dir=output_dir,
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
        train_sampling_strategy="group_by_length" if settings.group_by_length else "random",
        logging_steps=settings.logging_steps,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=2,
        report_to=settings.report_to,
        disable_tqdm=not progress,
        use_cpu=not gpu,
        dataloader_pin_memory=gpu,
    )


def build_trl_config(objective, settings: TrainSettings, output_dir: str, precision: str = "fp32",
                     grad_ckpt: bool = False, gpu: bool = False, progress: bool = True):
    """The objective's TRL config from the shared settings plus ``settings.trl``.

    A ``trl`` key that is no field of the config, or one the shared settings already set, is a
    ``UserError`` naming it: the same check runs when a recipe is loaded.
    """
    import dataclasses

    from agentclone.errors import UserError

    cls = objective.config_class()
    fields = _common_config_fields(settings, precision, grad_ckpt, gpu, progress, output_dir)
    fields.update(objective.config_fields(settings))
    known = {f.name for f in dataclasses.fields(cls)}
    for key in settings.trl:
        if key in fields:
            raise UserError(f"train.trl.{key}: set by agentclone's own train settings; use those instead "
                            "(train.learning_rate, train.epochs, train.batch_size, ...)")
        if key not in known:
            raise UserError(f"train.trl.{key}: not a field of {cls.__name__} (objective {objective.name!r}); "
                            "see TRL's documentation of that config for the allowed fields")
    try:
        return cls(**fields, **settings.trl)
    except (TypeError, ValueError) as exc:
        raise UserError(f"train.trl: {cls.__name__} refused the settings: {exc}") from None


def check_train_settings(settings: TrainSettings) -> None:
    """Everything about ``settings`` that can be checked before any work: the objective exists and its
    TRL config accepts every setting. Raises ``UserError``."""
    import tempfile

    from agentclone.objectives import make_objective

    objective = make_objective(settings.objective)
    with tempfile.TemporaryDirectory() as tmp:
        build_trl_config(objective, settings, tmp)


def _log_clock():
    """A callback that stamps ``elapsed_s`` (training seconds so far, continued across a resume) on each
    ``log_history`` entry, so tokens/s can be drawn per logging interval (``agentclone view``)."""
    from transformers import TrainerCallback

    class LogClock(TrainerCallback):
        start = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            before = [e["elapsed_s"] for e in state.log_history if "elapsed_s" in e]
            self.start = time.perf_counter() - (before[-1] if before else 0.0)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.log_history:  # the trainer appends the entry before it calls on_log
                state.log_history[-1].setdefault("elapsed_s", round(time.perf_counter() - self.start, 3))

    return LogClock()


class _WeightAverage:
    """An exponential moving average of the trainable (LoRA) weights, kept in checkpoints for resume.

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the average does
    not stay anchored at the initial weights during short runs.
    """

    FILE = "ema.pt"

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.shadow: dict | None = None
        self.updates = 0

    def callback(self):
        from transformers import TrainerCallback

        average = self

        class Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kw):
                if average.shadow is None:
                    average.start(model)

            def on_step_end(self, args, state, control, model=None, **kw):
                average.update(model)

            def on_save(self, args, state, control, **kw):
                if state.is_world_process_zero:  # one writer under accelerate launch
                    average.save(Path(args.output_dir) / f"checkpoint-{state.global_step}")

        return Callback()

    @staticmethod
    def _params(model):
        return {n: p for n, p in model.named_parameters() if p.requires_grad}

    def start(self, model) -> None:
        self.shadow = {n: p.detach().clone() for n, p in self._params(model).items()}

    def update(self, model) -> None:
        import torch

        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            for n, p in self._params(model).items():
                self.shadow[n].mul_(decay).add_(p.detach(), alpha=1 - decay)
        self.updates += 1

    def save(self, ckpt: Path) -> None:
        import torch

        if self.shadow is not None and ckpt.is_dir():
            torch.save({"shadow": self.shadow, "updates": self.updates}, ckpt / self.FILE)

    def load(self, ckpt: Path) -> bool:
        import torch

        f = ckpt / self.FILE
        if not f.exists():
            return False
        state = torch.load(f, map_location="cpu")
        self.shadow, self.updates = state["shadow"], state["updates"]
        return True

    def copy_to(self, model) -> None:
        import torch

        with torch.no_grad():
            for n, p in self._params(model).items():
                p.copy_(self.shadow[n].to(p.device, p.dtype))


def train_lora(
    trajs: list,
    model: str,
    output_dir: str | Path,
    settings: TrainSettings | None = None,
    fmt: ActionFormat | None = None,
    recipe: dict | None = None,
    progress: bool = True,
    init_adapter: str | Path | None = None,
) -> dict[str, Any]:
    """Train a LoRA adapter on ``trajs`` (the builder's samples) with ``settings.objective``; save it in
    ``output_dir``; return the metrics.

    ``output_dir`` ends up holding the adapter, the tokenizer, ``agentclone.json``
    (recipe, data hash, metrics, the adapter files' hashes) and ``checkpoints/`` (for resume).
    A rerun with checkpoints present resumes from the last one.
    """
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    from agentclone.models import load_tokenizer, resolve_model
    from agentclone.objectives import make_objective

    settings = settings or TrainSettings()
    fmt = fmt or ActionFormat()
    objective = make_objective(settings.objective)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = resolve_model(model)
    tokenizer = load_tokenizer(path)
    dataset = objective.dataset(trajs, tokenizer, fmt, settings.max_length)
    if len(dataset) == 0:
        from agentclone.errors import UserError

        raise UserError("no training samples: every sample was dropped or carried no loss")
    gpu = _on_gpu()
    precision = settings.precision
    if precision == "auto":
        precision = "bf16" if gpu and torch.cuda.is_bf16_supported() else "fp32"
    from transformers import AutoConfig

    grad_ckpt, why = choose_checkpointing(settings, gpu, AutoConfig.from_pretrained(path), precision,
                                          longest_batch_tokens(dataset, settings))
    if settings.gradient_checkpointing is None and not gpu and progress and is_main():
        print(f"gradient checkpointing {'on' if grad_ckpt else 'off'}: {why}", flush=True)
    ckpt_dir = output_dir / "checkpoints"
    config = build_trl_config(objective, settings, str(ckpt_dir), precision, grad_ckpt, gpu, progress)

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
    if init_adapter is not None and not (Path(init_adapter) / "adapter_config.json").exists():
        from agentclone.errors import UserError

        raise UserError(f"no LoRA adapter at {init_adapter} (adapter_config.json missing)")
    model_obj, lora = objective.policy_model(model_obj, init_adapter, lora)
    trainer = objective.trainer(model_obj, config, dataset, tokenizer, lora)
    resume = _last_checkpoint(ckpt_dir)
    average = None
    if settings.ema_decay is not None:
        average = _WeightAverage(settings.ema_decay)
        if resume is not None:
            average.load(resume)
        trainer.add_callback(average.callback())
    trainer.add_callback(_log_clock())
    t0 = time.perf_counter()
    out = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    wall = time.perf_counter() - t0
    if average is not None and average.shadow is not None:
        average.copy_to(trainer.model)  # the average is what is saved and evaluated
    tokens, loss_tokens = objective.dataset_tokens(dataset)
    steps_done = out.global_step
    epochs_done = out.metrics.get("epoch", settings.epochs)
    metrics = {
        "objective": objective.name,
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
        "gradient_checkpointing": grad_ckpt,
        "ema_decay": settings.ema_decay,
        "log_history": trainer.state.log_history,
    }
    # every process takes part in gathering sharded (FSDP) weights; the main process alone writes
    state_dict = _gathered_state_dict(trainer)
    if trainer.is_world_process_zero():
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
        save_adapter(trainer.model, tokenizer, output_dir, meta, state_dict=state_dict)
        atomic_write_text(output_dir / "metrics.json", json.dumps(metrics, indent=2, default=str))
    barrier()  # no process reads the adapter before it is complete
    return metrics


def _gathered_state_dict(trainer):
    """The whole model's weights gathered from every process when they are sharded (FSDP, DeepSpeed); None
    otherwise (one process, or DDP, whose every process holds all of them). Every process must call it."""
    if not (getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False)):
        return None
    return trainer.accelerator.get_state_dict(trainer.model_wrapped)


MANIFEST = "agentclone.json"


def save_adapter(model, tokenizer, output_dir: Path, meta: dict, state_dict: dict | None = None) -> None:
    """Save adapter and tokenizer so that a reader never takes a half-written adapter for a complete one.

    The manifest (``agentclone.json``, listing every file with its SHA-256) is removed first and
    written last, atomically; ``is_adapter_complete`` checks the files against it. Each file is
    moved in with an atomic rename from a temporary folder on the same disk.
    """
    from agentclone.data import file_sha256

    output_dir = Path(output_dir)
    (output_dir / MANIFEST).unlink(missing_ok=True)
    tmp = output_dir / ".adapter-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if state_dict is None:
        model.save_pretrained(str(tmp))
    else:  # weights gathered from the processes of a sharded run; PEFT keeps the adapter's
        model.save_pretrained(str(tmp), state_dict=state_dict)
    tokenizer.save_pretrained(str(tmp))
    files = {}
    for f in sorted(tmp.iterdir()):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
            files[f.name] = file_sha256(f)
            os.replace(f, output_dir / f.name)
    shutil.rmtree(tmp, ignore_errors=True)
    atomic_write_text(output_dir / MANIFEST, json.dumps({**meta, "files": files}, indent=2, default=str))


def _last_checkpoint(ckpt_dir: Path) -> Path | None:
    if not ckpt_dir.is_dir():
        return None
    ckpts = [p for p in ckpt_dir.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    if not ckpts:
        return None
    return max(ckpts, key=lambda p: int(p.name.split("-")[-1]))


def is_adapter_complete(output_dir: str | Path) -> bool:
    """True when the manifest exists and every file it lists is there with the recorded hash."""
    from agentclone.data import file_sha256

    output_dir = Path(output_dir)
    manifest = output_dir / MANIFEST
    if not (output_dir / "adapter_config.json").exists() or not manifest.exists():
        return False
    try:
        files = json.loads(manifest.read_text()).get("files")
    except (OSError, ValueError):
        return False
    if files is None:  # written before manifests listed files
        return True
    return all((output_dir / name).is_file() and file_sha256(output_dir / name) == sha for name, sha in files.items())


def estimate_steps(n_samples: int, settings: TrainSettings) -> int:
    if settings.max_steps is not None:
        return settings.max_steps
    per_step = settings.batch_size * settings.gradient_accumulation
    return math.ceil(n_samples / per_step * settings.epochs)
