"""Training-set building: tokens to process with one sample per trajectory (agentclone's way)
against one sample per step (a growing prefix per step, the naive way), on expert demos.

    python bench/data_building.py --json-out runs/bench/data_building.json

Tokenization only (cheap). A trajectory of T turns is one sample of its full length L with
loss on every assistant turn; the naive way makes T samples, the k-th a prefix ending at
turn k with loss on its last turn, about (T + 1) / 2 times the tokens for turns of even
length. The ratio of tokens is what one epoch of training costs, each way.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    TEXTCRAFT_QUICKSTART, TEXTCRAFT_VARIED, expert_demos, machine_info, ratio, stats, table, write_json,
)


def per_trajectory_tokens(trajs, tokenizer, fmt) -> list[int]:
    """Token count of each training sample as agentclone builds them (one per trajectory)."""
    from agentclone.training import tokenize_trajectories

    return [len(ids) for ids in tokenize_trajectories(trajs, tokenizer, fmt)["input_ids"]]


def per_step_tokens(trajs, tokenizer, fmt) -> list[int]:
    """Token count of each sample of the naive way: one prefix per assistant turn that carries loss."""
    from agentclone.prompting import trajectory_messages

    out = []
    for traj in trajs:
        messages, loss = trajectory_messages(traj, fmt)
        for k, keep in enumerate(loss):
            if not keep:
                continue
            prefix = messages[: 2 + 2 * k + 1]  # system, then (user, assistant) pairs up to turn k
            out.append(len(tokenizer.apply_chat_template(prefix, tokenize=True, return_dict=True)["input_ids"]))
    return out


def measure(name: str, trajs, tokenizer, fmt) -> dict:
    per_trajectory_tokens(trajs[:1], tokenizer, fmt)  # warm-up: imports, template compilation
    per_step_tokens(trajs[:1], tokenizer, fmt)
    t0 = time.perf_counter()
    whole = per_trajectory_tokens(trajs, tokenizer, fmt)
    t1 = time.perf_counter()
    steps = per_step_tokens(trajs, tokenizer, fmt)
    t2 = time.perf_counter()
    turns = [len(t.steps) for t in trajs]
    mean_turns = sum(turns) / len(turns)
    return {
        "name": name,
        "trajectories": len(trajs),
        "mean_turns": mean_turns,
        "turns": stats(turns),
        "per_trajectory_samples": len(whole),
        "per_trajectory_tokens": sum(whole),
        "per_step_samples": len(steps),
        "per_step_tokens": sum(steps),
        "token_ratio": ratio(sum(whole), sum(steps)),
        "one_over_mean_turns": 1 / mean_turns,
        "tokenize_s_ratio": ratio(t1 - t0, t2 - t1),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m", help="whose tokenizer (random:SHAPE uses SmolLM2's)")
    p.add_argument("--tokenizer", default=None)
    p.add_argument("--env", default="auto", choices=["auto", "textcraft", "counter"])
    p.add_argument("--json-out", default=None)
    args = p.parse_args(argv)

    from agentclone.models import load_tokenizer, resolve_model
    from agentclone.prompting import ActionFormat
    from bench.common import textcraft_available
    from bench.shapes import find_tokenizer, is_random

    env = ("textcraft" if textcraft_available() else "counter") if args.env == "auto" else args.env
    path = find_tokenizer(args.tokenizer) if is_random(args.model) or args.tokenizer else resolve_model(args.model)
    tokenizer = load_tokenizer(path)
    fmt = ActionFormat()
    settings = (
        [("textcraft quickstart (depth 1)", TEXTCRAFT_QUICKSTART), ("textcraft depth 1-3", TEXTCRAFT_VARIED)]
        if env == "textcraft" else [("counter", {"max_steps": 30})]
    )
    rows = []
    for name, kwargs in settings:
        trajs = expert_demos(env, "train", **kwargs)
        rows.append({**measure(name, trajs, tokenizer, fmt), "env_kwargs": kwargs})
    print(table(
        "Training-set tokens: one sample per trajectory vs one sample per step (expert demos, train split)",
        [("demos", "name"), ("trajectories", "trajectories"), ("mean turns", "mean_turns"),
         ("per-trajectory tokens", "per_trajectory_tokens"), ("per-step samples", "per_step_samples"),
         ("per-step tokens", "per_step_tokens"), ("token ratio", "token_ratio"), ("1/mean turns", "one_over_mean_turns"),
         ("tokenize time ratio", "tokenize_s_ratio")],
        rows,
    ))
    payload = {"benchmark": "data_building", "machine": machine_info("cpu"), "tokenizer": path, "results": rows}
    write_json(args.json_out, payload)
    return payload


if __name__ == "__main__":
    main()
