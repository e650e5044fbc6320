"""``reflection``: Agent-R-style revision trajectories from the policy's own failures.

For each failed trajectory of the current policy:

1. a critic finds its first bad step: ``expert`` (the environment's privileged expert: an invalid
   action, or an action after which the goal got no closer, further away or unreachable, by
   ``TextEnv.distance_to_goal``) or ``model`` (an LLM verifier answering good / bad / uncertain for
   each step, through any policy backend);
2. the environment is rebuilt at that step by replaying the recorded actions; every replayed
   observation must match the recorded one, else the trajectory is dropped (counted);
3. the revision is spliced: the failed prefix up to and including the bad step (no loss), then a
   reflection turn (a reflection sentence chosen by a seeded RNG, then the expert's thought and
   action) and the expert's continuation to the goal from that same state (loss).

When the bad step ended the episode or made the goal unreachable, the branch is taken from the
state before it (the bad step is left out of the prefix). Successful trajectories are mixed in
(behaviour cloning on their valid steps) at ``success_ratio`` successes per revision.
"""

from __future__ import annotations

import math
import random
import re
import sys
from typing import Any, Literal

from pydantic import Field

from agentclone.data import Step, Trajectory
from agentclone.builders.base import BuildContext, BuilderConfig, DataBuilder
from agentclone.critics import (  # noqa: F401  (ReplayMismatch, replay: re-exported, older code imports them here)
    ReplayMismatch,
    Verdict,
    _recorded_after,
    expert_first_bad_step,
    replay,
)

DEFAULT_REFLECTIONS = [
    "I realize my approach was flawed: {why}.",
    "Looking back, my last action was a mistake: {why}.",
    "Wait, that was wrong: {why}. Let me correct course.",
    "I made an error: {why}. I need to revise my plan.",
]


VERIFIER_PROMPT = (
    "You check the steps of an agent. Task and instructions:\n{instructions}\n\n{history}\n"
    "Was the agent's last action (step {k}) a good step toward the goal? "
    "Answer with one word: good, bad or uncertain."
)
_VERDICT_RE = re.compile(r"\b(good|bad|uncertain|unsure|correct|incorrect|wrong|right)\b", re.IGNORECASE)
_VERDICT_MAP = {"good": "good", "correct": "good", "right": "good", "bad": "bad", "incorrect": "bad",
                "wrong": "bad", "uncertain": "uncertain", "unsure": "uncertain"}


def parse_verdict(text: str | None) -> str:
    """``good``, ``bad`` or ``uncertain`` from a verifier's free answer (anything unclear: uncertain)."""
    if not isinstance(text, str):
        return "uncertain"
    m = _VERDICT_RE.search(text)
    return _VERDICT_MAP[m.group(1).lower()] if m else "uncertain"


def verifier_messages(traj: Trajectory, k: int, max_observation_chars: int = 400) -> list[dict]:
    lines = []
    for i, step in enumerate(traj.steps[: k + 1]):
        lines.append(f"Observation {i + 1}: {step.observation[:max_observation_chars]}")
        lines.append(f"Step {i + 1}: {step.action or '(no action)'}")
    after = _recorded_after(traj, k)
    if after:
        lines.append(f"Result: {after[:max_observation_chars]}")
    text = VERIFIER_PROMPT.format(instructions=traj.instructions, history="\n".join(lines), k=k + 1)
    return [{"role": "user", "content": text}]


def model_first_bad_steps(trajs: list[Trajectory], policy) -> list[Verdict]:
    """Ask the verifier about every step of every trajectory in one batch; first ``bad`` wins."""
    from agentclone.policies.base import PolicyRequest

    requests, where = [], []
    for t, traj in enumerate(trajs):
        for k in range(len(traj.steps)):
            requests.append(PolicyRequest(messages=verifier_messages(traj, k), episode_id=f"{traj.id}#{k}"))
            where.append((t, k))
    answers = policy.act(requests) if requests else []
    verdicts = [Verdict(None) for _ in trajs]
    for (t, k), answer in zip(where, answers):
        # requests go step by step, so the first ``bad`` seen for a trajectory is its first bad step
        if verdicts[t].index is None and parse_verdict(answer) == "bad":
            verdicts[t] = Verdict(k, "the verifier judged it a bad step")
    return verdicts


# -- the builder ---------------------------------------------------------------------------------


class ReflectionConfig(BuilderConfig):
    critic: Literal["expert", "model"] = Field("expert", description="who finds the first bad step")
    critic_backend: str = Field("hf", description="model critic: policy backend")
    critic_model: str | None = Field(None, description="model critic: model (default: the recipe's model)")
    critic_options: dict[str, Any] = Field(default_factory=dict, description="model critic: backend options")
    stall_is_bad: bool = Field(True, description="expert critic: a step that brings the goal no closer is bad")
    reflections: list[str] = Field(
        default_factory=lambda: list(DEFAULT_REFLECTIONS), min_length=1,
        description="reflection sentences; {why} is replaced by the reason the step was bad",
    )
    success_ratio: float | None = Field(
        1.0, ge=0, description="successful trajectories kept per revision trajectory; None keeps all"
    )
    max_continuation_steps: int = Field(30, ge=1, description="expert steps at most after the branch")
    skip_invalid_steps: bool = Field(True, description="successes: no loss on invalid steps")


