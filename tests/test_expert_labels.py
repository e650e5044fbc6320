"""Expert labels on the agent's own states (DAgger / LEAP data), and the expert taking over with beta."""

from __future__ import annotations

import threading

import pytest

from agentclone.data import ExpertLabel, Step, load_parquet, normalize_action, read_trajectories, save_parquet
from agentclone.envs import make_env
from agentclone.policies.base import Policy
from agentclone.policies.expert import ExpertPolicy
from agentclone.prompting import ActionFormat
from agentclone.rollout import Episode, RolloutSettings, plan_episodes, run_rollouts

from conftest import CounterEnv

TEXTCRAFT = "textcraft/craft-v1"
WRONG = "get 1 acacia logs"  # the expert gets 2 at once for an acacia boat: one too few


def textcraft_task(task_id="acacia_boat"):
    env = make_env(TEXTCRAFT)
    return next(t for t in env.tasks("train") + env.tasks("heldout") if t.id == task_id)


class WrongThenExpert(Policy):
    """A model that answers one wrong action first and then does what the expert does (it peeks at the
    environment the rollout made; the rollout itself gives it none: ``needs_env`` is False)."""

    name = "wrong-then-expert"

    def __init__(self, envs):
        super().__init__(ActionFormat())
        self.envs = envs
        self.calls = 0

    def act(self, requests):
        assert len(requests) == 1 and requests[0].env is None
        self.calls += 1
        if self.calls == 1:
            return [f"Thought: one log will do.\nAction: {WRONG}"]
        move = self.envs[-1].expert_action()
        return [f"Thought: {move.thought}\nAction: {move.action}"]


def test_every_state_is_labelled_with_the_experts_action_there(tmp_path):
    task = textcraft_task()
    envs = []

    def factory():
        envs.append(make_env(TEXTCRAFT))
        return envs[-1]

    out = tmp_path / "dagger.jsonl"
    res = run_rollouts(factory, WrongThenExpert(envs), [Episode(task=task, seed=1)],
                       RolloutSettings(concurrency=1, expert_labels=True), output=out, progress=False)
    traj = res.trajectories[0]
    steps = traj.steps
    assert traj.success and traj.error is None
    assert all(s.expert is not None and s.expert.action and s.expert.error is None for s in steps)
    assert res.expert_labels == len(steps) and res.expert_label_errors == 0 and res.expert_steps == 0

    # the first state's label is what the expert policy does there
    fresh = make_env(TEXTCRAFT)
    fresh.reset(task)
    thought, action = ActionFormat().parse(ExpertPolicy().act([_request(fresh)])[0])
    assert (steps[0].expert.action, steps[0].expert.thought) == (action, thought) == ("get 2 acacia logs", thought)
    # after the wrong action the expert replans from the state the agent made: one more log
    fresh.step(WRONG)
    recovery = fresh.expert_action()
    assert steps[1].expert.action == recovery.action == "get 1 acacia logs"
    assert steps[0].action == WRONG and steps[0].agrees_with_expert is False
    assert all(s.agrees_with_expert is True for s in steps[1:])
    assert all(s.raw_output and "actor" not in s.info for s in steps)  # the agent acted throughout

    # the labels survive JSONL and Parquet
    back = read_trajectories(out)[0]
    assert [s.expert for s in back.steps] == [s.expert for s in steps]
    other = _unlabelled()
    save_parquet([back, other], tmp_path / "d.parquet")
    loaded = load_parquet(tmp_path / "d.parquet")
    assert [t.model_dump() for t in loaded] == [back.model_dump(), other.model_dump()]
    assert [s.agrees_with_expert for s in loaded[0].steps] == [False] + [True] * (len(steps) - 1)


def _request(env):
    from agentclone.policies.base import PolicyRequest

    return PolicyRequest(messages=[], env=env)


def _unlabelled():
    from agentclone.data import Trajectory

    return Trajectory(id="x", env_id="e", task_id="t", steps=[
        Step(observation="o", action="a"), Step(observation="o2", action="b", expert=ExpertLabel(error="no plan"))])


class Stubborn(Policy):
    name = "stubborn"

    def __init__(self, answer="Action: inventory"):
        super().__init__(ActionFormat())
        self.answer = answer

    def act(self, requests):
        return [self.answer for _ in requests]


def test_beta_one_executes_the_experts_action_at_every_step():
    task = textcraft_task()
    res = run_rollouts(lambda: make_env(TEXTCRAFT), Stubborn(), [Episode(task=task, seed=4)],
                       RolloutSettings(concurrency=1, expert_labels=True, expert_beta=1.0), progress=False)
    traj = res.trajectories[0]
    assert traj.success and len(traj.steps) == 4
    for s in traj.steps:
        assert s.info["actor"] == "expert" and s.raw_output is None
        assert (s.action, s.thought) == (s.expert.action, s.expert.thought) and s.agrees_with_expert is True
    assert res.expert_steps == 4 == res.expert_labels


