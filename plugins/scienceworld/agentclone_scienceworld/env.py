"""ScienceWorld's task types as agentclone text environments.

``scienceworld/<task>-v1`` for each of ScienceWorld's 30 task types, by ScienceWorld's own task names
(``scienceworld/boil-v1``, ``scienceworld/find-plant-v1``, ...: already id-safe), and
``scienceworld/tasks-v1`` for a mix named by the ``task_types`` option (default: all 30).

* Tasks are task variations: ``<task>-var-<N>`` (kind = the task name). ScienceWorld splits each task
  type's variations into train / dev / test (the first half, the next quarter, the last quarter; the
  ETO / IPR papers' "seen" and "unseen" sets are drawn from these). agentclone's ``train`` split is
  ScienceWorld's train variations; ``heldout`` is its test variations (``heldout_set="dev"``: its dev
  variations). ``train_variations`` / ``heldout_variations`` keep the first N of each per task type.
* The observation: the task description, then the room as ``look around`` shows it (the first turn);
  after each action, the simulator's answer to it. The instructions (system prompt) name ScienceWorld's
  action templates. Actions are ScienceWorld's text commands, passed to its parser unchanged. An input
  its parser rejects (``No known action matches that input.``, or ``Unknown action. ...`` for an answer
  to an "Ambiguous request" prompt that is no choice number) is an invalid step (counted). An ambiguous
  command is a valid step: the simulator lists the matching actions and the next command is a number.
* The score: ScienceWorld's 0..100 (``info["score"]``; -100 when the task failed, e.g. focusing on the
  wrong thing). The reward of a step is the increase of the score clipped at 0, divided by 100, the
  first valid step's including the points a variation starts with (some do, e.g. 8 in find-* tasks), so
  an episode's rewards sum to its final score / 100, in 0..1 (0 for a failed task). The episode
  terminates when the simulator says the task is completed (success) or the score is negative
  (failure); ``max_steps`` truncates
  (default: 100, or the variation's gold path length where that is longer: the boiling / melting
  test variations, friction and Mendelian genetics tasks have gold paths of 100-260 actions).
* The expert: ScienceWorld's gold action sequence for the variation (``get_gold_action_sequence``),
  while every action the agent took equals the gold path's prefix. From any other state it cannot act:
  ``expert_action`` raises ``RuntimeError`` ("ScienceWorld's gold path cannot act from this state: ..."),
  which a rollout records as the label's error and counts; it never invents actions. Its thought says
  where on the reference solution it is ("Following the reference solution: step 3 of 10."). A choice
  number (``0``) on the gold path where the episode shows no "Ambiguous request" prompt is passed over
  (the parser would reject it without a move passing). In the Mendelian genetics tasks the gold path of
  a variation differs from one load to the next (258 and 142 actions for known-plant's variation 93) and
  does not always win (README).
* The simulator: a JVM from the process-wide ``pool.POOL``, started on the first reset, kept across
  episodes (a reset loads the next variation into it) and given back on ``close``. A step that takes
  longer than ``step_timeout_s`` (a reset: that or 60 s, whichever is longer) kills the JVM and raises ``ScienceWorldTimeout`` (the
  rollout ends that episode with the error); the next reset takes another JVM.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from agentclone.data import Task
from agentclone.envs import ExpertAction, InvalidAction, TextEnv
from agentclone_scienceworld.pool import POOL, ScienceWorldTimeout, Simulator


@dataclass(frozen=True)
class TaskType:
    task_id: str  # ScienceWorld's number, e.g. "4-3"
    name: str  # ScienceWorld's task name, e.g. "find-plant"
    title: str
    variations: int
    train: int  # variations 0..train-1
    dev: int  # the next ``dev``; the rest are test

    def variations_of(self, subset: str) -> range:
        if subset == "train":
            return range(0, self.train)
        if subset == "dev":
            return range(self.train, self.train + self.dev)
        if subset == "test":
            return range(self.train + self.dev, self.variations)
        raise ValueError(f"unknown ScienceWorld variation set {subset!r}; use train, dev or test")

    def subset_of(self, variation: int) -> str:
        return next(s for s in ("train", "dev", "test") if variation in self.variations_of(s))


# (ScienceWorld id, name, topic: title, variations, train, dev), as ScienceWorld 1.2.3's simulator reports
# them (getTaskMaxVariations, getVariationsTrain / Dev / Test: contiguous; test_splits_match_the_simulator)
_TABLE = (
    ("1-1", "boil", "Matter: Changes of State (Boiling)", 30, 14, 7),
    ("1-2", "melt", "Matter: Changes of State (Melting)", 30, 14, 7),
    ("1-3", "freeze", "Matter: Changes of State (Freezing)", 30, 14, 7),
    ("1-4", "change-the-state-of-matter-of", "Matter: Changes of State (Any)", 30, 14, 7),
    ("2-1", "use-thermometer", "Measurement: Use Thermometer", 540, 270, 135),
    ("2-2", "measure-melting-point-known-substance", "Measurement: Measuring Melting Point (known)", 436, 218, 109),
    ("2-3", "measure-melting-point-unknown-substance", "Measurement: Measuring Melting Point (unknown)", 300, 150, 75),
    ("3-1", "power-component", "Electricity: Create a circuit", 20, 10, 5),
    ("3-2", "power-component-renewable-vs-nonrenewable-energy", "Electricity: Renewable vs Non-renewable Energy",
     20, 10, 5),
    ("3-3", "test-conductivity", "Electricity: Test Conductivity (known)", 900, 450, 225),
    ("3-4", "test-conductivity-of-unknown-substances", "Electricity: Test Conductivity (unknown)", 600, 300, 150),
    ("4-1", "find-living-thing", "Classification: Find a living thing", 300, 150, 75),
    ("4-2", "find-non-living-thing", "Classification: Find a non-living thing", 300, 150, 75),
    ("4-3", "find-plant", "Classification: Find a plant", 300, 150, 75),
    ("4-4", "find-animal", "Classification: Find an animal", 300, 150, 75),
    ("5-1", "grow-plant", "Biology: Grow a plant", 126, 62, 31),
    ("5-2", "grow-fruit", "Biology: Grow a fruit", 126, 62, 31),
    ("6-1", "chemistry-mix", "Chemistry: Mixing (generic)", 32, 16, 8),
    ("6-2", "chemistry-mix-paint-secondary-color", "Chemistry: Mixing paints (secondary colours)", 36, 18, 9),
    ("6-3", "chemistry-mix-paint-tertiary-color", "Chemistry: Mixing paints (tertiary colours)", 36, 18, 9),
    ("7-1", "lifespan-longest-lived", "Biology: Identify longest-lived animal", 125, 62, 31),
    ("7-2", "lifespan-shortest-lived", "Biology: Identify shortest-lived animal", 125, 62, 31),
    ("7-3", "lifespan-longest-lived-then-shortest-lived", "Biology: Identify longest-then-shortest-lived animal",
     125, 62, 31),
    ("8-1", "identify-life-stages-1", "Biology: Identify life stages (plant)", 14, 6, 3),
    ("8-2", "identify-life-stages-2", "Biology: Identify life stages (animal)", 10, 4, 2),
    ("9-1", "inclined-plane-determine-angle", "Forces: Inclined Planes (determine angle)", 168, 84, 42),
    ("9-2", "inclined-plane-friction-named-surfaces", "Forces: Friction (known surfaces)", 1386, 692, 346),
    ("9-3", "inclined-plane-friction-unnamed-surfaces", "Forces: Friction (unknown surfaces)", 162, 80, 40),
    ("10-1", "mendelian-genetics-known-plant", "Biology: Mendelian Genetics (known plants)", 120, 60, 30),
    ("10-2", "mendelian-genetics-unknown-plant", "Biology: Mendelian Genetics (unknown plants)", 480, 240, 120),
)
TASK_TYPES: dict[str, TaskType] = {row[1]: TaskType(*row) for row in _TABLE}

#: the parser's answers to an input it cannot use (the second: a non-number answer to an "Ambiguous request")
REJECTIONS = ("No known action matches that input.", "Unknown action.")
AMBIGUOUS = "Ambiguous request"
HELDOUT_SETS = ("test", "dev")
#: the step limit when ``max_steps`` is not given (or the gold path's length, where that is longer)
DEFAULT_MAX_STEPS = 100


def task_type(name: str) -> TaskType:
    """The task type named ``name`` (ScienceWorld's task name, or its number such as ``4-3``)."""
    if name in TASK_TYPES:
        return TASK_TYPES[name]
    by_id = {t.task_id: t for t in TASK_TYPES.values()}
    if name in by_id:
        return by_id[name]
    raise ValueError(f"unknown ScienceWorld task {name!r}; it has: {', '.join(TASK_TYPES)}")


def _norm(action: str) -> str:
    return " ".join(action.split())


class ScienceWorldTextEnv(TextEnv):
    """ScienceWorld task variations as text; ``scienceworld/<task>-v1`` is one task type, ``tasks-v1`` a mix."""

    env_id = "scienceworld/tasks-v1"
    default_task_types: tuple[str, ...] = tuple(TASK_TYPES)
    instructions = (
        "You are an agent in ScienceWorld, a simulated house with rooms (kitchen, workshop, greenhouse, "
        "outside, ...) where you do elementary science experiments. Do the task you are given. Answer one "
        "command a turn, in ScienceWorld's syntax: look around, look at OBJ, look in OBJ, go to LOCATION, "
        "open OBJ, close OBJ, pick up OBJ, put down OBJ, move OBJ to OBJ, pour OBJ into OBJ, dunk OBJ into OBJ, "
        "mix OBJ, activate OBJ, deactivate OBJ, use OBJ on OBJ, connect OBJ to OBJ, disconnect OBJ, eat OBJ, "
        "read OBJ, flush OBJ, focus on OBJ, wait, wait1, inventory, task. Focus on an object only when the "
        "task asks for it: focusing on the wrong one fails the task. When a command is ambiguous you are "
        "shown numbered choices: answer with the number."
    )

    def __init__(
        self,
        task_types: list[str] | None = None,
        heldout_set: str = "test",
        train_variations: int | None = None,
        heldout_variations: int | None = None,
        max_steps: int | None = None,
        step_timeout_s: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(max_steps=max_steps or DEFAULT_MAX_STEPS, **kwargs)
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps}")
        if heldout_set not in HELDOUT_SETS:
            raise ValueError(f"heldout_set must be one of {', '.join(HELDOUT_SETS)}, got {heldout_set!r}")
        for name, value in (("train_variations", train_variations), ("heldout_variations", heldout_variations)):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a non-negative int or None, got {value!r}")
        if not step_timeout_s > 0:
            raise ValueError(f"step_timeout_s must be positive, got {step_timeout_s!r}")
        if task_types is not None and not task_types:
            raise ValueError("task_types must name at least one ScienceWorld task")
        self.task_types = [task_type(n).name for n in (task_types or self.default_task_types)]
        self.heldout_set = heldout_set
        self.train_variations = train_variations
        self.heldout_variations = heldout_variations
        self.step_timeout_s = float(step_timeout_s)
        self.fixed_max_steps = max_steps
        self.expert_counts: dict[str, int] = {}  # expert answers: "gold" (on the gold path), "off_gold" (raised)
        self.sim: Simulator | None = None  # this environment's JVM, from the pool
        self._busy = False
        self.gold: list[str] = []
        self._on_gold = False
        self._off_reason = ""
        self._taken = 0  # actions taken this episode (invalid ones included)
        self._pos = 0  # index of the gold action after the gold prefix taken so far
        self._last_obs = ""  # the simulator's last answer
        self.score = 0
        self._credited = 0  # score already paid out as reward this episode (a variation may start with points)
        self.task_description = ""

    # -- tasks ------------------------------------------------------------------------------
    def _tasks(self, split: str) -> list[Task]:
        subset, limit = ("train", self.train_variations) if split == "train" else (
            self.heldout_set, self.heldout_variations)
        out = []
        for name in self.task_types:
            variations = list(TASK_TYPES[name].variations_of(subset))
            for variation in variations[:limit] if limit is not None else variations:
                out.append(Task(id=f"{name}-var-{variation}", env_id=self.env_id, split=split, kind=name,
                                data={"task_type": name, "variation": variation, "set": subset}))
        return out

    @staticmethod
    def task_spec(task: Task) -> tuple[str, int]:
        """(task name, variation) of ``task``, from its data or else its id."""
        data = task.data or {}
        if "task_type" in data and "variation" in data:
            name, variation = task_type(data["task_type"]).name, int(data["variation"])
        else:
            m = re.fullmatch(r"(.+)-var-(\d+)", task.id)
            if not m:
                raise ValueError(f"task {task.id!r} names no ScienceWorld task and variation "
                                 "(expected an id like find-plant-var-7)")
            name, variation = task_type(m.group(1)).name, int(m.group(2))
        if not 0 <= variation < TASK_TYPES[name].variations:
            raise ValueError(f"{name} has variations 0..{TASK_TYPES[name].variations - 1}, not {variation}")
        return name, variation

    # -- the simulator ------------------------------------------------------------------------
    def _call(self, fn, what: str, timeout_s: float):
        if self.sim is None or not self.sim.alive:
            self.sim = POOL.acquire()
        self._busy = True
        try:
            return self.sim.call(fn, timeout_s, what)
        except ScienceWorldTimeout:
            POOL.discard(self.sim)
            self.sim = None
            self.task = None  # the episode's state died with the JVM
            raise
        finally:
            self._busy = False

    # -- playing ----------------------------------------------------------------------------
    def _reset(self, task: Task) -> str:
        name, variation = self.task_spec(task)

        def load(server):
            server.load(name, variation, "", True)  # True: generate the gold path
            gold = list(server.getGoldActionSequence())
            server.reset()
            look = server.step("look around")  # what ScienceWorldEnv.reset does
            return gold, str(server.getTaskDescription()), look, int(round(100 * server.getScore()))

        self.gold, self.task_description, look, self.score = self._call(
            load, f"loading {name} variation {variation}", max(self.step_timeout_s, 60.0))
        self.sim.loads += 1
        self.max_steps = self.fixed_max_steps or max(DEFAULT_MAX_STEPS, len(self.gold))
        self._on_gold, self._off_reason, self._taken, self._pos, self._last_obs = True, "", 0, 0, str(look)
        self._credited = 0
        return f"{self.task_description}\n\n{look}"

    def _step(self, action: str) -> tuple[str, float, bool, dict]:
        if self.task is None:
            raise RuntimeError("call reset(task) before step() (a timed-out episode cannot go on)")
        self._follow_gold(action)

        def step(server):
            obs = server.step(action)
            return str(obs), int(round(100 * server.getScore())), bool(server.getCompleted()), int(server.getNumMoves())

        obs, score, completed, moves = self._call(step, f"the command {action[:80]!r}", self.step_timeout_s)
        self._last_obs = obs
        if obs.strip().startswith(REJECTIONS):
            raise InvalidAction(obs.strip())
        # the score not yet paid out: the first valid step also pays the points a variation starts with, so an
        # episode's rewards sum to max(final score, 0) / 100
        reward = (max(score, 0) - self._credited) / 100.0
        self.score, self._credited = score, max(score, 0)
        terminated = completed or score < 0
        info: dict[str, Any] = {"score": score, "moves": moves}
        if terminated:
            info["success"] = completed and score >= 0
        return obs, reward, terminated, info

    def _next_gold(self) -> int:
        """Index of the gold action the expert takes next: a choice number (``0``) the gold path has
        where this episode shows no "Ambiguous request" prompt is passed over (the parser would
        reject it without a move passing: ScienceWorld's gold paths for the Mendelian genetics
        tasks have such numbers)."""
        pos = self._pos
        while (pos < len(self.gold) and self.gold[pos].strip().isdigit()
               and not self._last_obs.lstrip().startswith(AMBIGUOUS)):
            pos += 1
        return pos

    def _follow_gold(self, action: str) -> None:
        """Is the episode still on the gold path after ``action``? (Every action equal to the gold
        path's next one, or to the one after a choice number ``_next_gold`` passes over.)"""
        self._taken += 1
        if not self._on_gold:
            return
        nxt = self._next_gold()
        if self._pos < len(self.gold) and _norm(action) == _norm(self.gold[self._pos]):
            self._pos += 1
        elif nxt < len(self.gold) and _norm(action) == _norm(self.gold[nxt]):
            self._pos = nxt + 1
        else:
            self._on_gold = False
            expected = f"the gold path's is {self.gold[nxt]!r}" if nxt < len(self.gold) else "the gold path had ended"
            self._off_reason = f"action {self._taken} was {action[:80]!r}, {expected}"

    # -- the expert -------------------------------------------------------------------------
    def _expert(self) -> ExpertAction:
        if self.task is None:
            raise RuntimeError("call reset(task) before asking the expert")
        k = self._next_gold() if self._on_gold else self._pos
        if self._on_gold and k >= len(self.gold):
            self._on_gold, self._off_reason = False, f"the gold path's {len(self.gold)} actions are all taken"
        if not self._on_gold:
            self.expert_counts["off_gold"] = self.expert_counts.get("off_gold", 0) + 1
            raise RuntimeError(f"ScienceWorld's gold path cannot act from this state: {self._off_reason}")
        self.expert_counts["gold"] = self.expert_counts.get("gold", 0) + 1
        return ExpertAction(action=self.gold[k],
                            thought=f"Following the reference solution: step {k + 1} of {len(self.gold)}.")

    def distance_to_goal(self) -> float | None:
        """Gold actions left while on the gold path; None (unknown) off it."""
        if self.task is None or not self._on_gold:
            return None
        return float(len(self.gold) - self._next_gold())

    def close(self) -> None:
        """Give the JVM back to the pool (kill it if a call is still running in it)."""
        sim, self.sim = self.sim, None
        if sim is not None:
            (POOL.discard if self._busy else POOL.release)(sim)
        self.task = None


def _task_class(name: str) -> type[ScienceWorldTextEnv]:
    t = TASK_TYPES[name]
    doc = f"ScienceWorld task {t.task_id} {name} ({t.title}) as text."
    class_name = "ScienceWorld" + "".join(part.capitalize() for part in name.split("-")) + "Env"
    return type(class_name, (ScienceWorldTextEnv,), {
        "env_id": f"scienceworld/{name}-v1", "default_task_types": (name,), "__doc__": doc, "__module__": __name__,
    })


TASK_CLASSES = {name: _task_class(name) for name in TASK_TYPES}


def environment_classes() -> list[type[ScienceWorldTextEnv]]:
    """Every environment class the plugin registers: the mix and one per task type."""
    return [ScienceWorldTextEnv, *TASK_CLASSES.values()]