class Reflection(DataBuilder):
    name = "reflection"
    Config = ReflectionConfig

    def __init__(self, config=None, critic_policy=None) -> None:
        super().__init__(config)
        self._critic_policy = critic_policy
        self.counts: dict[str, int] = {}

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def _verifier(self, context: BuildContext):
        if self._critic_policy is not None:
            return self._critic_policy
        from agentclone.policies.base import GenerationSettings, make_policy

        cfg: ReflectionConfig = self.config
        model = cfg.critic_model or context.model
        if not model:
            raise ValueError("the reflection trainer's model critic needs critic_model (or a recipe model)")
        options: dict[str, Any] = {"model": model, "generation": GenerationSettings(max_new_tokens=8, seed=context.seed)}
        options.update(cfg.critic_options)
        try:
            policy = make_policy(cfg.critic_backend, stop_at_action=False, **options)
        except TypeError:  # a backend without the option
            policy = make_policy(cfg.critic_backend, **options)
        self._critic_policy = policy
        return policy

    def first_bad_steps(self, failures: list[Trajectory], context: BuildContext) -> list[Verdict | str]:
        """A Verdict per failure, or the reason it cannot be judged."""
        cfg: ReflectionConfig = self.config
        if cfg.critic == "model":
            return list(model_first_bad_steps(failures, self._verifier(context)))
        out: list[Verdict | str] = []
        for traj in failures:
            try:
                out.append(expert_first_bad_step(traj, cfg.stall_is_bad))
            except ReplayMismatch:
                out.append("replay mismatch")
        return out

    def revise(self, traj: Trajectory, verdict: Verdict, rng: random.Random) -> Trajectory:
        """The revision trajectory of ``traj`` branching at ``verdict.index``; raises ReplayMismatch or
        ValueError (with the reason) when it cannot be made."""
        cfg: ReflectionConfig = self.config
        b = verdict.index
        assert b is not None
        bad = traj.steps[b]
        keep_bad = not (bad.terminated or bad.truncated)
        env, dist = replay(traj, b + 1 if keep_bad else b)
        try:
            if keep_bad and dist[-1] is not None and math.isinf(dist[-1]):
                env.close()  # unreachable after the bad step: branch from before it
                keep_bad = False
                env, dist = replay(traj, b)
            prefix = [s.model_copy(deep=True) for s in traj.steps[: b + 1 if keep_bad else b]]
            for s in prefix:
                s.loss = False
            obs = (_recorded_after(traj, b) if keep_bad else bad.observation) or ""
            env.max_steps = env.steps_taken + cfg.max_continuation_steps
            sentence = rng.choice(cfg.reflections).format(why=verdict.why or "it did not help")
            cont: list[Step] = []
            while True:
                expert = env.expert_action()
                thought = expert.thought or ""
                if not cont:
                    thought = f"{sentence} {thought}".strip()
                nobs, reward, terminated, truncated, info = env.step(expert.action)
                cont.append(Step(
                    observation=obs, thought=thought or None, action=expert.action, reward=reward,
                    terminated=terminated, truncated=truncated, invalid=bool(info.get("invalid")),
                    info={**info, **({"reflection": True, "bad_step": b, "why": verdict.why} if len(cont) == 0 else {})},
                    loss=True,
                ))
                obs = str(nobs)
                if terminated or truncated:
                    break
            if not (terminated and reward > 0 and not any(s.invalid for s in cont)):
                raise ValueError("expert continuation failed")
        finally:
            env.close()
        new = traj.model_copy(deep=True)
        new.id = f"{traj.id}/revision"
        new.steps = prefix + cont
        new.final_observation = obs
        new.success, new.terminated, new.truncated = True, True, False
        new.return_ = sum(s.reward for s in new.steps)
        new.policy = f"{traj.policy}+reflection"
        return new

    def build(self, trajectories: list[Trajectory], context: BuildContext) -> list[Trajectory]:
        cfg: ReflectionConfig = self.config
        rng = random.Random(context.seed)
        self.stats.trajectories_in = len(trajectories)
        successes, failures = [], []
        for traj in trajectories:
            if traj.error:
                self.stats.drop("errored")
            elif not traj.steps:
                self.stats.drop("empty")
            elif traj.success:
                successes.append(traj)
            else:
                failures.append(traj)
        revisions: list[Trajectory] = []
        for traj, verdict in zip(failures, self.first_bad_steps(failures, context)):
            if isinstance(verdict, str):
                self.stats.drop(verdict)
                continue
            if verdict.index is None:
                self.stats.drop("no bad step found")
                continue
            try:
                revisions.append(self.revise(traj, verdict, rng))
            except ReplayMismatch:
                self.stats.drop("replay mismatch")
            except ValueError as exc:
                self.stats.drop(str(exc))
            except Exception as exc:  # an environment that fails on replay costs one sample, not the build
                print(f"warning: reflection: {traj.id}: {type(exc).__name__}: {exc}", file=sys.stderr)
                self.stats.drop("environment error")
        if cfg.success_ratio is not None:
            keep = min(len(successes), round(cfg.success_ratio * len(revisions)))
            kept = rng.sample(successes, keep) if keep < len(successes) else list(successes)
            for _ in range(len(successes) - len(kept)):
                self.stats.drop("success beyond success_ratio")
            successes = kept
        out = list(revisions)
        for traj in successes:
            new = traj.model_copy(deep=True)
            for step in new.steps:
                step.loss = not (cfg.skip_invalid_steps and step.invalid)
            out.append(new)
        self.count("revisions", len(revisions))
        self.count("successes", len(successes))
        rng.shuffle(out)
        return self._count(out)

    def close(self) -> None:
        if self._critic_policy is not None:
            self._critic_policy.close()
