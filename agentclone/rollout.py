"""The rollout engine: many episodes at once, one batched policy call per step.

Each concurrent slot owns one environment instance. At every step the prompt
of every live episode goes into one ``policy.act`` call; each trajectory is
appended to the output file the moment its episode ends, so a killed run keeps
everything finished and a rerun skips the episodes already written.
"""

from __future__ import annotations

import random
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from agentclone.data import Step, Task, Trajectory, TrajectoryWriter, iter_trajectories
from agentclone.envs import TextEnv
from agentclone.policies.base import Policy, PolicyRequest
from agentclone.prompting import ParseError, build_prompt


@dataclass
class Episode:
    """One episode to run: a task and a repetition index (stable id ``task#rep``)."""

    task: Task
    rep: int = 0
    seed: int = 0

    @property
    def id(self) -> str:
        return f"{self.task.env_id}:{self.task.id}#{self.rep}"


def plan_episodes(tasks: list[Task], n: int | None, seed: int = 0, shuffle: bool = True) -> list[Episode]:
    """``n`` episodes over ``tasks`` (all of them once when ``n`` is None), cycling with new repetitions."""
    if not tasks:
        raise ValueError("no tasks to run (is the split empty, or the filter too strict?)")
    order = list(tasks)
    if shuffle:
        random.Random(seed).shuffle(order)
    n = len(order) if n is None else n
    return [Episode(task=order[i % len(order)], rep=i // len(order), seed=seed + i) for i in range(n)]


@dataclass
class RolloutSettings:
    concurrency: int = 16
    max_prompt_tokens: int = 1536
    #: stop an episode after this many invalid actions in a row (None: never)
    max_consecutive_invalid: int | None = None
    #: an environment reset or step that takes longer errors its episode (None: wait forever)
    step_timeout_s: float | None = 120.0
    #: observations longer than this are cut, with a visible marker
    max_observation_chars: int = 4000
    #: raw model answers kept in trajectories are cut to this length
    max_answer_chars: int = 2000


class StepTimeout(TimeoutError):
    pass


def _run_threads(calls: list, timeout: float | None) -> list:
    """Run callables concurrently in daemon threads; each result is a value, an exception, or StepTimeout.

    Environments wait on browsers and interpreters, so stepping them at once
    overlaps their waits; daemon threads mean a hung environment cannot keep
    the process alive at exit.
    """
    results: list = [None] * len(calls)
    done = [False] * len(calls)

    def work(i, fn):
        try:
            results[i] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported per episode
            results[i] = exc
        done[i] = True

    if len(calls) == 1 and timeout is None:
        work(0, calls[0])
        return results
    threads = [threading.Thread(target=work, args=(i, fn), daemon=True) for i, fn in enumerate(calls)]
    for t in threads:
        t.start()
    deadline = None if timeout is None else time.perf_counter() + timeout
    for i, t in enumerate(threads):
        t.join(None if deadline is None else max(0.0, deadline - time.perf_counter()))
        if not done[i]:
            results[i] = StepTimeout(f"no answer from the environment within {timeout:g}s")
    return results


def truncate_text(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    return f"{text[:limit]}\n[... {cut} more characters cut]"


@dataclass
class _Live:
    episode: Episode
    env: TextEnv
    traj: Trajectory
    observation: str
    started: float
    env_s: float = 0.0
    policy_s: float = 0.0
    invalid_run: int = 0


@dataclass
class RolloutResult:
    trajectories: list[Trajectory] = field(default_factory=list)
    skipped: int = 0  # already present in the output file (resume)
    wall_s: float = 0.0
    env_s: float = 0.0
    policy_s: float = 0.0

    @property
    def success_rate(self) -> float:
        return sum(t.success for t in self.trajectories) / max(1, len(self.trajectories))


def completed_ids(path: str | Path) -> set[str]:
    path = Path(path)
    if not path.exists():
        return set()
    return {t.id for t in iter_trajectories(path)}


def run_rollouts(
    make_env: Callable[[], TextEnv],
    policy: Policy,
    episodes: Iterable[Episode],
    settings: RolloutSettings | None = None,
    output: str | Path | None = None,
    policy_label: str | None = None,
    env_kwargs: dict | None = None,
    progress: bool = True,
    description: str = "rollouts",
) -> RolloutResult:
    """Run ``episodes`` with ``policy``; append each finished trajectory to ``output``."""
    settings = settings or RolloutSettings()
    episodes = list(episodes)
    result = RolloutResult()
    done_ids = completed_ids(output) if output else set()
    todo = [e for e in episodes if e.id not in done_ids]
    result.skipped = len(episodes) - len(todo)
    writer = TrajectoryWriter(output) if output else None
    envs: list[TextEnv] = []
    live: list[_Live] = []
    queue = list(reversed(todo))
    start = time.perf_counter()
    bar = _Progress(len(todo), description, enabled=progress)

    def finish(slot: _Live, error: str | None = None) -> None:
        t = slot.traj
        t.error = error
        t.timings = {
            "wall_s": round(time.perf_counter() - slot.started, 4),
            "env_s": round(slot.env_s, 4),
            "policy_s": round(slot.policy_s, 4),
        }
        t.final_observation = slot.observation
        result.trajectories.append(t)
        result.env_s += slot.env_s
        result.policy_s += slot.policy_s
        if writer:
            writer.write(t)
        bar.advance(t.success)

    def start_next(env: TextEnv) -> _Live | None:
        while queue:
            ep = queue.pop()
            traj = Trajectory(
                id=ep.id,
                env_id=ep.task.env_id,
                task_id=ep.task.id,
                split=ep.task.split,
                task_kind=ep.task.kind,
                env_kwargs=env_kwargs or {},
                policy=policy_label or policy.name,
                model=policy.model_id,
                seed=ep.seed,
                instructions=env.instructions,
            )
            t0 = time.perf_counter()
            slot = _Live(episode=ep, env=env, traj=traj, observation="", started=t0)
            obs = _run_threads([lambda: env.reset(ep.task)], settings.step_timeout_s)[0]
            slot.env_s = time.perf_counter() - t0
            if isinstance(obs, BaseException):  # a crash inside one episode must not stop the others
                finish(slot, error=f"reset failed: {type(obs).__name__}: {obs}")
                if isinstance(obs, StepTimeout):
                    env = replace_env(env)
                continue
            slot.observation = truncate_text(str(obs), settings.max_observation_chars)
            return slot
        return None

    def replace_env(env: TextEnv) -> TextEnv:
        """A hung environment is abandoned (its thread is a daemon) and a fresh one takes its slot."""
        fresh = make_env()
        envs[envs.index(env)] = fresh
        # close it in the background: its resources (a browser) go, and a close that hangs too blocks nothing
        threading.Thread(target=env.close, daemon=True).start()
        return fresh

    try:
        for _ in range(min(settings.concurrency, len(todo))):
            env = make_env()
            envs.append(env)
            slot = start_next(env)
            if slot:
                live.append(slot)
        while live:
            requests = [
                PolicyRequest(
                    messages=build_prompt(
                        s.traj.instructions,
                        s.traj.steps,
                        s.observation,
                        policy.fmt,
                        policy.count_tokens,
                        settings.max_prompt_tokens,
                    ),
                    env=s.env if policy.needs_env else None,
                    episode_id=s.episode.id,
                )
                for s in live
            ]
            t0 = time.perf_counter()
            try:
                answers = policy.act(requests)
            except Exception as exc:
                if policy.needs_env and len(live) > 1:
                    # find the episode whose privileged expert failed; isolate it
                    answers = []
                    for req in requests:
                        try:
                            answers.append(policy.act([req])[0])
                        except Exception as inner:
                            answers.append(inner)
                else:
                    raise RuntimeError(f"the policy failed: {type(exc).__name__}: {exc}") from exc
            share = (time.perf_counter() - t0) / len(live)
            for slot in live:
                slot.policy_s += share
            outcomes = _advance_all(live, answers, policy, settings)
            still: list[_Live] = []
            for slot, (ended, error) in zip(live, outcomes):
                if not ended:
                    still.append(slot)
                    continue
                finish(slot, error=error)
                env = replace_env(slot.env) if error and "StepTimeout" in error else slot.env
                nxt = start_next(env)
                if nxt:
                    still.append(nxt)
            live = still
    finally:
        bar.close()
        for env in envs:
            try:
                env.close()
            except Exception:
                pass
        if writer:
            writer.close()
    result.wall_s = time.perf_counter() - start
    return result


def _advance_all(
    live: list[_Live], answers: list, policy: Policy, settings: RolloutSettings
) -> list[tuple[bool, str | None]]:
    """Parse every answer, step every environment at once, record the steps; (ended, error) per slot."""
    parsed: list[tuple[str | None, str, str | None]] = []  # thought, action, parse error
    calls = []
    for slot, answer in zip(live, answers):
        if isinstance(answer, BaseException):
            parsed.append((None, "", None))
            calls.append(lambda a=answer: a)
            continue
        try:
            thought, action = policy.fmt.parse(answer)
            parsed.append((thought, action, None))
            calls.append(lambda env=slot.env, a=action: env.step(a))
        except ParseError as exc:
            parsed.append((None, "", str(exc)))
            calls.append(lambda env=slot.env, r=str(exc): env.reject(r))
    t0 = time.perf_counter()
    results = _run_threads(calls, settings.step_timeout_s)
    env_share = (time.perf_counter() - t0) / max(1, len(live))
    outcomes = []
    for slot, answer, (thought, action, _), result in zip(live, answers, parsed, results):
        slot.env_s += env_share
        if isinstance(answer, BaseException):
            outcomes.append((True, f"policy failed: {type(answer).__name__}: {answer}"))
            continue
        if isinstance(result, BaseException):
            detail = "".join(traceback.format_exception(result, limit=-3)) if not isinstance(result, StepTimeout) else ""
            outcomes.append((True, f"environment failed: {type(result).__name__}: {result}\n{detail}".strip()))
            continue
        outcomes.append(_record(slot, answer, thought, action, result, policy, settings))
    return outcomes


def _record(slot: _Live, answer: str, thought: str | None, action: str, result: tuple, policy: Policy,
            settings: RolloutSettings) -> tuple[bool, str | None]:
    obs, reward, terminated, truncated, info = result
    traj = slot.traj
    invalid = bool(info.get("invalid"))
    slot.invalid_run = slot.invalid_run + 1 if invalid else 0
    if (
        settings.max_consecutive_invalid is not None
        and slot.invalid_run >= settings.max_consecutive_invalid
        and not terminated
    ):
        truncated = True
        info = {**info, "stopped": f"{slot.invalid_run} invalid actions in a row"}
    traj.steps.append(
        Step(
            observation=slot.observation,
            thought=thought,
            action=action,
            raw_output=None if policy.needs_env else truncate_text(answer, settings.max_answer_chars),
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            invalid=invalid,
            info=info,
        )
    )
    traj.return_ += reward
    slot.observation = truncate_text(str(obs), settings.max_observation_chars)
    if terminated or truncated:
        traj.terminated, traj.truncated = terminated, truncated
        traj.success = bool(info.get("success", terminated and reward > 0))
        return True, None
    return False, None


class _Progress:
    """A rich progress bar: episodes done, success so far, episodes per second."""

    def __init__(self, total: int, description: str, enabled: bool = True) -> None:
        self.done = 0
        self.success = 0
        self.start = time.perf_counter()
        self.progress = None
        if not enabled or total == 0:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("success {task.fields[rate]}"),
            TextColumn("{task.fields[eps]} ep/s"),
            TimeElapsedColumn(),
            transient=False,
        )
        self.task = self.progress.add_task(description, total=total, rate="-", eps="-")
        self.progress.start()

    def advance(self, success: bool) -> None:
        self.done += 1
        self.success += int(success)
        if self.progress is None:
            return
        elapsed = max(1e-9, time.perf_counter() - self.start)
        self.progress.update(
            self.task,
            advance=1,
            rate=f"{self.success / self.done:.0%}",
            eps=f"{self.done / elapsed:.2f}",
        )

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
