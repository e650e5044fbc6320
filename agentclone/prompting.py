"""How the agent's turns are written and read, and how a conversation is built.

The agent answers in a configurable format; by default::

    Thought: I need 1 oak log to craft oak planks.
    Action: get 1 oak log

An answer that does not parse is an invalid action: counted, and the agent is
shown why, as if the environment had said so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

from agentclone.data import Step, Trajectory

FormatName = Literal["thought-action", "action"]
MAX_ACTION_CHARS = 300


class ParseError(ValueError):
    pass


@dataclass(frozen=True)
class ActionFormat:
    """``thought-action`` (``Thought: ...`` then ``Action: ...``) or ``action`` (``Action: ...`` only)."""

    name: FormatName = "thought-action"

    @property
    def hint(self) -> str:
        if self.name == "thought-action":
            return "Answer with one line 'Thought: <your reasoning>' then one line 'Action: <action>'."
        return "Answer with one line 'Action: <action>'."

    def render(self, action: str, thought: str | None = None) -> str:
        if self.name == "thought-action" and thought:
            return f"Thought: {thought}\nAction: {action}"
        return f"Action: {action}"

    def parse(self, text: str) -> tuple[str | None, str]:
        """Return (thought, action); raise ParseError with a reason the agent is shown."""
        if not text or not text.strip():
            raise ParseError("your answer was empty. " + self.hint)
        match = re.search(r"(?im)^\s*action\s*:\s*(.*)$", text)
        if match is None:
            raise ParseError("no 'Action:' line found. " + self.hint)
        action = match.group(1).strip().strip("`").strip()
        if not action:
            raise ParseError("the 'Action:' line was empty. " + self.hint)
        if len(action) > MAX_ACTION_CHARS:
            raise ParseError(f"the action was longer than {MAX_ACTION_CHARS} characters. " + self.hint)
        thought = None
        tmatch = re.search(r"(?is)thought\s*:\s*(.*?)(?=^\s*action\s*:)", text, flags=re.M)
        if tmatch:
            thought = " ".join(tmatch.group(1).split()) or None
        return thought, action


def stop_after_action(text: str) -> bool:
    """True once a full ``Action:`` line has been generated (generation can stop there)."""
    match = re.search(r"(?im)^\s*action\s*:[^\n]*\S[^\n]*\n", text)
    return match is not None


def system_prompt(instructions: str, fmt: ActionFormat) -> str:
    return f"{instructions.strip()}\n{fmt.hint}"


def assistant_text(step: Step, fmt: ActionFormat) -> str:
    """What the assistant said at ``step``: the model's raw text only when it failed to parse, or when
    the step was imported with its text kept as it was (``info["verbatim"]``, ``agentclone.formats``)."""
    if step.raw_output is not None and step.info.get("verbatim"):
        return step.raw_output
    if step.invalid and step.raw_output is not None and step.info.get("parse_error"):
        return step.raw_output.strip()
    return fmt.render(step.action, step.thought)


def trajectory_messages(traj: Trajectory, fmt: ActionFormat) -> tuple[list[dict], list[bool]]:
    """Chat messages of a whole trajectory, and for each assistant turn whether it carries loss."""
    messages = [{"role": "system", "content": system_prompt(traj.instructions, fmt)}]
    loss = []
    for step in traj.steps:
        messages.append({"role": "user", "content": step.observation})
        messages.append({"role": "assistant", "content": assistant_text(step, fmt)})
        loss.append(step.loss)
    return messages, loss


def build_prompt(
    instructions: str,
    steps: Sequence[Step],
    observation: str,
    fmt: ActionFormat,
    count_tokens: Callable[[str], int],
    max_prompt_tokens: int,
) -> list[dict]:
    """Messages for the next action, within ``max_prompt_tokens``.

    The instructions and the first observation (the task statement) are always
    kept; when the history is too long the oldest later turns are dropped and
    a marker says how many.
    """
    system = {"role": "system", "content": system_prompt(instructions, fmt)}
    turns: list[tuple[dict, dict]] = []
    for step in steps:
        turns.append(
            ({"role": "user", "content": step.observation}, {"role": "assistant", "content": assistant_text(step, fmt)})
        )
    current = {"role": "user", "content": observation}

    def cost(msgs: list[dict]) -> int:
        return sum(count_tokens(m["content"]) + 4 for m in msgs)

    if not turns:
        return [system, current]
    first, rest = turns[0], turns[1:]
    fixed = cost([system, *first, current])
    budget = max_prompt_tokens - fixed
    kept: list[tuple[dict, dict]] = []
    for turn in reversed(rest):
        c = cost(list(turn))
        if c > budget:
            break
        kept.insert(0, turn)
        budget -= c
    dropped = len(rest) - len(kept)
    messages = [system, *first]
    if dropped:
        marker = f"[{dropped} earlier turn{'s' if dropped > 1 else ''} omitted]"
        kept_flat = [m for t in kept for m in t]
        # the marker rides on the first kept observation (or the current one)
        head = (kept_flat[0] if kept_flat else current).copy()
        head["content"] = f"{marker}\n{head['content']}"
        if kept_flat:
            kept_flat[0] = head
            return messages + kept_flat + [current]
        return messages + [head]
    return messages + [m for t in kept for m in t] + [current]
