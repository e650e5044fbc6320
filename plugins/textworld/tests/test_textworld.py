"""Tests of the TextWorld plugin on real generated games: cache, game, expert, data round trip.

The games compile once per test session into a temporary directory (a few seconds each);
every test after that plays them from the cache.
"""

from __future__ import annotations

import json
import random

import pytest

from agentclone.data import from_dataset, read_trajectories, to_dataset
from agentclone.envs import make_env
from agentclone_textworld import games
from agentclone_textworld.env import TextWorldEnv, clean_text, thought_for

# The default difficulty of each family; two training games and one held-out game each.
FAMILIES = {
    "textworld/cooking-v1": {},
    "textworld/coin-v1": {},
    "textworld/treasure-v1": {},
}
SAMPLE = dict(train_games=2, heldout_games=1)


def sample_env(env_id: str, games_dir, **options) -> TextWorldEnv:
    return make_env(env_id, games_dir=str(games_dir), **{**SAMPLE, **FAMILIES[env_id], **options})


def all_tasks(env: TextWorldEnv):
    return env.tasks("train") + env.tasks("heldout")


@pytest.fixture(scope="session")
def games_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("textworld-games")


@pytest.fixture(scope="session")
def first_prepare(games_dir):
    """Compile the sample games of every family once, in parallel; what that did."""
    specs = []
    for env_id in FAMILIES:
        env = sample_env(env_id, games_dir)
        specs += [env.spec(t) for t in all_tasks(env)]
    before = games.compiled_count()
    report = games.ensure_games(specs, games_dir, progress=False)
    return {"report": report, "compiled": games.compiled_count() - before, "specs": specs}


def run_expert(env: TextWorldEnv, cap: int = 60, thoughts: list | None = None):
    """Follow the expert to the end; (won, steps, total reward, invalid steps)."""
    total, invalid = 0.0, 0
    for n in range(1, cap + 1):
        move = env.expert_action()
        if thoughts is not None:
            thoughts.append(move.thought)
        _, reward, terminated, truncated, info = env.step(move.action)
        total += reward
        invalid += bool(info.get("invalid"))
        if terminated or truncated:
            return bool(info.get("success")), n, total, invalid
    return False, cap, total, invalid


# -- tasks and options --------------------------------------------------------------------------


def test_tasks_name_games_without_compiling_them(tmp_path):
    before = games.compiled_count()
    env = make_env("textworld/cooking-v1", games_dir=str(tmp_path), recipe=2, take=1)
    train, heldout = env.tasks("train"), env.tasks("heldout")
    assert [t.id for t in train] == [f"seed-{i}" for i in range(20)]
    assert [t.id for t in heldout] == [f"seed-{10000 + i}" for i in range(10)]
    assert not {t.data["seed"] for t in train} & {t.data["seed"] for t in heldout}
    task = heldout[0]
    assert task.env_id == "textworld/cooking-v1" and task.split == "heldout"
    assert task.data == {"family": "cooking", "seed": 10000,
                         "settings": {"recipe": 2, "take": 1, "go": 1, "open": False, "cook": False, "cut": False,
                                      "drop": False}}
    assert task.kind == "cook0-cut0-drop0-go1-open0-recipe2-take1"
    assert list(tmp_path.iterdir()) == [] and games.compiled_count() == before
    sized = make_env("textworld/coin-v1", games_dir=str(tmp_path), train_games=3, heldout_games=0)
    assert len(sized.tasks("train")) == 3 and sized.tasks("heldout") == []


@pytest.mark.parametrize(
    "env_id, options, message",
    [
        ("textworld/cooking-v1", {"bogus": 1}, "bogus"),
        ("textworld/cooking-v1", {"recipe": 2, "take": 3}, "take"),
        ("textworld/cooking-v1", {"go": 5}, "go"),
        ("textworld/cooking-v1", {"recipe": 6}, "recipe"),
        ("textworld/cooking-v1", {"cook": "yes"}, "cook"),
        ("textworld/coin-v1", {"level": 0}, "level"),
        ("textworld/coin-v1", {"level": 250}, "100 rooms"),
        ("textworld/treasure-v1", {"level": 31}, "level"),
        ("textworld/treasure-v1", {"train_games": -1}, "train_games"),
        ("textworld/treasure-v1", {"heldout_games": 20000}, "heldout_games"),
    ],
)
def test_bad_options_are_clear_errors(env_id, options, message):
    with pytest.raises(ValueError, match=message):
        make_env(env_id, **options)


