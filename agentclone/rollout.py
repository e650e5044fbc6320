"""The rollout engine: many episodes at once, one batched policy call per step.

Each concurrent slot owns one environment instance. At every step the prompt
of every live episode goes into one ``policy.act`` call; each trajectory is
appended to the output file the moment its episode ends, so a killed run keeps
everything finished and a rerun skips the episodes already written (and runs
again those whose record ended in an error: the new record is appended, and
``agentclone.data.latest_per_id`` keeps the newest record of each episode).

A failure is its episode's alone: an environment that crashes or hangs, or a
policy that fails on a request (a batch that fails is retried one request at a
time), ends that episode with ``Trajectory.error`` set; the others go on.

With ``RolloutSettings.expert_labels`` the environment's privileged expert labels
every state the agent reaches with the action it would take there
(``Step.expert``), for DAgger-style training on the agent's own states; with
``expert_beta`` the expert's action is executed instead of the agent's with that
probability at each step (drawn per episode seed and step, so reruns agree).
"""

from __future__ import annotations

import random
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from agentclone.data import (
    ExpertLabel,
    Step,
    Task,
    Trajectory,
    TrajectoryWriter,
    iter_trajectories,
    latest_per_id,
)
from agentclone.envs import ExpertAction, TextEnv
from agentclone.policies.base import Policy, PolicyRequest, derive_seed
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
    #: label every state of a (non-expert) policy's episode with the environment expert's action
    #: there (``Step.expert``), asked before the agent's action is executed
    expert_labels: bool = False
    #: with ``expert_labels``: the probability that the expert's action is executed instead of the
    #: agent's at a step (DAgger's beta); drawn from ``random.Random(f"{episode.seed}:{step}")``
    expert_beta: float = 0.0

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise ValueError for settings that contradict each other (run_rollouts checks again)."""
        if not 0.0 <= self.expert_beta <= 1.0:
            raise ValueError(f"expert_beta must be between 0 and 1, got {self.expert_beta}")
        if self.expert_beta > 0 and not self.expert_labels:
            raise ValueError("expert_beta needs expert_labels: the expert's action is executed from its label")


def step_seed(episode_seed: int, step_index: int) -> int:
    """The sampling seed of an episode's answer at ``step_index`` (``PolicyRequest.seed``): the same in a
    resumed, sharded or uninterrupted collection, and different for every episode and step."""
    return derive_seed(episode_seed, step_index)


def expert_turn(episode_seed: int, step_index: int, beta: float) -> bool:
    """Does the expert act at this step (probability ``beta``, fixed per episode seed and step)?"""
    return beta > 0 and random.Random(f"{episode_seed}:{step_index}").random() < beta


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
    expert_labels: int = 0  # states labelled with the expert's action (expert_labels)
    expert_label_errors: int = 0  # states where the expert failed or timed out (labelled with the error)
    expert_steps: int = 0  # steps where the expert's action was executed (expert_beta)

    @property
    def success_rate(self) -> float:
        return sum(t.success for t in self.trajectories) / max(1, len(self.trajectories))


def completed_ids(path: str | Path) -> set[str]:
    """Episode ids whose newest record in ``path`` ended without an error: a rerun skips them, and runs
    again every episode whose record holds an error (a crash, a hang, a failed model call)."""
    path = Path(path)
    if not path.exists():
        return set()
    return {t.id for t in latest_per_id(iter_trajectories(path)) if t.error is None}


def rank_part(output: str | Path, rank: int) -> Path:
    """The file process ``rank`` of a collection split across processes writes: ``.NAME.partRANK`` beside
    ``output``, merged into it by ``merge_rank_parts``."""
    output = Path(output)
    return output.with_name(f".{output.name}.part{rank}")


def merge_rank_parts(output: str | Path) -> int:
    """Append the episodes of ``output``'s part files (``rank_part``) to ``output``, then remove the parts;
    the number of episodes moved. Also what a run killed before its merge left behind."""
    output = Path(output)
    prefix = f".{output.name}.part"
    parts = sorted((p for p in output.parent.glob(prefix + "*") if p.name[len(prefix):].isdigit()),
                   key=lambda p: int(p.name[len(prefix):]))
    trajs = [traj for part in parts for traj in iter_trajectories(part)]
    if trajs:
        with TrajectoryWriter(output) as writer:
            for traj in trajs:
                writer.write(traj)
    for part in parts:
        part.unlink()
    return len(trajs)


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
    settings.check()
    labelling = settings.expert_labels and not policy.needs_env  # the expert needs no labels of its own
    episodes = list(episodes)
    result = RolloutResult()
    # the writer locks the file first: a second process collecting into it stops here, before reading it
    writer = TrajectoryWriter(output) if output else None
    try:
        done_ids = completed_ids(output) if output else set()
    except BaseException:
        if writer:
            writer.close()
        raise
    todo = [e for e in episodes if e.id not in done_ids]
    result.skipped = len(episodes) - len(todo)
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
                    seed=step_seed(s.episode.seed, len(s.traj.steps)),
                )
                for s in live
            ]
            t0 = time.perf_counter()
            answers = _act_isolated(policy, requests)
            share = (time.perf_counter() - t0) / len(live)
            for slot in live:
                slot.policy_s += share
            labels = _expert_labels(live, answers, settings, result) if labelling else [None] * len(live)
            outcomes = _advance_all(live, answers, labels, policy, settings, result)
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


def _act_isolated(policy: Policy, requests: list[PolicyRequest]) -> list:
    """The policy's answers; where it fails, the exception in place of the answer.

    A batch that fails (or answers the wrong number of texts) is retried one request at a time, so
    a request the model cannot answer (too long a prompt, a server's refusal, the expert failing in
    one state) errors its own episode only.
    """
    try:
        answers = list(policy.act(requests))
        if len(answers) != len(requests):
            raise RuntimeError(f"the policy gave {len(answers)} answers to {len(requests)} requests")
        return answers
    except Exception as exc:
        if len(requests) == 1:
            return [exc]
    answers = []
    for request in requests:
        try:
            one = list(policy.act([request]))
            if len(one) != 1:
                raise RuntimeError(f"the policy gave {len(one)} answers to 1 request")
            answers.append(one[0])
        except Exception as exc:
            answers.append(exc)
    return answers


def _expert_labels(live: list[_Live], answers: list, settings: RolloutSettings,
                   result: RolloutResult) -> list[ExpertLabel | None]:
    """Ask each live episode's expert for its action from the current state (before the agent's action
    is executed), all environments at once; a failure or a timeout becomes the label's ``error``."""
    calls = [
        (lambda a=answer: None) if isinstance(answer, BaseException) else (lambda env=slot.env: env.expert_action())
        for slot, answer in zip(live, answers)
    ]
    t0 = time.perf_counter()
    moves = _run_threads(calls, settings.step_timeout_s)
    share = (time.perf_counter() - t0) / max(1, len(live))
    labels: list[ExpertLabel | None] = []
    for slot, answer, move in zip(live, answers, moves):
        slot.env_s += share
        if isinstance(answer, BaseException):  # the episode ends on the policy's failure: no state to label
            labels.append(None)
        elif isinstance(move, BaseException):
            labels.append(ExpertLabel(error=f"{type(move).__name__}: {move}"[:500]))
            result.expert_label_errors += 1
        elif not isinstance(move, ExpertAction) or not isinstance(move.action, str) or not move.action.strip():
            labels.append(ExpertLabel(error=f"the expert gave no action ({move!r})"[:500]))
            result.expert_label_errors += 1
        else:
            labels.append(ExpertLabel(action=move.action, thought=move.thought))
            result.expert_labels += 1
    return labels


