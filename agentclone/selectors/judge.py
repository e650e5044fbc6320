"""``llm-judge``: an LLM reads the whole demonstration and names its critical steps (ATLaS).

The judge is any policy backend (a local ``hf`` model, an OpenAI-compatible
server, ...), asked with a prompt over four categories: plan creation,
critical observation, critical action, self correction. Its answer is read by
``judge_answer.parse_judge_answer`` whatever its shape; an answer with no
usable step falls back to another selector (``progress`` by default) and is
counted, and an answer with too few steps is filled up from the fallback.

Answers are cached on disk, one file per (trajectory content hash, judge id,
prompt version, budget): a rerun of the same build calls the judge zero times.
The cache keeps the judge's raw text, so a better parser needs no new calls.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import Field

from agentclone.data import Trajectory, atomic_write_text
from agentclone.selectors.base import Pick, SelectorConfig, StepSelector, eligible_steps, make_selector
from agentclone.selectors.judge_answer import CATEGORIES, JudgeAnswer, parse_judge_answer
from agentclone.building import BuildContext

PROMPT_VERSION = "atlas-judge-v1"

JUDGE_SYSTEM = (
    "You review demonstrations of an agent doing a task, step by step, and point out the few steps "
    "a student should learn from most. You answer with JSON only."
)

CATEGORY_HELP = {
    "plan creation": "the agent works out what the goal needs and lays out a plan or sub-goals",
    "critical observation": "the agent reads something in what it sees that decides what to do next",
    "critical action": "an action that moves the task decisively forward: it obtains or makes something "
    "the goal needs, or completes the goal",
    "self correction": "the agent notices a mistake or a dead end and changes course",
}


class LLMJudgeConfig(SelectorConfig):
    backend: str = Field("hf", description="policy backend of the judge: hf, openai, vllm, ...")
    model: str | None = Field(None, description="judge model; None: the recipe's model")
    backend_options: dict[str, Any] = Field(
        default_factory=dict, description="extra options for the backend (e.g. base_url for a server)"
    )
    max_new_tokens: int = Field(256, description="tokens per judge answer at most")
    temperature: float = Field(0.0, description="0 = greedy (reproducible)")
    batch_size: int = Field(8, description="judge prompts per generate call (hf backend)")
    fallback: str = Field("progress", description="selector used when the judge's answer has no usable step")
    cache: bool = Field(True, description="cache answers on disk (a rerun costs no judge calls)")
    cache_dir: str | None = Field(None, description="where answers are cached; None: <agentclone cache>/judgements")
    max_observation_chars: int = Field(600, description="observations longer than this are cut in the prompt")


def judge_messages(traj: Trajectory, k: int, max_observation_chars: int = 600) -> list[dict]:
    """The judge's prompt for one trajectory: the task, every step numbered from 1, the four categories."""
    lines = [f"Task instructions given to the agent:\n{traj.instructions.strip()}", ""]
    lines.append(f"The demonstration has {len(traj.steps)} steps.")
    for n, step in enumerate(traj.steps, start=1):
        obs = step.observation.strip()
        if len(obs) > max_observation_chars:
            obs = obs[:max_observation_chars] + " [...]"
        lines += ["", f"Step {n}", f"Observation: {obs}"]
        if step.thought:
            lines.append(f"Thought: {step.thought.strip()}")
        lines.append(f"Action: {step.action}" + ("  (rejected by the environment)" if step.invalid else ""))
    outcome = "the goal was reached" if traj.success else "the goal was not reached"
    lines += ["", f"Outcome: {outcome}.", ""]
    lines.append("A step is critical when it is one of these:")
    lines += [f"- {cat}: {CATEGORY_HELP[cat]}" for cat in CATEGORIES]
    example = json.dumps([{"step": 2, "category": "critical action", "reason": "gets the item the goal needs"}])
    lines += [
        "",
        f"Pick the {k} most critical step{'s' if k != 1 else ''} (step numbers from 1 to {len(traj.steps)}). "
        f"Answer with a JSON list only, most critical first, one object per step, like:",
        example,
    ]
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


def _accepted_options(backend: str) -> set[str] | None:
    """Keyword options a policy backend's constructor takes (None: it takes any)."""
    import inspect

    from agentclone.plugins import get_registry

    cls = get_registry().policy_backends.get(backend)
    if cls is None:
        return set()
    params = inspect.signature(cls).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