# -- the cache ----------------------------------------------------------------------------------


def test_games_compile_once_and_are_reused(first_prepare, games_dir):
    specs = first_prepare["specs"]
    assert first_prepare["compiled"] == len(specs) == 9
    assert not first_prepare["report"].failed
    folders = [s.directory(games_dir) for s in specs]
    assert all(sorted(p.name for p in f.iterdir()) == ["game.json", "game.z8", "meta.json"] for f in folders)
    assert not [p for p in games_dir.rglob(".tmp-*")]  # every game was renamed into place whole
    mtimes = {p: p.stat().st_mtime_ns for f in folders for p in f.iterdir()}

    before = games.compiled_count()
    for env_id in FAMILIES:  # a second run: prepare and play every game again
        env = sample_env(env_id, games_dir)
        env.prepare(all_tasks(env))
        for task in all_tasks(env):
            env.reset(task)
        env.close()
    again = games.ensure_games(specs, games_dir, progress=False)
    assert games.compiled_count() == before and again.compiled == [] and again.cached == len(specs)
    assert {p: p.stat().st_mtime_ns for f in folders for p in f.iterdir()} == mtimes

    meta = json.loads((folders[0] / "meta.json").read_text())
    assert meta["family"] == specs[0].family and meta["seed"] == specs[0].seed and meta["walkthrough"]


def test_reset_compiles_a_missing_game_on_the_spot(tmp_path):
    env = make_env("textworld/treasure-v1", games_dir=str(tmp_path), level=1, train_games=1)
    before = games.compiled_count()
    task = env.tasks("train")[0]
    obs = env.reset(task)
    assert games.compiled_count() == before + 1 and games.is_cached(env.spec(task), tmp_path)
    assert obs and "$$" not in obs  # the first observation, the logo cut
    env.reset(task)
    assert games.compiled_count() == before + 1
    env.close()


# -- the expert ----------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", list(FAMILIES))
def test_expert_wins_every_sampled_game(first_prepare, games_dir, env_id):
    env = sample_env(env_id, games_dir)
    for task in all_tasks(env):
        env.reset(task)
        walkthrough = env.walkthrough
        assert walkthrough
        thoughts: list[str] = []
        won, steps, total, invalid = run_expert(env, thoughts=thoughts)
        assert won, (env_id, task.id)
        assert invalid == 0 and steps <= len(walkthrough)
        assert total == env._state["max_score"] > 0  # every point of the game's score, no more
        assert len(thoughts) == steps and all(2 <= len(t.split()) <= 12 for t in thoughts)
    env.close()


@pytest.mark.parametrize("env_id", list(FAMILIES))
def test_expert_takes_over_from_states_off_the_walkthrough(first_prepare, games_dir, env_id):
    """Expert moves mixed with other admissible commands (never `eat`, which can lose a cooking game),
    then the expert alone from wherever that led."""
    env = sample_env(env_id, games_dir)
    rng = random.Random(0)
    off_walkthrough = 0
    for task in all_tasks(env):
        for _ in range(4):
            env.reset(task)
            ended = False
            for _ in range(rng.randint(2, 8)):
                expert = env.expert_action().action
                others = [c for c in env._state["admissible_commands"] if not c.startswith("eat") and c != expert]
                _, _, ended, _, _ = env.step(expert if rng.random() < 0.5 or not others else rng.choice(others))
                if ended:
                    break
            if ended:
                continue
            off_walkthrough += not env._on_walkthrough
            won, *_ = run_expert(env)
            assert won, (env_id, task.id)
    assert off_walkthrough >= 3  # the replanning expert really was the one finishing
    env.close()


