"""The ``hf`` policy's two engines on long conversations: seconds per rollout turn as the context grows.

    OMP_NUM_THREADS=1 python bench/long_context.py --lengths 250,1000,2000 --concurrency 1,10

For each context length L and concurrency N it builds N different conversations of about L tokens (the
system prompt and then distinct random text, so nothing but the system prompt is a shared prefix), and
times one rollout turn the way an episode's later steps are: the conversations are answered once (the
first turn, which also fills the ``continuous`` engine's prefix cache), each answer is appended with a new
observation of about 60 tokens, and the second turn is timed. Same model, same prompts, greedy, for the
``generate`` engine (length-sorted left-padded batches) and the ``continuous`` engine (paged KV cache,
prefixes shared). The ratio column is continuous over generate, measured in this run.

Why it exists: a BabyAI evaluation (10 concurrent episodes, contexts growing to about 2,000 tokens) took
over a minute a turn on the continuous engine, and transformers' SDPA path for the paged cache attends
from every new token of a forward pass to every cached token of every request in it (one flattened batch
and a block mask), so its cost per turn could grow with concurrency x context. This measures whether the
continuous engine is then slower than plain ``generate`` (results in docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine_info, ratio, setup_threads, table, write_json  # noqa: E402

SYSTEM = "You are an agent in a text world. Answer with one line: `Action: <command>`."


def words(rng: random.Random, tokenizer, tokens: int) -> str:
    """Random lowercase words of about ``tokens`` tokens."""
    vocab = ["red", "ball", "door", "key", "left", "right", "ahead", "wall", "box", "green", "step", "room",
             "blue", "grey", "open", "closed", "purple", "yellow", "carry", "front"]
    text = ""
    while len(tokenizer(text, add_special_tokens=False)["input_ids"]) < tokens:
        text += " ".join(rng.choice(vocab) for _ in range(50)) + ". "
    return text


def turn_seconds(policy, conversations: list[list[dict]], follow_ups: list[str]) -> tuple[float, int]:
    """Answer the conversations (first turn, untimed), append the answers and a new observation, and time
    the second turn; the second turn's prompt tokens."""
    from agentclone.policies.base import PolicyRequest

    first = policy.act([PolicyRequest(messages=m) for m in conversations])
    second = [m + [{"role": "assistant", "content": a}, {"role": "user", "content": f}]
              for m, a, f in zip(conversations, first, follow_ups)]
    requests = [PolicyRequest(messages=m) for m in second]
    tokens = sum(len(x) for x in policy.tokenizer(policy._prompts(requests), add_special_tokens=False)["input_ids"])
    t0 = time.perf_counter()
    policy.act(requests)
    return time.perf_counter() - t0, tokens


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--lengths", default="250,1000,2000", help="comma-separated context lengths in tokens")
    p.add_argument("--concurrency", default="1,10", help="comma-separated numbers of conversations")
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json-out", default=None)
    args = p.parse_args()
    setup_threads(args.threads)

    from agentclone.policies.hf import HFPolicy

    lengths = [int(x) for x in args.lengths.split(",")]
    concurrency = [int(x) for x in args.concurrency.split(",")]
    gen = {"max_new_tokens": args.max_new_tokens, "temperature": 0.0}
    policies = {engine: HFPolicy(model=args.model, engine=engine, generation=gen, batch_size=max(concurrency),
                                 device="cpu", stop_at_action=False)
                for engine in ("generate", "continuous")}
    rows = []
    for n in concurrency:
        for length in lengths:
            rng = random.Random(length * 1000 + n)
            tok = policies["generate"].tokenizer
            conversations = [[{"role": "system", "content": SYSTEM},
                              {"role": "user", "content": words(rng, tok, length)}] for _ in range(n)]
            follow_ups = [words(rng, tok, 60) for _ in range(n)]
            row = {"concurrency": n, "context_tokens": length}
            for engine, policy in policies.items():
                if engine == "continuous" and policy._continuous is not None:
                    policy._continuous.close()  # an empty cache for every setting: only its own prefixes shared
                    policy._continuous = None
                seconds, tokens = turn_seconds(policy, conversations, follow_ups)
                row[f"{engine}_s"] = round(seconds, 2)
                row["prompt_tokens"] = tokens
            row["continuous_vs_generate"] = ratio(row["continuous_s"], row["generate_s"])
            print(row, flush=True)
            rows.append(row)
    for policy in policies.values():
        policy.close()
    print(table("seconds for the second turn of N conversations (lower is better)",
                [("N", "concurrency"), ("context", "context_tokens"), ("prompt tokens", "prompt_tokens"),
                 ("generate s", "generate_s"), ("continuous s", "continuous_s"),
                 ("continuous / generate", "continuous_vs_generate")], rows))
    write_json(args.json_out, {"machine": machine_info("cpu"), "rows": rows})


if __name__ == "__main__":
    main()
