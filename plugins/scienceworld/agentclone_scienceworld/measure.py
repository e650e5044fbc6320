"""Replay ScienceWorld's gold path on task variations: the score and success it reaches, per task type.

    python -m agentclone_scienceworld.measure --variations 1
    python -m agentclone_scienceworld.measure --variations 3 --set test --tasks boil find-plant

For each task type, the first ``--variations`` variations of ``--set`` (train, dev or test): the
environment's expert (the gold path) acts from the start until the episode ends; the gold path should
reach the maximum score (100) and success on every one. Every row also counts the expert errors (the
gold path ran out, or the episode left it: a gold action the parser rejected) and invalid steps.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

from agentclone.envs import make_env
from agentclone_scienceworld.env import TASK_TYPES
from agentclone_scienceworld.pool import POOL


@dataclass
class TaskResult:
    task: str
    episodes: int = 0
    successes: int = 0
    scores: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    expert_errors: int = 0
    invalid: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def run_task(name: str, variations: int = 1, subset: str = "train", max_steps: int | None = None) -> TaskResult:
    options: dict = {"max_steps": max_steps}  # None: the environment's default (at least the gold path's length)
    if subset == "train":
        options["train_variations"] = variations
        split = "train"
    else:
        options.update(heldout_set=subset, heldout_variations=variations)
        split = "heldout"
    env = make_env(f"scienceworld/{name}-v1", **options)
    result = TaskResult(name)
    t0 = time.perf_counter()
    try:
        for task in env.tasks(split):
            env.reset(task)
            result.episodes += 1
            steps, info = 0, {}
            while True:
                try:
                    move = env.expert_action()
                except RuntimeError as exc:
                    result.expert_errors += 1
                    result.notes.append(f"{task.id}: {exc}")
                    break
                _, _, terminated, truncated, info = env.step(move.action)
                steps += 1
                if terminated or truncated:
                    break
            result.invalid += env.invalid_actions
            if info.get("success") is not True:
                result.notes.append(f"{task.id}: score {env.score} after {steps} steps "
                                    f"(gold path: {len(env.gold)} actions, step limit {env.max_steps})")
            result.scores.append(env.score)
            result.steps.append(steps)
            result.successes += int(bool(info.get("success")))
    finally:
        env.close()
    result.seconds = time.perf_counter() - t0
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variations", type=int, default=1, help="variations per task type (the first of the set)")
    parser.add_argument("--set", default="train", choices=["train", "dev", "test"], dest="subset")
    parser.add_argument("--tasks", nargs="*", default=list(TASK_TYPES), help="task names (default: all 30)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="step limit (default: the environment's, 100 or the gold path's length if longer)")
    args = parser.parse_args(argv)
    print(f"| task | variations ({args.subset}) | success | score (min / mean) | gold steps (mean) "
          "| expert errors | invalid steps | s |")
    print("|---|---|---|---|---|---|---|---|")
    try:
        for name in args.tasks:
            r = run_task(name, args.variations, args.subset, args.max_steps)
            mean_score = sum(r.scores) / len(r.scores) if r.scores else 0.0
            mean_steps = sum(r.steps) / len(r.steps) if r.steps else 0.0
            print(f"| {TASK_TYPES[name].task_id} {name} | {r.episodes} | {r.successes}/{r.episodes} "
                  f"| {min(r.scores, default=0)} / {mean_score:.0f} | {mean_steps:.1f} | {r.expert_errors} "
                  f"| {r.invalid} | {r.seconds:.1f} |", flush=True)
            for note in r.notes:
                print(f"  note: {note}", flush=True)
    finally:
        POOL.close()
    print(f"JVMs started: {POOL.started}, reused: {POOL.reused}")


if __name__ == "__main__":
    main()
