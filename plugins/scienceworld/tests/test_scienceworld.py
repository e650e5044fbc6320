"""Tests of the ScienceWorld plugin against the real simulator (Java 17 and the scienceworld jar; no mocks).

The model in the openai recipe's test is a stub HTTP server answering one fixed command.

The JVMs come from the plugin's process-wide pool: the tests share one where they can, and the module
ends by closing the pool and checking that no JVM it started is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from agentclone.envs import make_env
from agentclone.plugins import get_registry
from agentclone_scienceworld.env import TASK_TYPES, ScienceWorldTextEnv
from agentclone_scienceworld.pool import POOL, ScienceWorldTimeout

JAR = "scienceworld.jar"


def jar_processes() -> set[int]:
    """PIDs of the running processes whose command line names the ScienceWorld jar."""
    out = subprocess.run(["pgrep", "-f", JAR], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def children_running_the_jar() -> set[int]:
    """PIDs of this test process's own children that run the ScienceWorld jar (another process's
    JVMs, e.g. a measurement running beside the tests, are not counted)."""
    out = subprocess.run(["pgrep", "-P", str(os.getpid())], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()} & jar_processes()


@pytest.fixture(scope="module", autouse=True)
def no_jvm_left():
    started: set[int] = set()
    yield started
    started.update(POOL.pids())
    POOL.close()
    time.sleep(0.5)
    assert not children_running_the_jar(), "a ScienceWorld JVM of this test process is still running"
    assert not started & jar_processes()


def expert_episode(env: ScienceWorldTextEnv, task) -> tuple[list[float], dict, list]:
    """Play ``task`` with the expert to the end: (rewards, last info, expert moves)."""
    env.reset(task)
    rewards, moves, info = [], [], {}
    while True:
        move = env.expert_action()
        moves.append(move)
        _, reward, terminated, truncated, info = env.step(move.action)
        rewards.append(reward)
        if terminated or truncated:
            return rewards, info, moves


# -- registry, options, tasks (no JVM) -----------------------------------------------------------------


def test_every_task_type_is_registered_and_splits_are_disjoint():
    registered = get_registry().environments
    assert len(TASK_TYPES) == 30
    for name, t in TASK_TYPES.items():
        env_id = f"scienceworld/{name}-v1"
        assert env_id in registered
        env = make_env(env_id)
        assert env.task_types == [name] and env.instructions
        train, heldout = env.tasks("train"), env.tasks("heldout")
        train_vars = {task.data["variation"] for task in train}
        heldout_vars = {task.data["variation"] for task in heldout}
        assert train_vars == set(range(t.train)) and heldout_vars == set(range(t.train + t.dev, t.variations))
        assert not train_vars & heldout_vars and train and heldout
        assert {task.kind for task in train} == {name} and train[0].id == f"{name}-var-0"
        dev = make_env(env_id, heldout_set="dev").tasks("heldout")
        assert {task.data["set"] for task in dev} == {"dev"} and not {task.data["variation"] for task in dev} & (
            train_vars | heldout_vars)
        assert env.sim is None  # no JVM until a reset
    mix = make_env("scienceworld/tasks-v1", train_variations=2, heldout_variations=1)
    assert len(mix.tasks("train")) == 60 and len(mix.tasks("heldout")) == 30
    assert [t.id for t in mix.tasks("train")] == [t.id for t in mix.tasks("train")]  # deterministic
    assert make_env("scienceworld/tasks-v1", task_types=["4-3", "boil"]).task_types == ["find-plant", "boil"]


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="unknown ScienceWorld task 'nope'"):
        make_env("scienceworld/tasks-v1", task_types=["nope"])
    with pytest.raises(ValueError, match="heldout_set"):
        make_env("scienceworld/boil-v1", heldout_set="unseen")
    with pytest.raises(ValueError, match="train_variations"):
        make_env("scienceworld/boil-v1", train_variations=-1)
    with pytest.raises(ValueError, match="bogus"):
        make_env("scienceworld/boil-v1", bogus=1)


# -- the simulator ----------------------------------------------------------------------------------------


def test_splits_match_the_simulator(no_jvm_left):
    sim = POOL.acquire()
    no_jvm_left.add(sim.pid)
    try:
        def splits(server):
            out = {}
            for name in server.getTaskNames():
                server.load(name, 0, "", False)
                out[str(name)] = (int(server.getTaskMaxVariations(name)), list(server.getVariationsTrain()),
                                  list(server.getVariationsDev()), list(server.getVariationsTest()))
            return out

        got = sim.call(splits, 120, "listing the splits")
    finally:
        POOL.release(sim)
    assert set(got) == set(TASK_TYPES)
    for name, (variations, train, dev, test) in got.items():
        t = TASK_TYPES[name]
        assert variations == t.variations
        assert [train, dev, test] == [list(t.variations_of(s)) for s in ("train", "dev", "test")]


@pytest.mark.parametrize("env_id,split", [("scienceworld/find-plant-v1", "train"), ("scienceworld/freeze-v1", "heldout")])
def test_gold_path_reaches_the_maximum_score(env_id, split):
    env = make_env(env_id, train_variations=1, heldout_variations=1)
    task = env.tasks(split)[0]
    first = env.reset(task)
    assert first.startswith("Your task is to ") and "This room is called" in first
    rewards, info, moves = expert_episode(env, task)
    n = len(env.gold)
    assert info["success"] is True and info["score"] == 100 and env.score == 100
    assert sum(rewards) == pytest.approx(1.0) and all(-1.0 <= r <= 1.0 for r in rewards)
    # the task can be complete before the gold path's last actions (freeze's test variation 21: 4 are left)
    assert [m.action for m in moves] == env.gold[:len(moves)] and env.invalid_actions == 0
    assert moves[0].thought == f"Following the reference solution: step 1 of {n}."
    assert moves[-1].thought == f"Following the reference solution: step {len(moves)} of {n}."
    env.close()


def test_points_a_variation_starts_with_are_paid_at_the_first_step():
    # find-plant train variation 2 starts at score 8: the rewards still sum to the final score / 100
    env = make_env("scienceworld/find-plant-v1", train_variations=3)
    task = next(t for t in env.tasks("train") if t.id == "find-plant-var-2")
    env.reset(task)
    assert env.score == 8
    rewards, info, _ = expert_episode(env, task)
    assert info["score"] == 100 and sum(rewards) == pytest.approx(1.0) and rewards[0] >= 0.08
    env.close()


def test_invalid_and_ambiguous_commands():
    env = make_env("scienceworld/find-plant-v1", train_variations=1)
    env.reset(env.tasks("train")[0])
    obs, reward, terminated, truncated, info = env.step("fly to the moon")
    assert info.get("invalid") and obs == "Invalid action: No known action matches that input."
    assert reward == 0.0 and not terminated and env.invalid_actions == 1
    # an ambiguous command is a valid step that asks for a number; an answer that is none is invalid
    obs, _, _, _, info = env.step("open door")
    assert obs.startswith("Ambiguous request") and not info.get("invalid")
    obs, _, _, _, info = env.step("the second one")
    assert info.get("invalid") and obs.startswith("Invalid action: Unknown action.") and env.invalid_actions == 2
    obs, _, _, _, info = env.step("open door")
    obs, _, _, _, info = env.step("0")
    assert not info.get("invalid") and "door is now open" in obs
    env.close()


def test_off_the_gold_path_the_expert_raises_and_the_rollout_counts_it(tmp_path):
    from agentclone.policies.base import Policy
    from agentclone.rollout import RolloutSettings, plan_episodes, run_rollouts

    env = make_env("scienceworld/find-plant-v1", train_variations=1)
    env.reset(env.tasks("train")[0])
    assert env.distance_to_goal() == len(env.gold)
    assert env.gold[0] != "look around"
    env.step("look around")  # valid, but not the gold path's first action
    with pytest.raises(RuntimeError, match="gold path cannot act from this state: action 1 was 'look around'"):
        env.expert_action()
    assert env.expert_counts == {"off_gold": 1} and env.distance_to_goal() is None
    env.close()

    class LookAround(Policy):
        name = "look-around"

        def act(self, requests):
            return [self.fmt.render("look around", "Let me look.") for _ in requests]

    make = lambda: make_env("scienceworld/find-plant-v1", train_variations=1, max_steps=3)  # noqa: E731
    result = run_rollouts(make, LookAround(), plan_episodes(make().tasks("train"), 1),
                          settings=RolloutSettings(expert_labels=True, concurrency=1), progress=False)
    steps = result.trajectories[0].steps
    assert len(steps) == 3 and result.expert_labels == 1 and result.expert_label_errors == 2
    assert steps[0].expert.action == env.gold[0] and "cannot act from this state" in steps[1].expert.error


def test_the_pool_reuses_jvms_and_close_leaves_none(no_jvm_left):
    POOL.close()
    started, reused = POOL.started, POOL.reused
    env = make_env("scienceworld/find-plant-v1", train_variations=2)
    first, second = env.tasks("train")
    env.reset(first)
    pid = env.sim.pid
    env.reset(second)  # the next variation loads into the same JVM
    assert env.sim.pid == pid and env.sim.loads == 2
    env.close()
    assert POOL.idle == 1 and POOL.pids() == [pid]
    other = make_env("scienceworld/boil-v1")
    other.reset(other.tasks("train")[0])
    assert other.sim.pid == pid and POOL.started == started + 1 and POOL.reused == reused + 1
    other.close()
    assert pid in jar_processes() and pid in children_running_the_jar()
    POOL.close()
    time.sleep(0.5)
    assert pid not in jar_processes() and not children_running_the_jar() and POOL.pids() == []


def test_a_hung_jvm_is_killed_and_the_step_is_an_error(no_jvm_left):
    env = make_env("scienceworld/find-plant-v1", train_variations=1, step_timeout_s=2.0)
    task = env.tasks("train")[0]
    env.reset(task)
    pid = env.sim.pid
    no_jvm_left.add(pid)
    os.kill(pid, signal.SIGSTOP)  # the JVM hangs
    t0 = time.perf_counter()
    with pytest.raises(ScienceWorldTimeout, match=f"within 2 s; its JVM \\(pid {pid}\\) was killed"):
        env.step(env.gold[0])
    assert time.perf_counter() - t0 < 15
    time.sleep(0.5)
    assert pid not in jar_processes() and env.sim is None and pid not in POOL.pids()
    with pytest.raises(RuntimeError, match="call reset"):
        env.step("look around")
    env.reset(task)  # the next episode gets another JVM
    assert env.sim.pid != pid
    env.close()


def test_cli_collect_writes_expert_trajectories(tmp_path):
    from typer.testing import CliRunner

    from agentclone.cli import app
    from agentclone.data import read_trajectories

    out = tmp_path / "sw.jsonl"
    res = CliRunner().invoke(app, ["collect", "--env", "scienceworld/find-animal-v1", "--policy", "expert", "-n", "2",
                                   "--output", str(out), "--env-kwarg", "train_variations=2"])
    assert res.exit_code == 0, res.output
    trajs = read_trajectories(out)
    assert {t.task_id for t in trajs} == {"find-animal-var-0", "find-animal-var-1"}
    for traj in trajs:
        assert traj.success and traj.error is None and traj.num_invalid == 0 and traj.task_kind == "find-animal"
        assert traj.return_ == pytest.approx(1.0) and traj.steps[0].observation.startswith("Your task is to find")
        assert all(s.thought.startswith("Following the reference solution") for s in traj.steps)


# -- the recipes (recipes/scienceworld_*.yaml) ----------------------------------------------------------------

RECIPES = Path(__file__).resolve().parents[3] / "recipes"
# ETO's test-unseen split (eval_agent/data/sciworld/test_indices.json in Yifan-Song793/ETO): the first
# variation of each of its 24 task types; it takes the first 10 test variations, or all where fewer
ETO_FIRST_TEST_VARIATION = {
    "boil": 21, "melt": 21, "freeze": 21, "change-the-state-of-matter-of": 21, "use-thermometer": 405,
    "measure-melting-point-known-substance": 327, "power-component": 15,
    "power-component-renewable-vs-nonrenewable-energy": 15, "test-conductivity": 675,
    "test-conductivity-of-unknown-substances": 450, "find-living-thing": 225, "find-non-living-thing": 225,
    "find-plant": 225, "find-animal": 225, "grow-plant": 93, "grow-fruit": 93, "chemistry-mix": 24,
    "chemistry-mix-paint-secondary-color": 27, "chemistry-mix-paint-tertiary-color": 27,
    "lifespan-longest-lived": 93, "lifespan-shortest-lived": 93, "lifespan-longest-lived-then-shortest-lived": 93,
    "identify-life-stages-1": 9, "identify-life-stages-2": 6,
}


def recipe_tasks(name: str, overrides: dict | None = None):
    from agentclone.recipes import load_recipe

    recipe = load_recipe(RECIPES / name, overrides)
    env = make_env(recipe.env.id, **recipe.env.kwargs)
    return recipe, env.tasks("train"), env.tasks("heldout")


def by_type(tasks) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for task in tasks:
        out.setdefault(task.kind, []).append(task.data["variation"])
    return out


def test_the_recipes_evaluate_on_the_test_variations():
    recipe, train, heldout = recipe_tasks("scienceworld_bc.yaml")
    assert recipe.eval.split == "heldout" and recipe.eval.policies == ["base", "adapter"]
    assert recipe.collect.split == "train" and recipe.format == "action"
    assert {t.data["set"] for t in train} == {"train"} and {t.data["set"] for t in heldout} == {"test"}
    assert len(train) == 105 and len(heldout) == 35
    for name, variations in by_type(heldout).items():
        assert variations == list(TASK_TYPES[name].variations_of("test"))[:5]
        assert by_type(train)[name] == list(range(15))

    recipe, _, heldout = recipe_tasks("scienceworld_eval_openai.yaml")
    assert recipe.stages == ["eval"] and recipe.eval.backend == "openai" and recipe.eval.policies == ["base"]
    assert {t.data["set"] for t in heldout} == {"test"} and len(heldout) == 211  # ETO's test-unseen
    got = by_type(heldout)
    assert set(got) == set(ETO_FIRST_TEST_VARIATION)
    for name, variations in got.items():
        test = list(TASK_TYPES[name].variations_of("test"))
        assert variations == test[:10] and variations[0] == ETO_FIRST_TEST_VARIATION[name]
    # all 30 task types, as the recipe's header says: delete task_types
    _, _, every = recipe_tasks("scienceworld_eval_openai.yaml", {"env": {"kwargs": {"task_types": None}}})
    assert len(every) == 271 and set(by_type(every)) == set(TASK_TYPES)


@contextmanager
def stub_chat_server(answer: str):
    """An OpenAI-compatible endpoint on 127.0.0.1 answering a fixed command (a stub, not a model): yields its
    base URL and the list of request bodies it received."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    bodies: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # /v1/models
            self.reply({"object": "list", "data": [{"id": "stub-model", "root": "stub"}]})

        def do_POST(self):  # /v1/chat/completions
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.reply({"choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": answer}}]})

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", bodies
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_openai_recipe_evaluates_through_a_server(tmp_path):
    """recipes/scienceworld_eval_openai.yaml, cut to 2 test variations of 2 steps, against a stub server:
    every request names the served model, the report counts the episodes per task type, and each valid
    step of the trajectories keeps ScienceWorld's score (what the per-task score in the header reads)."""
    from agentclone.data import read_trajectories
    from agentclone.prompting import ActionFormat
    from agentclone.recipes import load_recipe
    from agentclone.stages import evaluate

    with stub_chat_server("Thought: I should see where I am.\nAction: look around") as (url, bodies):
        recipe = load_recipe(RECIPES / "scienceworld_eval_openai.yaml", {
            "env": {"kwargs": {"task_types": ["find-plant", "lifespan-longest-lived"], "heldout_variations": 1,
                               "max_steps": 2}},
            "eval": {"backend_options": {"base_url": url, "served_model": "stub-model", "tokenizer": None}},
        })
        report = evaluate(recipe, None, tmp_path, ActionFormat(recipe.format))
    base = report["base"]
    assert base["episodes"] == 2 and base["errored"] == 0 and base["invalid_action_rate"] == 0.0
    assert set(base["by_kind"]) == {"find-plant", "lifespan-longest-lived"}
    assert len(bodies) == 4 and {b["model"] for b in bodies} == {"stub-model"}
    assert bodies[0]["messages"][0]["content"].startswith("You are an agent in ScienceWorld")
    trajs = read_trajectories(tmp_path / "eval" / "base.jsonl")
    assert {t.task_id for t in trajs} == {"find-plant-var-225", "lifespan-longest-lived-var-93"}
    assert all(t.truncated and [s.action for s in t.steps] == ["look around"] * 2 for t in trajs)
    assert all(isinstance(s.info["score"], int) for t in trajs for s in t.steps)


def test_scores_per_task_type_final_and_highest():
    from agentclone.data import Step, Trajectory
    from agentclone_scienceworld.scores import score_table

    def episode(kind, scores, success):
        steps = [Step(observation="o", action="a", info={"score": x} if x is not None else {}) for x in scores]
        return Trajectory(id=f"{kind}{scores}", env_id="e", task_id="t", task_kind=kind, steps=steps, success=success)

    trajs = [episode("boil", [10, 50, 100], True), episode("boil", [8, 40, -100], False),
             episode("melt", [None, 20, None], False), episode("melt", [None], False)]
    rows = {r["task_type"]: r for r in score_table(trajs)}
    # boil: final 100 and 0 (a failed task's -100), highest 100 and 40
    assert rows["boil"] == {"task_type": "boil", "episodes": 2, "success": 50.0, "final": 50.0, "highest": 70.0}
    # melt: invalid steps carry no score: the last valid one counts; an episode without any scores 0
    assert (rows["melt"]["final"], rows["melt"]["highest"]) == (10.0, 10.0)
    assert rows["all"]["episodes"] == 4 and rows["all"]["final"] == 30.0 and rows["all"]["highest"] == 40.0
    assert list(rows) == ["boil", "melt", "all"]