class LLMJudge(StepSelector):
    name = "llm-judge"
    Config = LLMJudgeConfig

    def __init__(self, config=None, judge=None) -> None:
        super().__init__(config)
        self._given_judge = judge  # a Policy already made (tests, or a caller that shares one)
        self._judge = judge
        self._owns_judge = False
        if self.config.fallback == self.name:
            raise ValueError("llm-judge cannot be its own fallback; use progress, random, disagreement, ...")
        self._fallback: StepSelector = make_selector(self.config.fallback)
        #: why answers were not usable, for the build report (first few)
        self.problems: list[str] = []

    # -- identity and cache -------------------------------------------------------------------
    def judge_id(self, context: BuildContext) -> str:
        """Names the judge in cache keys and selections: backend, model, and a hash of its settings."""
        cfg: LLMJudgeConfig = self.config
        if self._given_judge is not None:
            judge = self._given_judge
            backend, model = judge.name or type(judge).__name__, judge.model_id or type(judge).__name__
        else:
            backend, model = cfg.backend, cfg.model or context.model or "?"
        options = json.dumps(cfg.backend_options, sort_keys=True, default=str)
        extra = hashlib.sha256(f"{options}|{cfg.max_new_tokens}|{cfg.temperature}".encode()).hexdigest()[:8]
        return f"{backend}:{model}:{extra}"

    def _cache_dir(self) -> Path:
        if self.config.cache_dir:
            return Path(self.config.cache_dir).expanduser()
        from agentclone.models import cache_dir

        return cache_dir() / "judgements"

    def _cache_path(self, traj: Trajectory, judge_id: str, k: int) -> Path:
        key = hashlib.sha256(f"{traj.content_hash()}|{judge_id}|{PROMPT_VERSION}|k={k}".encode()).hexdigest()[:32]
        return self._cache_dir() / key[:2] / f"{key}.json"

    def _cache_get(self, path: Path) -> str | None:
        if not self.config.cache or not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))["answer"]
        except (OSError, ValueError, KeyError, TypeError):
            return None  # a damaged cache entry is asked again, never trusted

    def _cache_put(self, path: Path, traj: Trajectory, judge_id: str, k: int, answer: str) -> None:
        if not self.config.cache:
            return
        record = {"trajectory": traj.id, "content_hash": traj.content_hash(), "judge": judge_id,
                  "prompt_version": PROMPT_VERSION, "k": k, "answer": answer}
        atomic_write_text(path, json.dumps(record, indent=1, ensure_ascii=False))

    # -- the judge ---------------------------------------------------------------------------
    def _policy(self, context: BuildContext):
        if self._judge is not None:
            return self._judge
        from agentclone.policies.base import GenerationSettings, make_policy

        cfg: LLMJudgeConfig = self.config
        model = cfg.model or context.model
        if not model:
            raise ValueError(
                "the llm-judge selector needs a judge model: set selector_options: {model: ...} "
                "(and backend / backend_options for a server), or run it from a recipe"
            )
        options: dict[str, Any] = {
            "model": model,
            "generation": GenerationSettings(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                             seed=context.seed),
        }
        # free text, not an agent turn: no stop after an "Action:" line, where the backend offers that
        accepted = _accepted_options(cfg.backend)
        for key, value in (("batch_size", cfg.batch_size), ("stop_at_action", False)):
            if accepted is None or key in accepted:
                options[key] = value
        options.update(cfg.backend_options)
        try:
            self._judge = make_policy(cfg.backend, **options)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"llm-judge: cannot make the judge ({cfg.backend} backend): {exc}") from None
        self._owns_judge = True
        return self._judge

    def ask(self, trajs: list[Trajectory], ks: list[int], context: BuildContext) -> list[str | None]:
        """The judge's raw answer for each trajectory (from the cache when it is there); None: the call failed."""
        from agentclone.policies.base import PolicyRequest

        judge_id = self.judge_id(context)
        answers: list[str | None] = [None] * len(trajs)
        todo: list[int] = []
        for i, (traj, k) in enumerate(zip(trajs, ks)):
            cached = self._cache_get(self._cache_path(traj, judge_id, k))
            if cached is not None:
                answers[i] = cached
                self.count("cache_hits")
            else:
                todo.append(i)
        if not todo:
            return answers
        policy = self._policy(context)
        # chunks, so an interrupted build keeps the answers it already paid for
        chunk_size = max(1, 4 * self.config.batch_size)
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start : start + chunk_size]
            requests = [
                PolicyRequest(messages=judge_messages(trajs[i], ks[i], self.config.max_observation_chars),
                              episode_id=trajs[i].id)
                for i in chunk
            ]
            try:
                texts = policy.act(requests)
            except Exception as exc:  # a judge that fails (a server down) must not take the build down
                self.count("judge_errors", len(chunk))
                print(f"warning: llm-judge: the judge failed ({type(exc).__name__}: {exc}); "
                      f"falling back to {self.config.fallback} for {len(chunk)} trajectories", file=sys.stderr)
                continue
            self.count("judge_calls", len(chunk))
            for i, text in zip(chunk, texts):
                text = text if isinstance(text, str) else ""
                answers[i] = text
                self._cache_put(self._cache_path(trajs[i], judge_id, ks[i]), trajs[i], judge_id, ks[i], text)
        return answers

    # -- selection ---------------------------------------------------------------------------
    def select(self, traj: Trajectory, k: int, context: BuildContext) -> list[Pick]:
        return self.select_all([traj], [k], context)[0]

    def select_all(self, trajs: list[Trajectory], ks: list[int], context: BuildContext) -> list[list[Pick]]:
        out: list[list[Pick]] = [[] for _ in trajs]
        todo = [i for i, (t, k) in enumerate(zip(trajs, ks)) if k > 0 and eligible_steps(t)]
        try:
            answers = self.ask([trajs[i] for i in todo], [ks[i] for i in todo], context)
        finally:
            if self._owns_judge and self._judge is not None:
                self._judge.close()
                self._judge, self._owns_judge = None, False
        judge_id = self.judge_id(context)
        short: list[tuple[int, str]] = []  # (trajectory, why) that need steps from the fallback
        for i, answer in zip(todo, answers):
            out[i], why = self.judge_picks(trajs[i], ks[i], answer, judge_id)
            if len(out[i]) < ks[i]:
                short.append((i, why))
        if short:
            fallback = self._fallback
            rankings = fallback.select_all([trajs[i] for i, _ in short], [len(trajs[i].steps) for i, _ in short],
                                           context)
            for (i, why), ranking in zip(short, rankings):
                chosen = {index for index, _ in out[i]}
                for index, info in ranking:
                    if len(out[i]) == ks[i]:
                        break
                    if index not in chosen:
                        out[i].append((index, {**info, "fallback_for": self.name, "why": why}))
                        chosen.add(index)
                        self.count("fallback_steps")
        return out

    def judge_picks(self, traj: Trajectory, k: int, answer: str | None, judge_id: str = "") -> tuple[list[Pick], str]:
        """The usable picks in the judge's answer (valid steps, within budget), and why there are fewer than k."""
        eligible = set(eligible_steps(traj))
        picks: list[Pick] = []
        if answer is None:
            parsed = JudgeAnswer(problems=["the judge call failed"])
        else:
            parsed = parse_judge_answer(answer, len(traj.steps), [s.action for s in traj.steps])
        for p in parsed.picks:
            index = p.step - 1
            if index not in eligible:
                parsed.problems.append(f"step {p.step} was rejected by the environment")
                continue
            if len(picks) == k:
                self.count("picks_beyond_budget")
                continue
            info = self.info(category=p.category or "unspecified", reason=p.reason, score=p.score,
                             rank=len(picks) + 1, judge=judge_id)
            picks.append((index, {key: v for key, v in info.items() if v is not None}))
        if parsed.problems:
            self.count("answers_with_problems")
            if len(self.problems) < 20:
                self.problems.append(f"{traj.id}: {'; '.join(parsed.problems)}")
        self.count("answers_used" if picks else "malformed_answers")
        if picks:
            why = f"the judge picked {len(picks)} usable step(s) of {k}"
        else:
            why = ("malformed judge answer: " + ("; ".join(parsed.problems) or "no usable step"))[:200]
        return picks, why
