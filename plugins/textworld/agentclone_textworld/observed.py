"""The ``observed`` expert: TextWorld's plan, followed only as far as what the agent has seen allows.

TextWorld's own plan (the walkthrough, or ``policy_commands`` once off it) knows the whole map and
where every object lies, rooms the agent never entered included. An agent that imitates it learns
to walk straight to things it cannot know about: to guess. LEAP's point is that the privileged
expert's corrections must be *realizable*: reachable from what the agent observed.

This expert keeps what the episode showed (every observation text the environment returned, by the
room the player was in, which rooms it entered and which exits it took) and at each state looks
at the plan's next *interaction*: its first command that is neither a move nor the opening of a
door on the way, and the room ``R`` where the plan does it.

* If every object that command names was mentioned in an observation received in ``R`` (or is
  carried, and was mentioned), and ``R`` is the current room or one the agent entered, it acts:
  the command itself, or the next step of a path to ``R`` over exits the agent has taken (opening
  a closed door on the way).
* Otherwise it explores, and says so (``I have not found the milk yet; I explore north.``):
  check its inventory once, open a closed container it has seen in this room, take the first
  exit of this room it has not taken (in the order the room's text mentions them; opening a closed
  door first), else walk the known map to the nearest room that still has one of those.

What it never does: name an object or take a direction that no observation of the episode showed
it. What it still takes from the plan: which of the things it has seen to act on next (e.g.
taking a seen key before knowing what it opens); the plan is the only source of the task's
order. When nothing is left to explore and the plan still needs something unseen (it should not
happen), it follows the plan and counts a ``fallback``.
"""

from __future__ import annotations

import re
from collections import defaultdict, deque
from dataclasses import dataclass, field
from functools import lru_cache

from agentclone.envs import ExpertAction

DIRECTIONS = ("north", "south", "east", "west")
_DIRECTION_FACTS = {f"{d}_of": d for d in DIRECTIONS}
# entity types that are not things a command names: the player, the inventory, rooms, the recipe
_NOT_THINGS = frozenset({"P", "I", "r", "RECIPE", "ingredient"})


@lru_cache(maxsize=4096)
def _phrase(name: str) -> re.Pattern:
    return re.compile(r"(?<![\w-])" + re.escape(name.lower()) + r"(?![\w-])")


def mentioned(name: str, text: str) -> bool:
    """Whether ``name`` occurs in ``text`` (lower case) as a whole phrase."""
    return bool(_phrase(name).search(text))


def first_mention(name: str, text: str) -> int:
    """Where ``name`` first occurs in ``text`` (lower case); past the end when it does not."""
    match = _phrase(name).search(text)
    return match.start() if match else len(text) + 1


def direction_of(command: str) -> str | None:
    words = command.split()
    if len(words) == 2 and words[0] == "go" and words[1] in DIRECTIONS:
        return words[1]
    return None