def test_beta_mixes_the_actors_the_same_way_on_every_run():
    tasks = CounterEnv().tasks("train")

    def actors():
        res = run_rollouts(lambda: CounterEnv(), Stubborn("Action: add 1"), plan_episodes(tasks, 6, shuffle=False),
                           RolloutSettings(concurrency=3, expert_labels=True, expert_beta=0.5), progress=False)
        return {t.id: [s.info.get("actor", "agent") for s in t.steps] for t in res.trajectories}, res

    first, res = actors()
    second, _ = actors()
    assert first == second  # drawn per episode seed and step, not from a shared stream
    kinds = [a for steps in first.values() for a in steps]
    assert "expert" in kinds and "agent" in kinds and res.expert_steps == kinds.count("expert")


def test_beta_needs_labels():
    with pytest.raises(ValueError, match="expert_beta needs expert_labels"):
        RolloutSettings(expert_beta=0.3)
    settings = RolloutSettings()
    settings.expert_beta = 0.3  # set after construction: run_rollouts checks again
    with pytest.raises(ValueError, match="expert_beta needs expert_labels"):
        run_rollouts(lambda: CounterEnv(), Stubborn(), plan_episodes(CounterEnv().tasks("train"), 1), settings,
                     progress=False)
    with pytest.raises(ValueError, match="between 0 and 1"):
        RolloutSettings(expert_labels=True, expert_beta=1.5)


class ClumsyExpertEnv(CounterEnv):
    """The expert fails in some states (``raises``) and hangs once (``hang_first``)."""

    def __init__(self, hang_first=False, **kwargs):
        super().__init__(**kwargs)
        self.hang_first = hang_first
        self.asked = 0

    def _expert(self):
        self.asked += 1
        if self.hang_first and self.asked == 1:
            threading.Event().wait(1.0)
        if not self.hang_first:
            raise RuntimeError("no plan from this state")
        return super()._expert()


def _answer_by_target(req):
    value = int(req.messages[-1]["content"].split()[1].rstrip("."))
    target = int(req.messages[1]["content"].split()[-1].rstrip("."))
    return f"Action: add {min(3, target - value)}"


class ByTarget(Policy):
    name = "by-target"

    def act(self, requests):
        return [_answer_by_target(r) for r in requests]


def test_an_expert_that_fails_gives_error_labels_and_the_episode_goes_on():
    tasks = CounterEnv().tasks("train")
    # beta 1 too: where the expert cannot act, the agent's action is executed
    res = run_rollouts(lambda: ClumsyExpertEnv(), ByTarget(), plan_episodes(tasks, 4, shuffle=False),
                       RolloutSettings(concurrency=2, expert_labels=True, expert_beta=1.0), progress=False)
    steps = [s for t in res.trajectories for s in t.steps]
    assert all(t.success and t.error is None for t in res.trajectories)
    assert all(s.expert.error == "RuntimeError: no plan from this state" and s.expert.action is None for s in steps)
    assert all(s.agrees_with_expert is None and "actor" not in s.info for s in steps)
    assert res.expert_label_errors == len(steps) and res.expert_labels == 0


def test_an_expert_that_times_out_gives_an_error_label_and_the_episode_goes_on():
    tasks = CounterEnv().tasks("train")[2:3]  # target 6: three steps
    res = run_rollouts(lambda: ClumsyExpertEnv(hang_first=True), ByTarget(), plan_episodes(tasks, 1),
                       RolloutSettings(concurrency=1, expert_labels=True, step_timeout_s=0.3), progress=False)
    traj = res.trajectories[0]
    assert traj.success and traj.error is None
    assert "StepTimeout" in traj.steps[0].expert.error
    assert all(s.expert.action and s.agrees_with_expert for s in traj.steps[1:])
    assert (res.expert_label_errors, res.expert_labels) == (1, len(traj.steps) - 1)


def test_the_expert_policy_itself_gets_no_labels():
    res = run_rollouts(lambda: CounterEnv(), ExpertPolicy(), plan_episodes(CounterEnv().tasks("train"), 2),
                       RolloutSettings(expert_labels=True), progress=False)
    assert all(s.expert is None for t in res.trajectories for s in t.steps) and res.expert_labels == 0


def test_normalized_actions_and_agreement():
    assert normalize_action("  Get 1   Oak Log. ") == "get 1 oak log"
    assert normalize_action("`get 1 oak log`") == normalize_action('"get 1 oak log."') == "get 1 oak log"
    assert normalize_action("get 2 oak log") != normalize_action("get 1 oak log")

    def step(action, label):
        return Step(observation="o", action=action, expert=label)

    assert step("Get 1 oak log.", ExpertLabel(action="get 1 oak log")).agrees_with_expert is True
    assert step("get 2 oak log", ExpertLabel(action="get 1 oak log")).agrees_with_expert is False
    assert step("get 1 oak log", None).agrees_with_expert is None
    assert step("get 1 oak log", ExpertLabel(error="timeout")).agrees_with_expert is None
    with pytest.raises(ValueError):
        ExpertLabel(action="a", surprise=1)
