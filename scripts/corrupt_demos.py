"""Corrupt a fraction of TextCraft expert demonstrations, for the data-quality experiment (issue #21).

    python scripts/corrupt_demos.py demos.jsonl --fraction 0.2 --mode random-valid --seed 0 --output bad.jsonl

``--fraction`` of the trajectories (rounded, chosen with ``--seed``) get wrong action labels at every
step; observations, success and return stay as they were, so the corruption is label noise that
success-based filtering cannot see:

- ``random-valid``: each step's action becomes one the game accepts from that step's state (replayed
  in the environment): a crafting command the task shows whose ingredients are in the inventory, a
  ``get`` of a base ingredient it lists, or ``inventory``; never the demonstrated action (a step with
  no other valid action keeps its own). The thought is removed (the expert's would explain the old action).
- ``other-goal``: step i takes the action and thought of step i of a demonstration of another goal
  (the last step of a shorter one).

Next to OUTPUT, ``OUTPUT.corruption.json`` lists the corrupted trajectory ids and counts. The output
is written atomically.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from agentclone.data import Trajectory, atomic_write_text, normalize_action, read_trajectories, write_trajectories

MODES = ("random-valid", "other-goal")


def candidate_actions(traj: Trajectory) -> list[str]:
    """The well-formed commands of a TextCraft task: the crafting commands its first observation shows,
    a ``get`` of each ingredient they list, and ``inventory``."""
    first = traj.steps[0].observation if traj.steps else ""
    crafts = [line.strip() for line in first.splitlines() if line.strip().lower().startswith("craft ")]
    gets = []
    for command in crafts:
        _, _, inputs = command.partition(" using ")
        for part in inputs.split(","):
            part = part.strip()
            if part and part.split(" ", 1)[0].isdigit():
                gets.append(f"get {part}")
    return list(dict.fromkeys(crafts + gets + ["inventory"]))


class Replayer:
    """Reach a trajectory's states in a fresh TextCraft environment and ask which actions it accepts."""

    def __init__(self, traj: Trajectory) -> None:
        from agentclone.envs import make_env

        self.env = make_env(traj.env_id, **traj.env_kwargs)
        tasks = {t.id: t for t in self.env.tasks(traj.split)}
        if traj.task_id not in tasks:
            raise ValueError(f"trajectory {traj.id}: task {traj.task_id!r} is not in {traj.env_id} "
                             f"split {traj.split!r}")
        self.task = tasks[traj.task_id]
        self.traj = traj

    def accepts(self, step_index: int, action: str) -> bool:
        self.env.reset(self.task)
        for step in self.traj.steps[:step_index]:
            self.env.step(step.action)
        _, _, _, _, info = self.env.step(action)
        return not info.get("invalid")

    def close(self) -> None:
        self.env.close()


def corrupt(trajs: list[Trajectory], fraction: float, mode: str, seed: int = 0) -> tuple[list[Trajectory], dict]:
    """(the trajectories with ``fraction`` of them corrupted, what was done)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be between 0 and 1, got {fraction}")
    rng = random.Random(seed)
    eligible = [i for i, t in enumerate(trajs) if t.steps]
    chosen = sorted(rng.sample(eligible, round(fraction * len(eligible))))
    out = list(trajs)
    changed_steps = 0
    for i in chosen:
        traj = trajs[i].model_copy(deep=True)
        if mode == "random-valid":
            replay = Replayer(trajs[i])
            try:
                options = candidate_actions(traj)
                for k, step in enumerate(traj.steps):
                    own = normalize_action(step.action)
                    valid = [a for a in options if normalize_action(a) != own and replay.accepts(k, a)]
                    if valid:
                        step.action, step.thought = rng.choice(valid), None
                        changed_steps += 1
            finally:
                replay.close()
        else:
            others = [t for t in trajs if t.task_id != traj.task_id and t.steps]
            if not others:
                raise ValueError("other-goal needs demonstrations of at least two goals")
            other = rng.choice(others)
            for k, step in enumerate(traj.steps):
                source = other.steps[min(k, len(other.steps) - 1)]
                changed_steps += normalize_action(source.action) != normalize_action(step.action)
                step.action, step.thought = source.action, source.thought
        out[i] = traj
    info = {"mode": mode, "fraction": fraction, "seed": seed, "trajectories": len(trajs),
            "corrupted": len(chosen), "corrupted_ids": [trajs[i].id for i in chosen], "steps_changed": changed_steps}
    return out, info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path, help="expert demonstrations (JSONL)")
    parser.add_argument("--fraction", type=float, default=0.2, help="share of trajectories to corrupt")
    parser.add_argument("--mode", choices=MODES, default="random-valid")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        trajs = read_trajectories(args.input)
        out, info = corrupt(trajs, args.fraction, args.mode, args.seed)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_trajectories(args.output, out)
    atomic_write_text(args.output.with_name(args.output.name + ".corruption.json"),
                      json.dumps({"input": str(args.input), **info}, indent=2))
    print(f"corrupted {info['corrupted']}/{info['trajectories']} trajectories ({info['steps_changed']} steps, "
          f"{args.mode}) -> {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