class World:
    """The true state of one TextWorld game state, read from its facts (the expert's privilege)."""

    def __init__(self, state) -> None:
        infos = state["game"].infos
        self.types = {key: info.type for key, info in infos.items()}
        self.names = {key: (info.name or "").lower() for key, info in infos.items()}
        self.exits: dict[str, dict[str, str]] = defaultdict(dict)  # room -> direction -> room
        self.doors: dict[frozenset, str] = {}  # {room, room} -> door
        self.closed: set[str] = set()
        self.locked: set[str] = set()
        self.carried: set[str] = set()
        self.at: dict[str, str] = {}  # thing -> room (things standing in a room)
        self.holder: dict[str, str] = {}  # thing -> what it is on or in
        self.room = ""
        for fact in state["_facts"]:
            args = [a.name for a in fact.arguments]
            if fact.name in _DIRECTION_FACTS:  # north_of(a, b): a lies north of b
                self.exits[args[1]][_DIRECTION_FACTS[fact.name]] = args[0]
            elif fact.name == "link":
                self.doors[frozenset((args[0], args[2]))] = args[1]
            elif fact.name == "closed":
                self.closed.add(args[0])
            elif fact.name == "locked":
                self.locked.add(args[0])
            elif fact.name == "in" and args[1] == "I":
                self.carried.add(args[0])
            elif fact.name in ("in", "on") and len(args) == 2:
                self.holder[args[0]] = args[1]
            elif fact.name == "at":
                if args[0] == "P":
                    self.room = args[1]
                else:
                    self.at[args[0]] = args[1]
        # the names a command can contain, longest first ("red potato" before "potato")
        self.thing_names = sorted(
            {n for k, n in self.names.items() if n and self.types.get(k) not in _NOT_THINGS}, key=len, reverse=True)

    def room_of(self, name: str) -> str | None:
        """The room where the thing called ``name`` lies (on or in something there, or standing there);
        None when it is carried or nowhere."""
        for key, thing_name in self.names.items():
            if thing_name != name or self.types.get(key) in _NOT_THINGS:
                continue
            seen = set()
            while key in self.holder and key not in seen:
                seen.add(key)
                key = self.holder[key]
            if key in self.at:
                return self.at[key]
        return None

    def is_door(self, name: str) -> bool:
        return any(self.names.get(k) == name for k, t in self.types.items() if t == "d")

    def door(self, room: str, other: str) -> str | None:
        return self.doors.get(frozenset((room, other)))

    def things_in(self, command: str) -> list[str]:
        """The names of the game's things that ``command`` names, in the order it names them."""
        text, found = command.lower(), []
        for name in self.thing_names:
            match = _phrase(name).search(text)
            if match:
                found.append((match.start(), name))
                text = text[:match.start()] + " " * len(name) + text[match.end():]
        return [name for _, name in sorted(found)]


@dataclass
class Knowledge:
    """What the episode has shown the agent: observation texts (all, and by room), rooms entered,
    exits taken (each also known the other way back), whether it has seen its inventory."""

    text: str = ""
    by_room: dict[str, str] = field(default_factory=lambda: defaultdict(str))
    visited: set[str] = field(default_factory=set)
    edges: dict[tuple[str, str], str] = field(default_factory=dict)  # (room, direction) -> room
    saw_inventory: bool = False

    def observe(self, text: str, room: str) -> None:
        lower = text.lower()
        self.text += "\n" + lower
        self.by_room[room] += "\n" + lower
        self.visited.add(room)
        self.saw_inventory = self.saw_inventory or "you are carrying" in lower

    def moved(self, before: str, after: str, world: World) -> None:
        if before == after:
            return
        for direction, room in world.exits[before].items():
            if room == after:
                self.edges[(before, direction)] = after
        for direction, room in world.exits[after].items():
            if room == before:
                self.edges[(after, direction)] = before

    def seen(self, name: str, room: str, world: World) -> bool:
        """Whether the agent has seen ``name`` where the plan uses it: in ``room``, or carried."""
        if mentioned(name, self.by_room.get(room, "")):
            return True
        carried = any(world.names.get(k) == name for k in world.carried)
        return carried and mentioned(name, self.text)


def _target(plan: list[str], world: World, skip: frozenset[str] = frozenset()) -> tuple[str | None, str]:
    """The plan's next interaction (None if it only moves) and the room where it happens; commands
    in ``skip`` (questions the episode has already answered) are passed over."""
    room = world.room
    for command in plan:
        if command in skip:
            continue
        direction = direction_of(command)
        if direction is not None:
            room = world.exits[room].get(direction, room)
            continue
        words = command.split(maxsplit=1)
        if words[0] == "open" and len(words) == 2 and world.is_door(words[1]):
            continue  # a door on the way: part of the moving
        return command, room
    return None, room


def _step_towards(world: World, knowledge: Knowledge, goal) -> tuple[str, str] | None:
    """The first move on a shortest path over known exits to a room where ``goal(room)`` holds:
    (command, direction); the command opens the door first when the way is closed."""
    start = world.room
    first: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        room = queue.popleft()
        if room != start and goal(room):
            direction = first[room]
            other = knowledge.edges[(start, direction)]
            door = world.door(start, other)
            if door is not None and door in world.locked:
                return None
            if door is not None and door in world.closed:
                return f"open {world.names[door]}", direction
            return f"go {direction}", direction
        for direction in DIRECTIONS:
            nxt = knowledge.edges.get((room, direction))
            if nxt is not None and nxt not in first:
                first[nxt] = first[room] or direction
                queue.append(nxt)
    return None