def test_thoughts_are_short_and_name_the_step():
    assert thought_for("go north") == "I need to go north."
    assert thought_for("take carrot from fridge") == "I need the carrot from the fridge."
    assert thought_for("slice red potato with knife") == "The recipe wants the red potato sliced."
    assert thought_for("examine cookbook") == "Read the recipe first."
    for command in ["open fridge", "unlock chest with key", "cook pork chop with oven", "drop knife", "put apple on table",
                    "insert key into box", "eat meal", "prepare meal", "look", "inventory", "wave hands"]:
        assert 2 <= len(thought_for(command).split()) <= 12


# -- the game: feedback, invalid commands, observations --------------------------------------------


JUNK = ["", "xyzzy", "go nowhere", "take the moon", "x" * 5000, "é ☃ 日本", "\x00\x01\x1b[2J", "take\nthe\tmoon",
        "42", "go west go west go west", ")(*&^%$#@!", "open", "take"]
META = ["save", "restore", "restart", "quit", "undo", "script", "Q", "look. restart", "look then quit", "look, save"]


@pytest.mark.parametrize("env_id", list(FAMILIES))
def test_unknown_and_malformed_commands_get_the_games_answer(first_prepare, games_dir, env_id):
    env = sample_env(env_id, games_dir, max_steps=500)
    task = env.tasks("train")[0]
    env.reset(task)
    for action in JUNK:
        obs, reward, terminated, truncated, info = env.step(action)
        assert isinstance(obs, str) and obs and not obs.startswith("Invalid action")  # the game's own words
        assert reward == 0.0 and not terminated and not truncated
        assert info.get("invalid") is True, (action, obs)
    for action in META:
        obs, reward, terminated, truncated, info = env.step(action)
        assert obs.startswith("Invalid action: ") and "interpreter command" in obs and info["invalid"]
    assert env.invalid_actions == len(JUNK) + len(META)
    # nothing above moved the game: the expert still wins along the walkthrough
    won, steps, total, invalid = run_expert(env)
    assert won and invalid == 0 and steps <= len(env.walkthrough)
    env.close()


def test_valid_commands_outside_the_admissible_list_are_not_invalid(first_prepare, games_dir):
    """`take carrot` works in the game although TextWorld lists only `take carrot from fridge`."""
    env = sample_env("textworld/cooking-v1", games_dir)
    env.reset(env.tasks("train")[0])
    take = next(c for c in env.walkthrough if c.startswith("take ") and " from " in c)
    short = take.split(" from ")[0].upper()
    assert short.lower() not in env._state["admissible_commands"]
    obs, reward, terminated, _, info = env.step(short)
    assert reward == 1.0 and not info.get("invalid") and not terminated
    obs, reward, _, _, info = env.step("look")  # admissible, changes nothing: still valid
    assert reward == 0.0 and not info.get("invalid")
    won, *_ = run_expert(env)
    assert won
    env.close()


def test_losing_ends_the_episode_without_success(first_prepare, games_dir):
    env = sample_env("textworld/cooking-v1", games_dir)
    env.reset(env.tasks("train")[0])
    take = next(c for c in env.walkthrough if c.startswith("take "))
    env.step(take)
    food = take.removeprefix("take ").split(" from ")[0]
    obs, reward, terminated, truncated, info = env.step(f"eat {food}")
    assert terminated and not truncated and info["success"] is False and info["lost"] is True
    assert "You lost" in obs
    with pytest.raises(RuntimeError, match="lost"):
        env.expert_action()
    env.close()


def test_observation_options(first_prepare, games_dir):
    plain = sample_env("textworld/cooking-v1", games_dir)
    full = sample_env("textworld/cooking-v1", games_dir, description=True, inventory=True, admissible_commands=True)
    task = plain.tasks("train")[0]
    first = plain.reset(task)
    assert first.startswith("You are hungry!") and "-= Kitchen =-" in first
    assert "$$" not in first and not any(line.startswith(">") for line in first.splitlines())
    assert "Admissible commands" not in first and "Inventory:" not in first
    full.reset(task)
    obs, *_ = full.step("inventory")
    assert "Room: -= Kitchen =-" in obs and "\n\nInventory: You are carrying" in obs
    listed = obs.split("Admissible commands: ")[1].split(", ")
    assert full.expert_action().action in listed and "look" in listed
    plain.close(), full.close()


