"""Critics shared by builders and selectors: replaying a recorded trajectory in its environment and
finding its first bad step with the environment's privileged expert."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from agentclone.data import Step, Task, Trajectory
from agentclone.envs import TextEnv, make_env


class ReplayMismatch(Exception):
    """Replaying a trajectory's actions did not reproduce its recorded observations."""


@dataclass
class Verdict:
    """The first bad step of a trajectory (None: none found) and why it is bad."""

    index: int | None
    why: str = ""


# -- replay --------------------------------------------------------------------------------------


def find_task(env: TextEnv, traj: Trajectory) -> Task:
    """The trajectory's task, rebuilt from the environment's task list by id."""
    splits = [traj.split] + [s for s in ("train", "heldout") if s != traj.split]
    for split in splits:
        for task in env.tasks(split):
            if task.id == traj.task_id:
                return task
    raise ReplayMismatch(f"task {traj.task_id!r} is not in the environment's task lists")


def _same(recorded: str, actual: str) -> bool:
    if recorded == actual:
        return True
    # the rollout engine cuts long observations and says so; compare the part it kept
    m = re.search(r"\n\[\.\.\. \d+ more characters cut\]$", recorded)
    return bool(m) and actual.startswith(recorded[: m.start()])


def _recorded_after(traj: Trajectory, i: int) -> str | None:
    """The observation recorded after step ``i``."""
    return traj.steps[i + 1].observation if i + 1 < len(traj.steps) else traj.final_observation


def _apply(env: TextEnv, step: Step, recorded_next: str | None):
    if step.info.get("parse_error"):  # the answer was no action at all: the engine called reject()
        reason = (recorded_next or "").removeprefix("Invalid action: ")
        return env.reject(reason)
    return env.step(step.action)


def replay(traj: Trajectory, upto: int, env: TextEnv | None = None) -> tuple[TextEnv, list[float | None]]:
    """A fresh environment in the state after ``traj.steps[:upto]``, and the expert's distance to
    the goal before each replayed step and after the last (``upto + 1`` values).

    Raises ReplayMismatch when an observation differs from the recorded one.
    """
    env = env or make_env(traj.env_id, **traj.env_kwargs)
    try:
        task = find_task(env, traj)
        obs = env.reset(task)
        if traj.steps and not _same(traj.steps[0].observation, obs):
            raise ReplayMismatch("first observation differs")
        dist = [env.distance_to_goal()]
        for i in range(upto):
            step = traj.steps[i]
            recorded = _recorded_after(traj, i)
            obs, _, _, _, _ = _apply(env, step, recorded)
            if recorded is not None and not _same(recorded, str(obs)):
                raise ReplayMismatch(f"observation after step {i + 1} differs")
            dist.append(env.distance_to_goal())
    except BaseException:
        env.close()
        raise
    return env, dist


# -- critics -------------------------------------------------------------------------------------


def _first_line(text: str, limit: int = 120) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    line = line.removeprefix("Invalid action: ").rstrip(".")
    return line if len(line) <= limit else line[:limit] + "..."


def expert_first_bad_step(traj: Trajectory, stall_is_bad: bool = True) -> Verdict:
    """The first step the privileged expert calls bad: invalid, or no closer to the goal.

    Raises ReplayMismatch when the trajectory cannot be replayed.
    """
    env, dist = replay(traj, len(traj.steps))
    env.close()
    for i, step in enumerate(traj.steps):
        after = _recorded_after(traj, i) or ""
        if step.invalid:
            return Verdict(i, f"the action was invalid ({_first_line(after)})")
        before, now = dist[i], dist[i + 1]
        if step.terminated and step.reward > 0:
            return Verdict(None)
        if before is None or now is None:
            continue
        if math.isinf(now) and not math.isinf(before):
            return Verdict(i, f"`{step.action}` made the goal unreachable")
        if now > before:
            return Verdict(i, f"`{step.action}` took me further from the goal")
        if stall_is_bad and now >= before and before > 0:
            return Verdict(i, f"`{step.action}` did not bring me closer to the goal")
    return Verdict(None)


