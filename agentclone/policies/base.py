"""The policy interface shared by every backend."""

from __future__ import annotations

import abc
import bisect
import hashlib
import itertools
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from agentclone.envs import TextEnv
from agentclone.prompting import ActionFormat, stop_after_action


@dataclass
class PolicyRequest:
    """One live episode asking for its next action."""

    messages: list[dict]
    env: TextEnv | None = None  # privileged access, used only by the expert
    episode_id: str = ""
    #: the sampling seed of this answer (the rollout derives it from the episode's seed and the step
    #: index), so a resumed or sharded collection samples what an uninterrupted one does; None: the
    #: backend picks one
    seed: int | None = None


@dataclass
class GenerationSettings:
    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    seed: int = 0
    #: further backend options, passed through as they are: ``hf`` adds them to ``model.generate``'s
    #: keyword arguments (``top_k``, ``repetition_penalty``, ...), ``vllm`` to ``SamplingParams``,
    #: ``openai`` to the request body
    extra: dict[str, Any] = field(default_factory=dict)


class Policy(abc.ABC):
    """Turns a batch of conversations into the agent's raw answers (one text each)."""

    name: str = ""
    #: True for policies that read the environment's privileged state.
    needs_env: bool = False

    def __init__(self, fmt: ActionFormat | None = None) -> None:
        self.fmt = fmt or ActionFormat()

    @abc.abstractmethod
    def act(self, requests: list[PolicyRequest]) -> list[str]:
        """One answer per request, in order."""

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text`` (for the history budget); a rough estimate by default."""
        return max(1, len(text) // 4)

    @property
    def model_id(self) -> str | None:
        return None

    def close(self) -> None:
        pass


def derive_seed(*parts: Any) -> int:
    """A seed in [0, 2**31 - 1) from ``parts`` (ints, strings): stable across processes and machines."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") % (2**31 - 1)


def request_seed(seed: int, request: PolicyRequest) -> int:
    """The sampling seed of one answer: the request's own seed (per episode and step) mixed with the
    policy's ``seed``; for a request without one, a seed from its episode id and turn number."""
    if request.seed is not None:
        return derive_seed(seed, request.seed)
    turn = sum(m.get("role") == "assistant" for m in request.messages)
    return (seed * 1_000_003 + zlib.crc32(request.episode_id.encode()) + 7919 * turn) % (2**31 - 1)


def cut_after_action_line(
    tokens: Sequence, decode: Callable[[Sequence], str] | None = None, start: int = 0
) -> tuple[str, int | None]:
    """An answer cut right after the token that completes its first full ``Action:`` line.

    Every backend stops where the ``hf`` backend's stopping criterion stops ``generate``: after the
    first token at which the answer's text holds a full ``Action:`` line (``stop_after_action``).
    ``tokens`` are the answer's tokens: text pieces (``decode`` None: the text is their
    concatenation; one character each for a bare string), or token ids with ``decode`` turning a
    prefix of them into text. Returns the text of the fewest leading tokens that hold a full
    ``Action:`` line and their number, or the whole text and None when there is no such line.
    Prefixes of ``start`` tokens or fewer are known to hold none (an answer continued in rounds).
    """
    if decode is None:
        pieces = [str(t) for t in tokens]
        text = "".join(pieces)
        if not stop_after_action(text):
            return text, None
        # text pieces: every prefix is a prefix of the text, and a full line in a prefix stays in
        # every longer one, so the first prefix that holds one is found by bisection
        ends = list(itertools.accumulate(len(p) for p in pieces))
        k = start + bisect.bisect_left(range(start, len(pieces)), True,
                                       key=lambda i: stop_after_action(text[: ends[i]]))
        if k >= len(pieces):  # only when ``start`` was wrong: the whole text holds the line
            return text, len(pieces)
        return text[: ends[k]], k + 1
    text = decode(tokens)
    if not stop_after_action(text):
        return text, None
    for k in range(start + 1, len(tokens) + 1):
        prefix = decode(tokens[:k])
        if stop_after_action(prefix):
            return prefix, k
    return text, len(tokens)  # not reached: the whole text holds the line


class ModelPolicy(Policy):
    """A policy backed by a language model: the constructor contract every model backend shares.

    ``model`` is a model alias or directory, ``adapter`` an optional LoRA adapter directory,
    ``batch_size`` how many requests share one forward pass (a backend that batches by itself
    accepts it and may ignore it), ``generation`` the sampling settings (a ``GenerationSettings``
    or a dict of its fields), ``stop_at_action`` whether answers are cut after their first full
    ``Action:`` line (``cut_answer``; False for free text, e.g. a judge's answer).
    """

    def __init__(
        self,
        fmt: ActionFormat | None = None,
        model: str = "smollm2-135m",
        adapter: str | None = None,
        batch_size: int | None = None,
        generation: GenerationSettings | dict | None = None,
        stop_at_action: bool = True,
    ) -> None:
        super().__init__(fmt)
        self.model_name = model
        self.adapter = adapter
        self.batch_size = batch_size
        if isinstance(generation, dict):
            generation = GenerationSettings(**generation)
        self.gen: GenerationSettings = generation or GenerationSettings()
        self.stop_at_action = stop_at_action

    @property
    def model_id(self) -> str | None:
        return f"{self.model_name}+{self.adapter}" if self.adapter else self.model_name

    def cut_answer(self, tokens: Sequence, decode: Callable[[Sequence], str] | None = None) -> str:
        """The answer text of ``tokens`` (see ``cut_after_action_line``), cut when ``stop_at_action``."""
        if not self.stop_at_action:
            return decode(tokens) if decode is not None else "".join(str(t) for t in tokens)
        return cut_after_action_line(tokens, decode)[0]


def make_policy(name: str, fmt: ActionFormat | None = None, **options: Any) -> Policy:
    """Make a registered policy backend by name (``hf``, ``expert``, ...; ``agentclone.plugins.create``)."""
    from agentclone.plugins import create

    return create("policy_backend", name, fmt=fmt, **options)
