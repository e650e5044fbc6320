"""Preference samples: a prompt with a chosen and a rejected answer (DPO), or one labelled answer (KTO).

Both are chat messages, as TRL's conversational datasets are, one JSON object a line:

- ``PreferencePair``: ``prompt`` (system first, ending on a user turn), ``chosen`` and ``rejected``
  (each a continuation starting and ending with an assistant turn). A step-level pair has one
  assistant message on each side; a trajectory-level pair (ETO) holds the whole continuation,
  the environment's user turns between the assistant turns included: only the assistant turns
  are scored (``agentclone.objectives.dpo``).
- ``LabelledCompletion``: ``prompt``, ``completion`` (assistant turns only) and ``desirable``.

``read_preference_file`` reads either kind; a malformed record is one ``PreferenceFileError``
naming file, line and field.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from typing_extensions import TypedDict

from agentclone.data import TrajectoryFileError
from agentclone.errors import UserError


class Message(TypedDict):
    """One chat message (a plain dict once validated)."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    role: Literal["system", "user", "assistant"]
    content: str


def _check_prompt(prompt: list[dict]) -> list[dict]:
    if not prompt:
        raise ValueError("the prompt has no messages")
    if prompt[0]["role"] != "system":
        raise ValueError(f"the prompt must start with the system message, not a {prompt[0]['role']} message")
    if prompt[-1]["role"] != "user":
        raise ValueError(f"the prompt must end with a user message (the state answered), not a {prompt[-1]['role']} message")
    if any(m["role"] == "system" for m in prompt[1:]):
        raise ValueError("only the prompt's first message may be a system message")
    return prompt


def _check_continuation(messages: list[dict]) -> list[dict]:
    if not messages:
        raise ValueError("no messages")
    roles = [m["role"] for m in messages]
    if "system" in roles:
        raise ValueError("a continuation holds assistant and user (environment) turns only")
    if roles[0] != "assistant" or roles[-1] != "assistant":
        raise ValueError("a continuation must start and end with an assistant message")
    if any(a == b for a, b in zip(roles, roles[1:])):
        raise ValueError("assistant and user turns must alternate")
    return messages


class _Sample(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    prompt: list[Message]
    task_id: str = ""
    info: dict[str, Any] = Field(default_factory=dict)

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v):
        return _check_prompt(v)

    def to_json_line(self) -> str:
        return json.dumps(self.model_dump(mode="json"), ensure_ascii=False)

    def content_hash(self) -> str:
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


class PreferencePair(_Sample):
    """At ``prompt``, ``chosen`` is preferred to ``rejected``.

    ``level``: ``step`` (one assistant message each) or ``trajectory`` (whole continuations with the
    environment's turns between the assistant turns).
    """

    chosen: list[Message]
    rejected: list[Message]
    level: Literal["step", "trajectory"] = "step"

    @field_validator("chosen", "rejected")
    @classmethod
    def _continuation(cls, v):
        return _check_continuation(v)

    @model_validator(mode="after")
    def _different(self):
        if self.chosen == self.rejected:
            raise ValueError("chosen and rejected are the same")
        if self.level == "step" and (len(self.chosen) != 1 or len(self.rejected) != 1):
            raise ValueError("a step-level pair has one assistant message on each side (use level: trajectory)")
        return self


class LabelledCompletion(_Sample):
    """An answer at ``prompt`` labelled desirable or undesirable (KTO's unpaired data)."""

    completion: list[Message]
    desirable: bool

    @field_validator("completion")
    @classmethod
    def _completion(cls, v):
        return _check_continuation(v)


PreferenceSample = Union[PreferencePair, LabelledCompletion]
KINDS = {"preference": PreferencePair, "labelled": LabelledCompletion}
_NAMES = {"preference": "preference pair (chosen, rejected)", "labelled": "labelled completion (completion, desirable)"}


class PreferenceFileError(TrajectoryFileError, UserError):
    """A preference file that cannot be read; the message names file, line and field."""


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(record)"
    msg = first["msg"].removeprefix("Value error, ")
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"field '{loc}': {msg}{more}"


def parse_preference_line(line: str, path: str | Path = "<string>", lineno: int = 1,
                          kind: str | None = None) -> PreferenceSample:
    """One record, of the kind its keys say; ``kind`` (``preference``, ``labelled``) requires that kind."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise PreferenceFileError(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise PreferenceFileError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
    if "chosen" in obj or "rejected" in obj:
        found = "preference"
    elif "completion" in obj or "desirable" in obj:
        found = "labelled"
    else:
        hint = " (a trajectory? train this with sft)" if "steps" in obj else ""
        raise PreferenceFileError(f"{path}:{lineno}: neither a preference pair (chosen, rejected) nor a labelled "
                                  f"completion (completion, desirable){hint}")
    if kind is not None and found != kind:
        raise PreferenceFileError(f"{path}:{lineno}: a {_NAMES[found]} where {_NAMES[kind]}s are expected")
    cls = KINDS[found]
    try:
        return cls.model_validate(obj)
    except ValidationError as exc:
        raise PreferenceFileError(f"{path}:{lineno}: {_describe(exc)}") from None


def read_preference_file(path: str | Path, kind: str | None = None) -> list[PreferenceSample]:
    """Every record of a JSONL file of preference pairs and/or labelled completions, in file order.

    ``kind`` (``preference``, ``labelled``) requires every record to be of that kind.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"preference file not found: {path}")
    out: list[PreferenceSample] = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise PreferenceFileError(f"{path}:{lineno}: not valid UTF-8 (byte {exc.start})") from None
            if text.strip():
                out.append(parse_preference_line(text, path, lineno, kind))
    return out


def write_preference_file(path: str | Path, samples) -> None:
    """Write samples atomically (the same as ``agentclone.data.write_trajectories``)."""
    from agentclone.data import write_trajectories

    write_trajectories(path, samples)


# -- tokenisation --------------------------------------------------------------------------------
def tokenize_completion(tokenizer, prompt: list[dict], completion: list[dict]) -> tuple[list[int], list[int], list[int]]:
    """``(prompt_ids, completion_ids, completion_mask)`` of ``prompt`` followed by ``completion``.

    ``prompt_ids`` ends with the generation prompt (what the model sees before answering); the mask
    is 1 exactly on the assistant turns' tokens (their content and end-of-turn token, as the chat
    template's generation markers say, the same tokens SFT trains on) and 0 on the environment's
    turns and the turn headers between them. The completion ends with the last assistant token.
    """
    prompt_ids = list(tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True,
                                                    return_dict=True)["input_ids"])
    enc = tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=True)
    ids, mask = list(enc["input_ids"]), list(enc["assistant_masks"])
    if ids[: len(prompt_ids)] != prompt_ids:
        raise RuntimeError("the chat template renders the prompt differently alone and followed by the answer; "
                           "preference training needs the prompt to be a prefix")
    from agentclone.training import _spans

    comp_ids, comp_mask = ids[len(prompt_ids):], mask[len(prompt_ids):]
    spans = _spans(comp_mask)
    want = sum(m["role"] == "assistant" for m in completion)
    if len(spans) != want or (spans and spans[0][0] != 0):
        raise RuntimeError(f"chat template marked {len(spans)} assistant spans for {want} assistant turns; the "
                           "template needs {% generation %} markers around each assistant message")
    end = spans[-1][1]
    return prompt_ids, comp_ids[:end], comp_mask[:end]


__all__ = ["Message", "PreferencePair", "LabelledCompletion", "PreferenceSample", "PreferenceFileError",
           "read_preference_file", "parse_preference_line", "write_preference_file", "tokenize_completion"]
