"""Measure the BabyAI expert: success per level from the start and after random agent actions.

    python -m agentclone_babyai.measure --seeds 100 --random-actions 15

For each level, ``--seeds`` training seeds: the bot alone from the start; then the same seeds
with ``--random-actions`` uniformly random commands first (the agent leaving the bot's path:
turning, walking, picking up, dropping, toggling doors and boxes) and the bot taking over from
the state they reached. Episodes that end during the random actions are not counted in the
take-over rate. An expert error (the bot cannot act from a state) is a failure and is counted.
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import dataclass, field

from agentclone.envs import make_env
from agentclone_babyai.env import COMMANDS, LEVELS

RANDOM_COMMANDS = [c for c in COMMANDS if c != "done"]


@dataclass
class LevelResult:
    level: str
    episodes: int = 0  # episodes the expert played to the end (from the start or after the random actions)
    successes: int = 0
    expert_errors: int = 0
    ended_before_takeover: int = 0  # episodes the random actions ended (not counted)
    steps: list[int] = field(default_factory=list)  # expert steps of each success
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0


def run_level(level: str, seeds: int, random_actions: int = 0, first_seed: int = 0) -> LevelResult:
    env = make_env(f"babyai/{level}-v1", train_seeds=first_seed + seeds)
    result = LevelResult(level)
    t0 = time.perf_counter()
    for task in env.tasks("train")[first_seed:]:
        env.reset(task)
        rng = random.Random(task.id)
        ended = False
        for _ in range(random_actions):
            _, _, terminated, truncated, _ = env.step(rng.choice(RANDOM_COMMANDS))
            if terminated or truncated:
                ended = True
                break
        if ended:
            result.ended_before_takeover += 1
            continue
        result.episodes += 1
        steps = 0
        while True:
            try:
                move = env.expert_action()
            except RuntimeError:
                result.expert_errors += 1
                break
            _, _, terminated, truncated, info = env.step(move.action)
            steps += 1
            if terminated or truncated:
                if info.get("success"):
                    result.successes += 1
                    result.steps.append(steps)
                break
    env.close()
    result.seconds = time.perf_counter() - t0
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--random-actions", type=int, default=15)
    parser.add_argument("--levels", nargs="*", default=list(LEVELS))
    args = parser.parse_args(argv)
    print("| level | expert from the start | mean steps | after "
          f"{args.random_actions} random actions | expert errors | s |")
    print("|---|---|---|---|---|---|")
    for level in args.levels:
        start = run_level(level, args.seeds)
        off = run_level(level, args.seeds, args.random_actions)
        mean = sum(start.steps) / len(start.steps) if start.steps else 0.0
        print(f"| {level} | {start.successes}/{start.episodes} | {mean:.1f} | {off.successes}/{off.episodes} "
              f"| {start.expert_errors} / {off.expert_errors} | {start.seconds + off.seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
