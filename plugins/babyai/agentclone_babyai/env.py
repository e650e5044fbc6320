"""BabyAI grid-world levels as agentclone text environments.

``babyai/<Level>-v1`` for a range of BabyAI levels (``LEVELS``: GoToRedBall .. BossLevel), and
``babyai/levels-v1`` for a mix of levels named by the ``levels`` option. The levels are
minigrid's own (``BabyAI-<Level>-v0``); this module only turns them into text:

* the observation: the mission, what the agent's egocentric 7x7 view holds (objects with their
  colour and type, doors and whether they are open, closed or locked, the nearest walls), each
  placed relative to the agent ("a red ball 2 steps ahead and 1 to the left"), what is right in
  front of the agent, what it carries, and a line saying what the last action did;
* the actions: ``turn left``, ``turn right``, ``go forward``, ``pick up``, ``drop``, ``toggle``
  (open, close or unlock the door, open the box in front) and ``done``. Any other text is an
  invalid step (``InvalidAction``: counted, the game does not move), as in TextCraft. A valid
  command that changes nothing (walking into a wall) is a normal step of the level;
* success: the level's instruction verified (the episode terminates); failure: a strict
  sequence done in the wrong order (terminates) or the step limit (truncates). The reward is
  1 on success, 0 otherwise (minigrid's time-discounted reward is in ``info["level_reward"]``).

Tasks are seeds: ``<Level>-seed-N`` with ``N`` in ``0..train_seeds-1`` for ``train`` and in
``1000000..1000000+heldout_seeds-1`` for ``heldout``, for each level of the split: the splits
never share a seed. ``heldout_levels`` makes the held-out split use other (e.g. harder) levels
than ``levels``, the training ones.

The expert is minigrid's BabyAI bot (``minigrid.utils.baby_ai_bot.BabyAIBot``), which keeps a
stack of subgoals and must see every step. The environment keeps one bot per episode and feeds
it every action actually taken (the bot's "advising" mode, made for DAgger: it replans, and
plans to undo what the agent did that breaks its plan), so ``expert_action`` answers from any
state the agent reached, without changing anything. When the bot fails on a state (its
assertions, a box the agent opened), a fresh bot takes over from the current state, with what
the agent has seen so far and only the instructions not yet done; if that fails too (a box the
mission names was opened, the bot's own assertions, a plan that loops: see ``bot_class``), the
expert raises ``RuntimeError`` (a rollout records it as the label's error and counts it). The thought
is the bot's subgoal stack as a sentence ("Go to the red ball, then pick it up.").
"""

from __future__ import annotations

import re
import traceback
from typing import Any

from agentclone.data import Task
from agentclone.envs import ExpertAction, InvalidAction, TextEnv

HELDOUT_SEED_START = 1_000_000
#: after this many steps in a row on which the bot failed and a fresh one took over, the expert gives up
MAX_RESTARTS_IN_ROW = 3
#: subgoal replans within one step after which the bot is taken to be stuck in a loop
MAX_REPLANS = 100
#: times a stuck replan is retried with the cells exploration could not see taken as seen
MAX_RESCUES = 3

#: the levels registered as ``babyai/<Level>-v1``, roughly from easiest to hardest
LEVELS = (
    "GoToRedBallGrey", "GoToRedBall", "GoToObj", "GoToLocal", "PickupLoc", "PutNextLocal", "GoTo",
    "Open", "Pickup", "UnblockPickup", "Unlock", "GoToSeq", "Synth", "SynthLoc", "MiniBossLevel",
    "BossLevel",
)
#: the default mix of ``babyai/levels-v1``
DEFAULT_MIX = ("GoToRedBall", "GoToLocal", "PickupLoc", "PutNextLocal")

