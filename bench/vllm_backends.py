"""The same TextCraft rollouts through the hf backend (generate and continuous engines), vLLM's
offline engine and a vLLM server.

    .venv-vllm/bin/python bench/vllm_backends.py --episodes 32 --json-out runs/bench/vllm_backends.json
    .venv-vllm/bin/python bench/vllm_backends.py --adapter runs/quickstart/adapter

For each backend it measures how long it takes to be ready (model load, engine
start, server start until healthy), then runs the same held-out episodes (the
quickstart recipe's environment and eval settings, greedy) and reports episodes
and steps per second, plus whether every episode took the same actions as the
hf backend. Prints a table and writes JSON. Needs vLLM: run it with
.venv-vllm/bin/python (scripts/setup_vllm_venv.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ENV = "textcraft/craft-v1"
# recipes/quickstart.yaml: env kwargs and eval settings
ENV_KWARGS = {"max_depth": 1, "heldout_fraction": 0.35, "num_distractors": 3, "max_steps": 10}


def rollouts(policy, episodes: int, concurrency: int):
    from agentclone.envs import make_env
    from agentclone.rollout import RolloutSettings, plan_episodes, run_rollouts

    probe = make_env(ENV, **ENV_KWARGS)
    tasks = probe.tasks("heldout")
    probe.close()
    plan = plan_episodes(tasks, episodes, seed=1000)
    settings = RolloutSettings(concurrency=concurrency, max_consecutive_invalid=3)
    t0 = time.perf_counter()
    res = run_rollouts(lambda: make_env(ENV, **ENV_KWARGS), policy, plan, settings, progress=False)
    wall = time.perf_counter() - t0
    by_id = {t.id: t for t in res.trajectories}
    return [by_id[e.id] for e in plan], wall


def measure(name: str, make, episodes: int, concurrency: int, reference=None) -> tuple[dict, list]:
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    policy = make()
    ready_s = time.perf_counter() - t0
    trajs, wall = rollouts(policy, episodes, concurrency)
    steps = sum(len(t.steps) for t in trajs)
    row = {
        "backend": name,
        "ready_s": round(ready_s, 1),
        "rollout_s": round(wall, 1),
        "episodes": len(trajs),
        "steps": steps,
        "episodes_per_s": round(len(trajs) / wall, 3),
        "steps_per_s": round(steps / wall, 3),
        "success_rate": round(sum(t.success for t in trajs) / len(trajs), 3),
        "load_avg_1m_before": round(load0, 1),
        "load_avg_1m_after": round(os.getloadavg()[0], 1),
    }
    if reference is not None:
        row["same_actions_as_hf"] = sum(
            [s.action for s in a.steps] == [s.action for s in b.steps] for a, b in zip(reference, trajs)
        )
    stats = getattr(policy, "stats", None)
    if stats:
        row.update({k: stats[k] for k in ("completion_tokens", "generate_rounds", "retries") if k in stats})
    policy.close()
    print(json.dumps(row), flush=True)
    return row, trajs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=32, help="held-out episodes per backend")
    ap.add_argument("--concurrency", type=int, default=32, help="episodes run at once")
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--adapter", default=None, help="LoRA adapter directory (default: the base model)")
    ap.add_argument("--backends", default="hf,hf-continuous,vllm,server",
                    help="comma list of hf, hf-continuous (the hf policy's continuous engine), vllm, server")
    ap.add_argument("--json-out", type=Path, default=Path("runs/bench/vllm_backends.json"))
    args = ap.parse_args()

    from agentclone.data import atomic_write_text
    from agentclone.policies.base import GenerationSettings, make_policy
    from agentclone.policies.vllm import shutdown_engines
    from agentclone.serving import VLLMServer

    gen = GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=0.0)
    common = dict(model=args.model, adapter=args.adapter, generation=gen)
    backends = args.backends.split(",")
    rows, reference = [], None
    if "hf" in backends:
        row, reference = measure("hf", lambda: make_policy("hf", batch_size=args.concurrency, **common),
                                 args.episodes, args.concurrency)
        rows.append(row)
    if "hf-continuous" in backends:
        row, _ = measure("hf, continuous engine",
                         lambda: make_policy("hf", batch_size=args.concurrency, engine="continuous", **common),
                         args.episodes, args.concurrency, reference)
        rows.append(row)
    if "vllm" in backends:
        row, _ = measure("vllm (offline engine)", lambda: make_policy("vllm", **common),
                         args.episodes, args.concurrency, reference)
        rows.append(row)
        shutdown_engines()  # free the cores and memory before the server starts
    if "server" in backends:
        adapters = {"adapter": args.adapter} if args.adapter else {}
        server = VLLMServer(args.model, adapters, port=0)

        def start_and_connect():
            server.start()
            return make_policy("openai", base_url=server.base_url, concurrency=args.concurrency, **common)

        try:
            row, _ = measure("vllm server (openai backend)", start_and_connect, args.episodes, args.concurrency,
                             reference)
            row["server_start_s"] = round(server.startup_s or 0.0, 1)
        finally:
            server.stop()
        rows.append(row)

    import torch
    import transformers
    import vllm

    result = {
        "rows": rows,
        "settings": {"env": ENV, "env_kwargs": ENV_KWARGS, "episodes": args.episodes, "concurrency": args.concurrency,
                     "max_new_tokens": args.max_new_tokens, "model": args.model, "adapter": args.adapter,
                     "dtype": "float32 on CPU"},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "transformers": transformers.__version__, "vllm": vllm.__version__},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.json_out, json.dumps(result, indent=2))
    cols = ["backend", "ready_s", "rollout_s", "episodes_per_s", "steps_per_s", "success_rate", "same_actions_as_hf",
            "load_avg_1m_before"]
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(str(row.get(c, "-")) for c in cols) + " |")
    print(f"\nwritten to {args.json_out}")


if __name__ == "__main__":  # vLLM's engine starts worker processes with spawn
    main()