def _advance_all(
    live: list[_Live], answers: list, labels: list[ExpertLabel | None], policy: Policy, settings: RolloutSettings,
    result: RolloutResult,
) -> list[tuple[bool, str | None]]:
    """Parse every answer, step every environment at once, record the steps; (ended, error) per slot."""
    parsed: list[tuple[str | None, str, str | None, bool]] = []  # thought, action, parse error, by the expert
    calls = []
    for slot, answer, label in zip(live, answers, labels):
        if isinstance(answer, BaseException):
            parsed.append((None, "", None, False))
            calls.append(lambda a=answer: a)
            continue
        if (
            label is not None
            and label.action is not None
            and expert_turn(slot.episode.seed, len(slot.traj.steps), settings.expert_beta)
        ):
            parsed.append((label.thought, label.action, None, True))
            calls.append(lambda env=slot.env, a=label.action: env.step(a))
            continue
        try:
            thought, action = policy.fmt.parse(answer)
            parsed.append((thought, action, None, False))
            calls.append(lambda env=slot.env, a=action: env.step(a))
        except ParseError as exc:
            parsed.append((None, "", str(exc), False))
            calls.append(lambda env=slot.env, r=str(exc): env.reject(r))
    t0 = time.perf_counter()
    results = _run_threads(calls, settings.step_timeout_s)
    env_share = (time.perf_counter() - t0) / max(1, len(live))
    outcomes = []
    for slot, answer, label, (thought, action, _, by_expert), step in zip(live, answers, labels, parsed, results):
        slot.env_s += env_share
        if isinstance(answer, BaseException):
            outcomes.append((True, f"policy failed: {type(answer).__name__}: {answer}"))
            continue
        if isinstance(step, BaseException):
            detail = "".join(traceback.format_exception(step, limit=-3)) if not isinstance(step, StepTimeout) else ""
            outcomes.append((True, f"environment failed: {type(step).__name__}: {step}\n{detail}".strip()))
            continue
        if by_expert:
            result.expert_steps += 1
        outcomes.append(_record(slot, None if by_expert else answer, thought, action, step, policy, settings,
                                label, by_expert))
    return outcomes


def _record(slot: _Live, answer: str | None, thought: str | None, action: str, result: tuple, policy: Policy,
            settings: RolloutSettings, label: ExpertLabel | None = None,
            by_expert: bool = False) -> tuple[bool, str | None]:
    obs, reward, terminated, truncated, info = result
    if by_expert:
        info = {**info, "actor": "expert"}
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
            raw_output=None if policy.needs_env or answer is None else truncate_text(answer, settings.max_answer_chars),
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            invalid=invalid,
            info=info,
            expert=label,
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