#: command text -> minigrid action name
COMMANDS = {
    "turn left": "left",
    "turn right": "right",
    "go forward": "forward",
    "pick up": "pickup",
    "drop": "drop",
    "toggle": "toggle",
    "done": "done",
}
_ALIASES = {
    "left": "turn left", "right": "turn right", "forward": "go forward", "move forward": "go forward",
    "pickup": "pick up", "pick": "pick up",
}
_USAGE = "use one of: " + ", ".join(f"`{c}`" for c in COMMANDS)


def normalize_command(text: str) -> str | None:
    """The command ``text`` names (one of ``COMMANDS``), or None."""
    words = " ".join(re.sub(r"[`'\".!]", " ", text.lower()).replace("_", " ").split())
    words = _ALIASES.get(words, words)
    return words if words in COMMANDS else None


# -- levels ---------------------------------------------------------------------------------------

def _quiet(*args, **kwargs) -> None:
    """Instead of ``print`` in minigrid's level generator, which writes every rejected sample to stdout
    (``Sampling rejected: ...``), between the output of the agentclone command that runs the episodes."""


def _gym_ids() -> dict[str, str]:
    """Level name -> gymnasium id of every BabyAI level minigrid registers."""
    import gymnasium as gym
    import minigrid  # noqa: F401  (registers the levels)
    from minigrid.envs.babyai.core import roomgrid_level

    # a module global shadowing the builtin in that module only (thread-safe, unlike redirecting stdout)
    roomgrid_level.print = _quiet

    out = {}
    for env_id in gym.registry:
        m = re.fullmatch(r"BabyAI-(.+)-v\d+", env_id)
        if m:
            out[m.group(1)] = env_id
    return out


def level_name(name: str) -> str:
    """``GoToLocal`` for ``GoToLocal`` or ``BabyAI-GoToLocal-v0``; ValueError for an unknown level."""
    m = re.fullmatch(r"BabyAI-(.+)-v\d+", name)
    short = m.group(1) if m else name
    ids = _gym_ids()
    if short not in ids:
        raise ValueError(f"unknown BabyAI level {name!r}; minigrid has: {', '.join(sorted(ids))}")
    return short


# -- text rendering -------------------------------------------------------------------------------

def _article(phrase: str) -> str:
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


def object_name(obj) -> str:
    """``red ball``, ``locked yellow door``, ``open grey door``, ``wall``."""
    if obj.type == "wall":
        return "wall"
    if obj.type == "door":
        state = "locked" if obj.is_locked else "open" if obj.is_open else "closed"
        return f"{state} {obj.color} door"
    return f"{obj.color} {obj.type}"


def relative(ahead: int, right: int) -> str:
    """``2 steps ahead and 1 to the left`` for a cell ``ahead`` cells forward and ``right`` to the right."""
    parts = []
    if ahead:
        parts.append(f"{abs(ahead)} step{'s' if abs(ahead) != 1 else ''} {'ahead' if ahead > 0 else 'behind'}")
    if right:
        parts.append(f"{abs(right)} to the {'right' if right > 0 else 'left'}")
    return " and ".join(parts) or "here"


def visible_cells(env) -> list[tuple[int, int, Any]]:
    """``(ahead, right, object)`` of every visible non-empty cell of the agent's view (walls included,
    the agent's own cell left out)."""
    grid, vis_mask = env.gen_obs_grid()
    size = env.agent_view_size
    out = []
    for j in range(size):
        for i in range(size):
            ahead, right = size - 1 - j, i - size // 2
            if (ahead, right) == (0, 0) or not vis_mask[i, j]:
                continue
            cell = grid.get(i, j)
            if cell is not None:
                out.append((ahead, right, cell))
    return out


