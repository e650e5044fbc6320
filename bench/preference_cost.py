"""What one preference sample costs to train against one SFT sample on the same data (issue #16): one epoch each
of ``sft`` on prompt + chosen, ``dpo`` and ``kto`` on the same step pairs, through agentclone's own
``train_lora``, each case in a fresh process (ru_maxrss is a process-wide peak).

    OMP_NUM_THREADS=1 .venv/bin/python bench/preference_cost.py \
        --pairs runs/textcraft_preference/variants/dpo/round-1/train.jsonl \
        [--limit 40] [--batch 2] [--model smollm2-135m] [--json runs/bench/preference_cost.json]

``--pairs`` is a preference file as the ``step-pairs`` builder writes it (a round's ``train.jsonl``). The cases,
with the settings of configs/train/cpu-lora.yaml (LoRA r16, alpha 32, all-linear; float32 on a CPU, no gradient
checkpointing; no checkpoint saved during the epoch) and ``--batch`` pairs per optimizer step in every case:

* ``sft`` (the baseline): per pair one conversation sample, the pair's prompt followed by its chosen answer, loss
  on that answer only (``bench.preference_cost.sft_samples``; the tokens are the prompt's and the chosen
  answer's as ``dpo`` tokenises them, plus the chat template's newline after the last end-of-turn token).
* ``dpo``: the pairs, with the trl settings of recipes/textcraft_preference.yaml (beta 0.1, loss
  ``[sigmoid, sft]``); a fresh LoRA, so the reference is the base model (adapter disabled). Every pair is two
  sequences (prompt + chosen, prompt + rejected) forward and backward, and the same two again forward only
  for the reference log-probabilities.
* ``kto``: the pairs unpaired (chosen desirable, rejected undesirable: two rows a pair, ``2 x --batch`` rows
  a step), recipe settings (beta 0.1). Every row is forward and backward once, and forward only three times:
  its batch neighbour's completion after its prompt (the KL estimate) under the policy, and both under the
  reference.

Printed per case: training rows, pairs, tokens forward and backward, tokens forward only (reference, KL),
the training seconds (``train_wall_s``: ``trainer.train`` alone, not the model load), seconds per pair, the
peak resident memory, and the ratios of seconds per pair and of forwarded tokens to ``sft`` in the same run
(the machine is shared and noisy: only ratios within one run are compared). Why: the preference rounds
(recipes/textcraft_preference.yaml) are priced against BC rounds on the same states; a ratio far above the
token ratio would point at overhead in the trainers rather than in the arithmetic.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, machine_info, ratio, setup_threads, table, write_json  # noqa: E402

CASES = ("sft", "dpo", "kto")
BASELINE = "sft"
#: forward-only passes per forward-and-backward token: dpo's reference on both sequences; kto's KL sequences
#: (each prompt with its batch neighbour's completion: a permutation of the batch's completions, so as many
#: tokens) under the policy and under the reference, and its completions under the reference
FORWARD_ONLY_PASSES = {"sft": 0, "dpo": 1, "kto": 3}
TRAIN_PRESET = REPO / "configs" / "train" / "cpu-lora.yaml"
PREFERENCE_RECIPE = REPO / "recipes" / "textcraft_preference.yaml"
RESULT = "PREFERENCE_COST_RESULT "


# -- data and settings (pure: tests/test_bench.py) ----------------------------------------------


def sft_samples(pairs: list) -> tuple[list, object]:
    """One SFT conversation sample per pair: its prompt, then its chosen answer, loss on the chosen assistant
    turns only; and the action format whose system prompt the pairs have. ``trajectory_messages`` of each
    sample is exactly ``prompt + chosen`` (checked)."""
    from agentclone.errors import UserError
    from agentclone.formats.base import ImportOptions, Turn, conversation_to_trajectory
    from agentclone.prompting import ActionFormat, trajectory_messages

    out, fmt = [], None
    for pair in pairs:
        system = pair.prompt[0]["content"]
        fmt = next((f for f in (ActionFormat("thought-action"), ActionFormat("action"))
                    if system.endswith("\n" + f.hint)), None)
        if fmt is None:
            raise UserError(f"pair {pair.id}: its system prompt does not end with an action format's hint, so no "
                            "trajectory renders it as it is (not a step-pairs file?)")
        turns = [Turn(m["role"], m["content"], False if m["role"] == "assistant" else None) for m in pair.prompt[1:]]
        turns += [Turn(m["role"], m["content"], True if m["role"] == "assistant" else None) for m in pair.chosen]
        traj = conversation_to_trajectory(system, turns, task_id=pair.task_id, traj_id=pair.id,
                                          opts=ImportOptions(env_id="preference-pairs", loss="last", fmt=fmt))
        if trajectory_messages(traj, fmt)[0] != pair.prompt + pair.chosen:
            raise UserError(f"pair {pair.id}: its prompt and chosen answer do not render back as they are")
        out.append(traj)
    return out, fmt


def case_settings(case: str, batch: int):
    """``TrainSettings`` of one case: configs/train/cpu-lora.yaml, one epoch, ``batch`` pairs a step (kto: two
    rows a pair), the trl options of recipes/textcraft_preference.yaml's variant of that objective."""
    import yaml

    from agentclone.training import TrainSettings

    train = yaml.safe_load(TRAIN_PRESET.read_text())["train"]
    trl = {}
    if case != BASELINE:
        variants = yaml.safe_load(PREFERENCE_RECIPE.read_text())["variants"]
        trl = next(v["train"] for v in variants if v.get("train", {}).get("objective") == case).get("trl", {})
    return TrainSettings(**{
        **train, "objective": case, "epochs": 1, "batch_size": batch * (2 if case == "kto" else 1),
        "gradient_accumulation": 1, "precision": "fp32", "gradient_checkpointing": False,
        "save_steps": 10**9, "trl": trl,
    })