def test_clean_text_cuts_banner_prompt_and_blank_runs():
    raw = ("\n\n\n   ________  __\n  |        \\|  \\\n   \\$$$$$$$$| $$\n\nHello there.\n\n\n\n-= Den =-\nA den.  \n\n"
           ">                                           -= Den =-0/1")
    assert clean_text(raw) == "Hello there.\n\n-= Den =-\nA den."


def test_step_limit_truncates(first_prepare, games_dir):
    env = sample_env("textworld/coin-v1", games_dir, max_steps=2)
    env.reset(env.tasks("train")[0])
    assert env.step("look")[3] is False
    _, _, terminated, truncated, _ = env.step("look")
    assert truncated is True and terminated is False
    env.close()


# -- trajectories --------------------------------------------------------------------------------


def test_collected_trajectories_round_trip_through_the_data_model(first_prepare, games_dir, tmp_path):
    from agentclone.pipeline import collect
    from agentclone.policies.base import make_policy

    out = tmp_path / "demos.jsonl"
    kwargs = {"games_dir": str(games_dir), **SAMPLE, "admissible_commands": True}
    result = collect("textworld/cooking-v1", kwargs, make_policy("expert"), "train", 3, out)
    assert len(result.trajectories) == 3 and all(t.success and t.error is None for t in result.trajectories)
    loaded = read_trajectories(out)
    assert [t.model_dump() for t in loaded] == [t.model_dump() for t in result.trajectories]
    assert [t.model_dump() for t in from_dataset(to_dataset(loaded))] == [t.model_dump() for t in loaded]
    traj = loaded[0]
    assert traj.env_id == "textworld/cooking-v1" and traj.env_kwargs == kwargs and traj.policy == "expert"
    assert traj.instructions.startswith("You are playing a text-adventure cooking game")
    assert traj.steps[0].observation.startswith("You are hungry!")
    assert traj.steps[0].thought and traj.steps[-1].action == "eat meal" and traj.steps[-1].terminated
    assert traj.return_ == sum(s.reward for s in traj.steps) > 0
    assert {t.task_id for t in loaded} == {"seed-0", "seed-1"}  # 3 episodes cycle over 2 games
    again = collect("textworld/cooking-v1", kwargs, make_policy("expert"), "train", 3, out)
    assert again.skipped == 3 and again.trajectories == []


def test_cli_collect_and_inspect(first_prepare, games_dir, tmp_path):
    from typer.testing import CliRunner

    from agentclone.cli import app

    out = tmp_path / "coin.jsonl"
    runner = CliRunner()
    res = runner.invoke(app, ["collect", "--env", "textworld/coin-v1", "--policy", "expert", "-n", "3", "--output",
                              str(out), "--env-kwarg", f"games_dir={games_dir}", "--env-kwarg", "train_games=2"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["inspect", str(out), "--json"])
    summary = json.loads(res.stdout)
    assert summary["episodes"] == 3 and summary["success_rate"] == 1.0 and summary["invalid_action_rate"] == 0.0


# -- a harder cooking game ---------------------------------------------------------------------------


@pytest.mark.slow
def test_expert_wins_harder_cooking_games(tmp_path):
    """Six rooms, closed doors and containers, two ingredients to cook and cut."""
    env = make_env("textworld/cooking-v1", games_dir=str(tmp_path), recipe=2, take=2, go=6, open=True, cook=True,
                   cut=True, train_games=2, heldout_games=0, max_steps=100)
    tasks = env.tasks("train")
    env.prepare(tasks)
    rng = random.Random(1)
    for task in tasks:
        env.reset(task)
        won, steps, total, invalid = run_expert(env, cap=100)
        assert won and invalid == 0 and total == env._state["max_score"]
        for _ in range(3):  # and from states off the walkthrough
            env.reset(task)
            for _ in range(rng.randint(2, 8)):
                choices = [c for c in env._state["admissible_commands"]
                           if not c.startswith(("eat", "cook", "slice", "dice", "chop"))]
                env.step(rng.choice(choices))
            won, *_ = run_expert(env, cap=100)
            assert won, task.id
    env.close()