def render_view(env) -> str:
    """What the agent sees, as text: objects and doors, the nearest walls ahead / left / right,
    the cell in front, what it carries."""
    env = env.unwrapped
    cells = visible_cells(env)
    things = sorted(
        ((abs(a) + abs(r), a, r, _article(object_name(c))) for a, r, c in cells if c.type != "wall"),
    )
    seen = [f"{name} {relative(a, r)}" for _, a, r, name in things]
    walls = {(a, r) for a, r, c in cells if c.type == "wall"}
    size = env.agent_view_size
    for direction, steps in (("ahead", [(k, 0) for k in range(1, size)]),
                             ("left", [(0, -k) for k in range(1, size // 2 + 1)]),
                             ("right", [(0, k) for k in range(1, size // 2 + 1)])):
        nearest = next((s for s in steps if s in walls), None)
        if nearest is not None:
            seen.append(f"a wall {relative(*nearest)}")
    lines = [f"You see: {'; '.join(seen)}." if seen else "You see nothing around you."]
    front = env.grid.get(*env.front_pos)
    lines.append(f"In front of you: {_article(object_name(front)) if front is not None else 'an empty cell'}.")
    carrying = env.carrying
    lines.append(f"You are carrying {_article(object_name(carrying)) if carrying else 'nothing'}.")
    return "\n".join(lines)


def describe_desc(desc) -> str:
    """An instruction's object description as text, without touching it (``ObjDesc.surface`` would
    recompute which objects it matches, from where the agent stands now)."""
    s = desc.type or "object"
    if desc.color:
        s = f"{desc.color} {s}"
    if desc.loc:
        s += {"front": " in front of you", "behind": " behind you"}.get(desc.loc, f" on your {desc.loc}")
    return ("the " if len(desc.obj_set) == 1 else "a ") + s


# -- the expert's thought --------------------------------------------------------------------------

def _position_phrase(env, pos) -> str:
    import numpy as np

    delta = np.asarray(pos) - np.asarray(env.agent_pos)
    ahead, right = int(np.dot(delta, env.dir_vec)), int(np.dot(delta, env.right_vec))
    if (ahead, right) == (0, 0):
        return "this cell"
    return f"the cell {relative(ahead, right)}"


def subgoal_phrase(subgoal, previous, env) -> str:
    """One subgoal of the bot's stack as a clause; ``previous`` is the subgoal done just before it."""
    from minigrid.core.world_object import WorldObj
    from minigrid.envs.babyai.core.verifier import ObjDesc

    kind = type(subgoal).__name__
    after_object = (type(previous).__name__ == "GoNextToSubgoal"
                    and isinstance(previous.datum, (ObjDesc, WorldObj)) and previous.reason != "PutNext")
    if kind == "GoNextToSubgoal":
        datum = subgoal.datum
        if isinstance(datum, ObjDesc):
            target = describe_desc(datum)
        elif isinstance(datum, WorldObj):
            target = f"the {datum.color} {datum.type}"
        else:
            where = _position_phrase(env, datum)
            if subgoal.reason == "Explore":
                return f"explore towards {where}"
            return "step off this cell" if where == "this cell" else f"go to {where}"
        return f"go next to {target}" if subgoal.reason == "PutNext" else f"go to {target}"
    if kind == "ExploreSubgoal":
        return "explore to find what I need"
    if kind == "OpenSubgoal":
        verb = "unlock" if subgoal.reason == "Unlock" else "open"
        return f"{verb} it" if after_object else f"{verb} the door"
    if kind == "CloseSubgoal":
        return "close the door"
    if kind == "PickupSubgoal":
        return "pick it up" if after_object else "pick up the object in front of me"
    if kind == "DropSubgoal":
        return "drop it"
    return kind


def plan_sentence(stack, env, skip: frozenset[int] = frozenset()) -> str:
    """The bot's subgoal stack (top last) as one sentence, first subgoal first."""
    clauses, previous = [], None
    for subgoal in reversed(stack):
        if id(subgoal) in skip:
            continue
        if (type(subgoal).__name__ == "ExploreSubgoal" and previous is not None
                and getattr(previous, "reason", None) == "Explore"):
            continue  # "explore towards the cell ..." already says it
        clauses.append(subgoal_phrase(subgoal, previous, env))
        previous = subgoal
    if not clauses:
        return "The mission is complete."
    text = ", then ".join(clauses)
    return text[0].upper() + text[1:] + "."


def _last_instr(instr):
    """The instruction the bot puts at the bottom of its stack (done last)."""
    from minigrid.envs.babyai.core.verifier import AfterInstr, AndInstr, BeforeInstr

    if isinstance(instr, (BeforeInstr, AndInstr)):
        return _last_instr(instr.instr_b)
    if isinstance(instr, AfterInstr):
        return _last_instr(instr.instr_a)
    return instr


def _remaining_instrs(instr) -> list:
    """The action instructions of ``instr`` not yet verified, in the order the bot processes them
    (``BabyAIBot._process_instr``: the last pushed is done first)."""
    from minigrid.envs.babyai.core.verifier import AfterInstr, AndInstr, BeforeInstr

    if isinstance(instr, (BeforeInstr, AndInstr)):  # a then b: b pushed first
        rest = _remaining_instrs(instr.instr_b) if instr.b_done != "success" else []
        return rest + (_remaining_instrs(instr.instr_a) if instr.a_done != "success" else [])
    if isinstance(instr, AfterInstr):  # a after b: a pushed first
        rest = _remaining_instrs(instr.instr_a) if instr.a_done != "success" else []
        return rest + (_remaining_instrs(instr.instr_b) if instr.b_done != "success" else [])
    return [instr]


def _descs(instr) -> list:
    """Every object description of ``instr`` and its parts."""
    from minigrid.envs.babyai.core.verifier import SeqInstr

    if isinstance(instr, SeqInstr):
        return _descs(instr.instr_a) + _descs(instr.instr_b)
    return [d for d in (getattr(instr, n, None) for n in ("desc", "desc_move", "desc_fixed")) if d is not None]


_BOT_CLASS = None


def bot_class():
    """minigrid's ``BabyAIBot`` with a bound on its replanning loop.

    ``BabyAIBot.replan`` loops until a subgoal suggests an action; on some states (an unseen wall cell
    it cannot get to see) exploration pushes and pops subgoals forever (Unlock seed 63 from the start,
    where minigrid's bot hangs). This copy of the loop stops after ``MAX_REPLANS`` iterations, takes
    the cells exploration was after as seen and plans again (``MAX_RESCUES`` times), then raises
    ``RuntimeError``, so the expert fails on that state (counted) rather than hanging the rollout.
    """
    global _BOT_CLASS
    if _BOT_CLASS is None:
        from minigrid.utils.baby_ai_bot import BabyAIBot

        class GuardedBabyAIBot(BabyAIBot):
            def replan(self, action_taken=None):
                self._process_obs()
                self._check_erroneous_box_opening(action_taken)
                for subgoal in self.stack:
                    subgoal.update_agent_attributes()
                if self.stack:
                    self.stack[-1].replan_after_action(action_taken)
                while self.stack and self.stack[-1].is_exploratory():
                    self.stack.pop()
                suggested_action = None
                for rescue in range(MAX_RESCUES + 1):
                    targets = set()  # the cells exploration wanted to go and see in this loop
                    for _ in range(MAX_REPLANS):
                        if not self.stack:
                            break
                        top = self.stack[-1]
                        if getattr(top, "reason", None) == "Explore" and not hasattr(top.datum, "type"):
                            targets.add(tuple(int(v) for v in top.datum))
                        suggested_action = top.replan_before_action()
                        if suggested_action is not None:
                            break
                    else:
                        if rescue < MAX_RESCUES and targets:
                            # exploring cells it cannot get to see: take them as seen and plan again
                            for cell in targets:
                                self.vis_mask[cell] = True
                            while self.stack and self.stack[-1].is_exploratory():
                                self.stack.pop()
                            continue
                        raise RuntimeError(f"the bot's planning did not settle in {MAX_REPLANS} replans")
                    break
                if not self.stack:
                    suggested_action = self.mission.unwrapped.actions.done
                self._remember_current_state()
                return suggested_action

        _BOT_CLASS = GuardedBabyAIBot
    return _BOT_CLASS


# -- the environment ------------------------------------------------------------------------------

class BabyAIEnv(TextEnv):
    """BabyAI levels as text. ``babyai/levels-v1`` mixes ``levels``; each ``babyai/<Level>-v1`` is one level."""

    env_id = "babyai/levels-v1"
    default_levels: tuple[str, ...] = DEFAULT_MIX
    instructions = (
        "You are an agent in a BabyAI grid world of rooms, doors and objects (balls, boxes, keys). Carry out "
        "the mission. You see a 7x7 area ahead of you and to your sides, not through walls or closed doors; "
        "positions are given from where you stand and face. Answer one command a turn: `turn left`, "
        "`turn right`, `go forward`, `pick up` (the object in front of you; you carry at most one), `drop` "
        "(in front of you), `toggle` (open or close the door in front of you; a locked door opens when you "
        "carry a key of its colour) or `done`. To go to an object is to stand facing it, right in front of it."
    )

    def __init__(
        self,
        levels: list[str] | None = None,
        heldout_levels: list[str] | None = None,
        train_seeds: int = 100,
        heldout_seeds: int = 50,
        max_steps: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(max_steps=max_steps or 1, **kwargs)
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps}")
        for name, value in (("train_seeds", train_seeds), ("heldout_seeds", heldout_seeds)):
            if not isinstance(value, int) or not 0 <= value <= HELDOUT_SEED_START:
                raise ValueError(f"{name} must be an int from 0 to {HELDOUT_SEED_START}, got {value!r}")
        if levels is not None and not levels:
            raise ValueError("levels must name at least one level")
        self.levels = [level_name(n) for n in (levels or self.default_levels)]
        self.heldout_levels = [level_name(n) for n in heldout_levels] if heldout_levels else list(self.levels)
        self.train_seeds = train_seeds
        self.heldout_seeds = heldout_seeds
        self.fixed_max_steps = max_steps
        self.expert_counts: dict[str, int] = {}  # bot answers by mode: advise, restart, failed
        self._games: dict[str, Any] = {}  # level -> its minigrid environment (made once, reset per task)
        self.game = None  # the minigrid environment of this episode (privileged: the whole grid)
        self._bot = None
        self._skip: frozenset[int] = frozenset()
        self._suggestion: ExpertAction | None = None
        self._expert_error: str | None = None
        self._feedback = ""
        self._restarts_in_row = 0

    # -- tasks ------------------------------------------------------------------------------
    def _tasks(self, split: str) -> list[Task]:
        if split == "train":
            levels, seeds = self.levels, range(self.train_seeds)
        else:
            levels, seeds = self.heldout_levels, range(HELDOUT_SEED_START, HELDOUT_SEED_START + self.heldout_seeds)
        return [
            Task(id=f"{level}-seed-{seed}", env_id=self.env_id, split=split, kind=level,
                 data={"level": level, "seed": seed})
            for level in levels for seed in seeds
        ]

    def task_spec(self, task: Task) -> tuple[str, int]:
        """(level, seed) of ``task``, from its data or else its id."""
        data = task.data or {}
        if "level" in data and "seed" in data:
            return level_name(data["level"]), int(data["seed"])
        m = re.fullmatch(r"(.+)-seed-(\d+)", task.id)
        if not m:
            raise ValueError(f"task {task.id!r} names no BabyAI level and seed (expected an id like GoToLocal-seed-7)")
        return level_name(m.group(1)), int(m.group(2))

    def _game_for(self, level: str):
        if level not in self._games:
            import gymnasium as gym

            ids = _gym_ids()
            self._games[level] = gym.make(ids[level], max_steps=self.fixed_max_steps).unwrapped
        return self._games[level]

    # -- playing ----------------------------------------------------------------------------
    def _reset(self, task: Task) -> str:
        level, seed = self.task_spec(task)
        self.game = self._game_for(level)
        self.game.reset(seed=seed)
        self.max_steps = self.fixed_max_steps or self.game.max_steps
        self._feedback = ""
        self._restarts_in_row = 0
        self._start_bot(fresh=True)
        return self._render()

    @property
    def mission(self) -> str:
        return self.game.mission if self.game is not None else ""

    def _render(self) -> str:
        parts = [self._feedback] if self._feedback else []
        parts += [f"Mission: {self.mission}", render_view(self.game)]
        return "\n".join(parts)

    def _step(self, action: str) -> tuple[str, float, bool, dict]:
        if self.game is None:
            raise RuntimeError("call reset(task) before step()")
        command = normalize_command(action)
        if command is None:
            raise InvalidAction(f"unknown command {action[:60]!r}; {_USAGE}")
        game = self.game
        act = getattr(game.actions, COMMANDS[command])
        before = self._snapshot()
        _, level_reward, terminated, truncated, _ = game.step(act)
        success = bool(terminated and level_reward > 0)
        info: dict[str, Any] = {"level_reward": float(level_reward)}
        self._feedback = self._describe_outcome(command, before)
        if terminated:
            info["success"] = success
            self._feedback += " Mission complete!" if success else " Mission failed."
            self._suggestion = None
        else:
            self._advance_bot(act)
        return self._render(), float(success), bool(terminated), info

    def _snapshot(self) -> dict:
        game = self.game
        front = game.grid.get(*game.front_pos)
        return {
            "pos": tuple(game.agent_pos), "carrying": game.carrying, "front": front,
            "front_name": object_name(front) if front is not None else None,
        }

    def _describe_outcome(self, command: str, before: dict) -> str:
        game = self.game
        front = game.grid.get(*game.front_pos)
        if command in ("turn left", "turn right"):
            return f"You {command}."
        if command == "go forward":
            if tuple(game.agent_pos) != before["pos"]:
                return "You go forward."
            return f"You cannot go forward: {_article(before['front_name'])} is in the way."
        if command == "pick up":
            if game.carrying is not None and before["carrying"] is None:
                return f"You pick up the {object_name(game.carrying)}."
            if before["carrying"] is not None:
                return f"You cannot pick that up: you already carry the {object_name(before['carrying'])}."
            if before["front"] is None:
                return "There is nothing in front of you to pick up."
            return f"You cannot pick up the {before['front_name']}."
        if command == "drop":
            if before["carrying"] is None:
                return "You carry nothing to drop."
            if game.carrying is None:
                return f"You drop the {object_name(before['carrying'])}."
            return f"You cannot drop the {object_name(before['carrying'])} here: the cell in front of you is taken."
        if command == "toggle":
            old = before["front"]
            if old is None:
                return "There is nothing in front of you to toggle."
            if old.type == "door":
                now = object_name(old)
                if now == before["front_name"]:
                    if old.is_locked:
                        return f"The {old.color} door is locked; you need to carry the {old.color} key."
                    return "Nothing happens."
                return f"The {old.color} door is now {'open' if old.is_open else 'closed'}."
            if old.type == "box" and front is not old:
                inside = f"; inside was {_article(object_name(front))}" if front is not None else ", it was empty"
                return f"You open the {old.color} box{inside}."
            return "Nothing happens."
        return "You say you are done." if command == "done" else ""

    # -- the expert -------------------------------------------------------------------------
    def _start_bot(self, fresh: bool, vis_mask=None) -> None:
        """A new bot for the current state: the whole instruction (``fresh``) or only what is not done yet."""
        from minigrid.envs.babyai.core.verifier import PickupInstr

        if not fresh:
            self._restarts_in_row += 1
            gone = self._vanished_objects()
            if gone:
                self._fail(RuntimeError(f"the {gone} the mission names is gone (a box was opened)"))
                return
            if self._restarts_in_row > MAX_RESTARTS_IN_ROW:
                self._fail(RuntimeError(f"the bot failed {self._restarts_in_row} steps in a row"))
                return
        bot = bot_class()(self.game)
        if not fresh:
            bot.stack = []
            for instr in _remaining_instrs(self.game.instrs):
                bot._process_instr(instr)
            if vis_mask is not None:
                bot.vis_mask = vis_mask.copy()
        # the bot drops what a last `pick up` instruction picked up; the episode ends before that
        last = _last_instr(self.game.instrs)
        ends_with_drop = isinstance(last, PickupInstr) and bot.stack and type(bot.stack[0]).__name__ == "DropSubgoal"
        self._skip = frozenset({id(bot.stack[0])}) if ends_with_drop else frozenset()
        self._bot = bot
        self._expert_error = None
        self._suggestion = None
        try:
            self._suggest(bot.replan(), "advise" if fresh else "restart")
        except Exception as exc:  # the bot's assertions, DisappearedBoxError, ...
            if fresh:
                raise RuntimeError(f"the BabyAI bot cannot start on this level: {type(exc).__name__}: {exc}") from exc
            self._fail(exc)

    def _vanished_objects(self) -> str | None:
        """An object the mission's descriptions track that is neither on the grid nor carried (a box
        opened by toggling it): the bot's bookkeeping of positions no longer holds."""
        game = self.game
        on_grid = {id(o) for o in game.grid.grid if o is not None} | {id(game.carrying)}
        for desc in _descs(game.instrs):
            for obj in desc.obj_set:
                if id(obj) not in on_grid:
                    return f"{obj.color} {obj.type}"
        return None

    def _suggest(self, act, mode: str) -> None:
        name = self.game.actions(act).name
        command = next(c for c, n in COMMANDS.items() if n == name)
        self._suggestion = ExpertAction(action=command, thought=plan_sentence(self._bot.stack, self.game, self._skip))
        self.expert_counts[mode] = self.expert_counts.get(mode, 0) + 1

    def _fail(self, exc: BaseException) -> None:
        self._suggestion = None
        frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ is not None else []
        where = f" (in the bot's {frames[-1].name}: {frames[-1].line})" if frames else ""
        self._expert_error = f"{type(exc).__name__}: {exc}{where}"[:300]
        self.expert_counts["failed"] = self.expert_counts.get("failed", 0) + 1

    def _advance_bot(self, act) -> None:
        """Show the bot the action taken (None when it was the bot's own suggestion: its usual mode)."""
        followed = self._suggestion is not None and COMMANDS[self._suggestion.action] == self.game.actions(act).name
        if self._bot is None:
            return
        try:
            self._suggest(self._bot.replan(None if followed else act), "advise")
            self._restarts_in_row = 0
        except Exception:
            self._start_bot(fresh=False, vis_mask=self._bot.vis_mask)

    def plan(self) -> str:
        """The bot's current plan as a sentence (its thought)."""
        return self._expert().thought or ""

    def _expert(self) -> ExpertAction:
        if self.game is None:
            raise RuntimeError("call reset(task) before asking the expert")
        if self._suggestion is None:
            reason = self._expert_error or "the episode is over"
            raise RuntimeError(f"the BabyAI bot cannot act from this state: {reason}")
        return ExpertAction(action=self._suggestion.action, thought=self._suggestion.thought)

    def close(self) -> None:
        for game in self._games.values():
            game.close()
        self._games.clear()
        self.game = None


def _level_class(level: str) -> type[BabyAIEnv]:
    doc = f"BabyAI level {level} (minigrid's BabyAI-{level}) as text; ``levels`` / ``heldout_levels`` mix others in."
    return type(f"BabyAI{level}Env", (BabyAIEnv,), {
        "env_id": f"babyai/{level}-v1", "default_levels": (level,), "__doc__": doc, "__module__": __name__,
    })


LEVEL_CLASSES = {level: _level_class(level) for level in LEVELS}


def environment_classes() -> list[type[BabyAIEnv]]:
    """Every environment class the plugin registers: the mix and one per level of ``LEVELS``."""
    return [BabyAIEnv, *LEVEL_CLASSES.values()]