def add_ratios(rows: list[dict]) -> list[dict]:
    """Forward-only tokens, seconds per pair and the ratios to the ``sft`` row of the same run."""
    for row in rows:
        grad = row.get("tokens_grad")
        row["tokens_forward_only"] = None if grad is None else grad * FORWARD_ONLY_PASSES[row["case"]]
        row["tokens_forwarded"] = None if grad is None else grad + row["tokens_forward_only"]
        wall = row.get("train_s")
        row["s_per_pair"] = None if wall is None or not row.get("pairs") else wall / row["pairs"]
    base = next((r for r in rows if r["case"] == BASELINE), {})
    for row in rows:
        row["s_per_pair_vs_sft"] = ratio(row["s_per_pair"], base.get("s_per_pair"))
        row["tokens_vs_sft"] = ratio(row["tokens_forwarded"], base.get("tokens_forwarded"))
        row["peak_vs_sft"] = ratio(row.get("peak_rss_gb"), base.get("peak_rss_gb"))
    return rows


# -- one case, in its own process -------------------------------------------------------------------


def read_pairs(path: str, limit: int | None) -> list:
    from agentclone.preferences import read_preference_file

    pairs = read_preference_file(path, kind="preference")
    return pairs[:limit] if limit else pairs


def run_case(args) -> dict:
    """Train one case (``args.worker``) and return its metrics and peak memory."""
    import resource

    import torch

    from agentclone.training import train_lora

    pairs = read_pairs(args.pairs, args.limit)
    samples, fmt = sft_samples(pairs) if args.worker == BASELINE else (pairs, None)
    metrics = train_lora(samples, args.model, Path(args.work) / args.worker, case_settings(args.worker, args.batch),
                         fmt=fmt, progress=False)
    return {
        "case": args.worker, "pairs": len(pairs), "rows": metrics["samples"], "steps": metrics["global_step"],
        "tokens_grad": metrics["tokens_per_epoch"], "loss_tokens": metrics["loss_tokens_per_epoch"],
        "train_s": metrics["train_wall_s"], "train_loss": metrics["train_loss"],
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "peak_gpu_gb": torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else None,
    }


def spawn_case(case: str, args, work: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", case, "--work", str(work),
           "--pairs", args.pairs, "--model", args.model, "--batch", str(args.batch)]
    cmd += ["--limit", str(args.limit)] if args.limit else []
    cmd += ["--threads", str(args.threads)] if args.threads else []
    res = subprocess.run(cmd, capture_output=True, text=True)
    found = [line[len(RESULT):] for line in res.stdout.splitlines() if line.startswith(RESULT)]
    if res.returncode != 0 or not found:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or [f"exit status {res.returncode}"]
        print(f"  {case}: failed: {tail[0]}", file=sys.stderr)
        return {"case": case, "error": tail[0]}
    row = json.loads(found[-1])
    print(f"  {case}: {row['rows']} rows, {row['steps']} steps in {row['train_s']:.1f} s", flush=True)
    return row


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", required=True, help="preference JSONL (the step-pairs builder's output)")
    p.add_argument("--limit", type=int, default=None, help="use the first N pairs")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--batch", type=int, default=2, help="pairs (and SFT samples) per optimizer step")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--keep", action="store_true", help="keep the adapters (printed folder)")
    p.add_argument("--json", default=None, help="write the rows and the machine here")
    p.add_argument("--worker", choices=CASES, help=argparse.SUPPRESS)  # one case, in a child process
    p.add_argument("--work", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    setup_threads(args.threads)
    if args.worker:
        print(RESULT + json.dumps(run_case(args)), flush=True)
        return None
    import torch

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if set(cases) - set(CASES):
        raise SystemExit(f"unknown cases {sorted(set(cases) - set(CASES))}; choose from {', '.join(CASES)}")
    n = len(read_pairs(args.pairs, args.limit))
    machine = machine_info("cuda" if torch.cuda.is_available() else "cpu")  # at the start: the load average then
    work = Path(tempfile.mkdtemp(prefix="agentclone-bench-preference-"))
    try:
        rows = add_ratios([spawn_case(case, args, work) for case in cases])
    finally:
        if args.keep:
            print(f"adapters in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(table(
        f"One epoch of {n} pairs from {os.path.basename(args.pairs)}: {args.model}, {args.batch} pairs a step, "
        f"{machine['cpu_threads']} threads (ratios against sft in this run)",
        [("case", "case"), ("rows", "rows"), ("pairs", "pairs"), ("tokens fwd+bwd", "tokens_grad"),
         ("tokens fwd only", "tokens_forward_only"), ("train s", "train_s"), ("s / pair", "s_per_pair"),
         ("peak RSS GB", "peak_rss_gb"), ("s / pair vs sft", "s_per_pair_vs_sft"),
         ("tokens vs sft", "tokens_vs_sft"), ("error", "error")],
        rows,
    ))
    payload = {"benchmark": "preference_cost", "machine": machine,
               "settings": {k: v for k, v in vars(args).items() if k not in ("json", "worker", "work")},
               "results": rows}
    write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