def _unexplored_exits(world: World, knowledge: Knowledge, room: str) -> list[str]:
    """The exits of ``room`` not taken yet (locked doors left out), in the order its text mentions them."""
    text = knowledge.by_room.get(room, "")
    exits = [d for d, other in world.exits[room].items()
             if (room, d) not in knowledge.edges and world.door(room, other) not in world.locked]
    return sorted(exits, key=lambda d: (first_mention(d, text), DIRECTIONS.index(d)))


def _closed_seen(world: World, knowledge: Knowledge, room: str) -> list[str]:
    """Closed (not locked) containers standing in ``room`` that its text has mentioned, in that order."""
    text = knowledge.by_room.get(room, "")
    names = [world.names[k] for k in world.closed - world.locked
             if world.types.get(k) != "d" and world.at.get(k) == room and mentioned(world.names[k], text)]
    return sorted(names, key=lambda n: (first_mention(n, text), n))


def observed_expert(plan: list[str], world: World, knowledge: Knowledge, admissible: set[str],
                    thought_for, first: str | None = None, skip: frozenset[str] = frozenset(),
                    ) -> tuple[ExpertAction, str]:
    """The observed expert's action from this state, and what it did: ``act``, ``navigate``,
    ``explore`` or ``fallback``. ``first``: a command that must come before the plan's next
    interaction (reading the cookbook: TextWorld's replanned ``policy_commands`` skip it, but
    only the recipe tells the agent which ingredients to take); it happens where its thing lies.
    ``skip``: commands of the plan not to repeat (``inventory`` once the agent has seen it)."""
    if knowledge.saw_inventory:
        skip = skip | {"inventory"}
    command, target_room = _target(plan, world, skip)
    if first is not None and command not in (first, "inventory", "look"):
        things = world.things_in(first)
        room = world.room_of(things[0]) if things else None
        command, target_room = first, room or world.room
    here = world.room
    things = world.things_in(command) if command and not command.startswith("prepare ") else []
    missing = [n for n in things if not knowledge.seen(n, target_room, world)]
    known_room = target_room == here or target_room in knowledge.visited
    if not missing and known_room:
        if target_room == here:
            action = command or plan[0]
            return ExpertAction(action=action, thought=thought_for(action)), "act"
        step = _step_towards(world, knowledge, lambda r: r == target_room)
        if step is not None:
            action, direction = step
            place = world.names.get(target_room) or "room"
            if action.startswith("open "):
                door = action.removeprefix("open ")
                return ExpertAction(action=action, thought=f"The {door} is closed; I open it to go {direction}."), "navigate"
            return ExpertAction(action=action, thought=f"I go {direction}, toward the {place}."), "navigate"

    named = next((n for n in things if mentioned(n, knowledge.text)), None)
    what = f"the {named}" if named else "what I need"
    lead = f"I have not found {what} yet;"
    if not knowledge.saw_inventory:
        return ExpertAction(action="inventory", thought=f"{lead} I check what I carry."), "explore"
    for name in _closed_seen(world, knowledge, here):
        if f"open {name}" in admissible:
            return ExpertAction(action=f"open {name}", thought=f"{lead} I look in the {name}."), "explore"
    for direction in _unexplored_exits(world, knowledge, here):
        door = world.door(here, world.exits[here][direction])
        if door is not None and door in world.closed:
            name = world.names[door]
            return ExpertAction(action=f"open {name}", thought=f"{lead} I open the {name} to explore."), "explore"
        return ExpertAction(action=f"go {direction}", thought=f"{lead} I explore {direction}."), "explore"
    step = _step_towards(world, knowledge,
                         lambda r: bool(_unexplored_exits(world, knowledge, r) or _closed_seen(world, knowledge, r)))
    if step is not None:
        action, direction = step
        if action.startswith("open "):
            return ExpertAction(action=action, thought=f"{lead} I open the {action.removeprefix('open ')}."), "explore"
        return ExpertAction(action=action, thought=f"{lead} I go {direction} to explore further."), "explore"
    action = plan[0]
    return ExpertAction(action=action, thought=thought_for(action)), "fallback"
