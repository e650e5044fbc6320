"""The text environment protocol and the registry that makes environments from ids.

Modelled on Gymnasium, for text::

    env = make_env("textcraft/craft-v1", max_depth=2)
    tasks = env.tasks("train")            # stable ids, disjoint from "heldout"
    obs = env.reset(tasks[0])              # str
    obs, reward, terminated, truncated, info = env.step("get 1 oak log")
    env.expert_action()                    # privileged expert's next action (and thought)

Subclasses implement ``_tasks``, ``_reset``, ``_step`` and ``_expert``; the base
class counts steps, truncates at ``max_steps`` and turns an action the game
cannot parse into an observation (``info["invalid"] = True``), never an exception.
"""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass
from typing import Any

from agentclone.data import Task
from agentclone.plugins import UnknownNameError, check_options, create

SPLITS = ("train", "heldout")
ENV_ID_RE = re.compile(r"^[a-z0-9_.-]+/[A-Za-z0-9_.-]+-v\d+$")


#: the old name of the error ``make_env`` raises for an id nothing registered
UnknownEnvironmentError = UnknownNameError


class InvalidAction(Exception):
    """Raised inside ``_step`` for an action the environment cannot parse or execute."""


@dataclass
class ExpertAction:
    action: str
    thought: str | None = None


class TextEnv(abc.ABC):
    """One episode at a time, text in, text out. Not thread-safe; make one per concurrent episode."""

    env_id: str = ""
    #: Shown to the agent as the system prompt: the task family and the action syntax.
    instructions: str = ""

    # No **kwargs: a subclass passes the options it does not know on to here, where an unknown
    # one is a TypeError, and ``check_env_options`` reads the accepted options off the signatures.
    def __init__(self, max_steps: int = 30) -> None:
        self.max_steps = max_steps
        self.task: Task | None = None
        self.steps_taken = 0
        self.invalid_actions = 0

    # -- to implement -----------------------------------------------------
    @abc.abstractmethod
    def _tasks(self, split: str) -> list[Task]:
        """Deterministic list of tasks of ``split`` (``train`` or ``heldout``)."""

    @abc.abstractmethod
    def _reset(self, task: Task) -> str:
        """Start ``task``; return the first observation."""

    @abc.abstractmethod
    def _step(self, action: str) -> tuple[str, float, bool, dict]:
        """Apply ``action``: (observation, reward, terminated, info). Raise InvalidAction if unparseable."""

    @abc.abstractmethod
    def _expert(self) -> ExpertAction:
        """The privileged expert's next action from the current state."""

    def close(self) -> None:
        """Release resources (processes, browsers)."""

    def prepare(self, tasks: list[Task]) -> None:
        """Get ready to run ``tasks`` before a rollout (e.g. build and cache game files); nothing by default."""

    # -- public protocol ----------------------------------------------------
    def tasks(self, split: str) -> list[Task]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        return self._tasks(split)

    def reset(self, task: Task) -> str:
        self.task = task
        self.steps_taken = 0
        self.invalid_actions = 0
        return self._reset(task)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        if self.task is None:
            raise RuntimeError("call reset(task) before step()")
        self.steps_taken += 1
        try:
            obs, reward, terminated, info = self._step(action.strip())
            info = dict(info)
        except InvalidAction as exc:
            self.invalid_actions += 1
            obs, reward, terminated, info = f"Invalid action: {exc}", 0.0, False, {"invalid": True}
        truncated = not terminated and self.steps_taken >= self.max_steps
        return obs, float(reward), bool(terminated), truncated, info

    def reject(self, reason: str) -> tuple[str, float, bool, bool, dict]:
        """Count an answer the agent gave that is no action at all (it did not parse) as an invalid step."""
        if self.task is None:
            raise RuntimeError("call reset(task) before reject()")
        self.steps_taken += 1
        self.invalid_actions += 1
        truncated = self.steps_taken >= self.max_steps
        return f"Invalid action: {reason}", 0.0, False, truncated, {"invalid": True, "parse_error": True}

    def expert_action(self) -> ExpertAction:
        return self._expert()

    def distance_to_goal(self) -> float | None:
        """How far the current state is from the goal by the privileged expert's measure (e.g. the
        length of its remaining plan): ``math.inf`` when the goal can no longer be reached, None
        when the environment cannot tell (the default). Used by the ``reflection`` trainer's critic."""
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def make_env(env_id: str, /, **overrides: Any) -> TextEnv:
    """Make an environment from its registered id plus keyword overrides.

    An unknown id raises ``UnknownEnvironmentError`` and a bad option ``OptionError``
    (both ``agentclone.errors.UserError``), each naming the id and what is allowed.
    """
    env = create("environment", env_id, **overrides)
    env.env_id = env_id
    return env


def check_env_options(env_id: str, options: dict[str, Any]) -> None:
    """Check option names and simple types (int, float, str, bool, lists, unions of them) of
    ``make_env(env_id, **options)`` against the factory's signature and type hints, without
    making the environment (that can be slow: TextWorld compiles games). Raises the same
    errors as ``make_env``; values a constructor checks itself (ranges, None where a hint does
    not allow it) are only checked there.
    """
    check_options("environment", env_id, options)
