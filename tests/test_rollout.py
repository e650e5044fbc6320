from agentclone.data import read_trajectories
from agentclone.envs import make_env
from agentclone.policies.base import Policy, make_policy
from agentclone.prompting import ActionFormat
from agentclone.rollout import RolloutSettings, plan_episodes, run_rollouts

from conftest import CounterEnv


class ScriptedPolicy(Policy):
    """Answers from a fixed function of the conversation; records the batch sizes it was asked for."""

    name = "scripted"

    def __init__(self, answer):
        super().__init__(ActionFormat())
        self.answer = answer
        self.batches = []

    def act(self, requests):
        self.batches.append(len(requests))
        return [self.answer(r) for r in requests]


def test_expert_rollouts_are_batched_and_written(tmp_path, counter_env_registered):
    env = make_env("test/counter-v0")
    tasks = env.tasks("train")
    expert = make_policy("expert")
    calls = []
    orig = expert.act
    expert.act = lambda reqs: (calls.append(len(reqs)), orig(reqs))[1]
    out = tmp_path / "x.jsonl"
    res = run_rollouts(lambda: make_env("test/counter-v0"), expert, plan_episodes(tasks, 10),
                       RolloutSettings(concurrency=5), output=out, progress=False)
    assert res.success_rate == 1.0
    assert max(calls) == 5  # five live episodes answered in one call
    back = read_trajectories(out)
    assert len(back) == 10 and len({t.id for t in back}) == 10
    assert all(t.steps[0].thought for t in back)


def test_resume_skips_finished_episodes(tmp_path, counter_env_registered):
    tasks = make_env("test/counter-v0").tasks("train")
    out = tmp_path / "x.jsonl"
    plan = plan_episodes(tasks, 12)
    run_rollouts(lambda: make_env("test/counter-v0"), make_policy("expert"), plan[:5], output=out, progress=False)
    res = run_rollouts(lambda: make_env("test/counter-v0"), make_policy("expert"), plan, output=out, progress=False)
    assert res.skipped == 5 and len(res.trajectories) == 7
    ids = [t.id for t in read_trajectories(out)]
    assert sorted(ids) == sorted(e.id for e in plan) and len(ids) == len(set(ids))


def test_unparseable_answers_are_counted_invalid_and_shown(counter_env_registered):
    tasks = make_env("test/counter-v0").tasks("train")[:2]
    pol = ScriptedPolicy(lambda r: "I refuse to follow the format")
    res = run_rollouts(lambda: make_env("test/counter-v0", max_steps=4), pol, plan_episodes(tasks, 2), progress=False)
    for t in res.trajectories:
        assert len(t.steps) == 4 and all(s.invalid for s in t.steps) and t.truncated and not t.success
        assert t.steps[1].observation.startswith("Invalid action: no 'Action:' line")
        assert t.steps[0].raw_output == "I refuse to follow the format"


def test_consecutive_invalid_limit(counter_env_registered):
    tasks = make_env("test/counter-v0").tasks("train")[:1]
    pol = ScriptedPolicy(lambda r: "Action: jump")
    res = run_rollouts(lambda: make_env("test/counter-v0"), pol, plan_episodes(tasks, 1),
                       RolloutSettings(max_consecutive_invalid=3), progress=False)
    t = res.trajectories[0]
    assert len(t.steps) == 3 and t.truncated and "3 invalid actions in a row" in t.steps[-1].info["stopped"]


def test_crash_inside_one_episode_is_isolated(counter_env_registered):
    tasks = make_env("test/counter-v0").tasks("train")

    # episodes whose target is 6 need "add 3"; that crashes this env, the others finish
    def answer(req):
        value = int(req.messages[-1]["content"].split()[1].rstrip("."))
        target = int(req.messages[1]["content"].split()[-1].rstrip("."))
        return f"Action: add {min(3, target - value)}"

    pol = ScriptedPolicy(answer)
    res = run_rollouts(lambda: CounterEnv(crash_on=3), pol, plan_episodes(tasks, 10, shuffle=False),
                       RolloutSettings(concurrency=10), progress=False)
    errored = [t for t in res.trajectories if t.error]
    ok = [t for t in res.trajectories if not t.error]
    assert errored and all("simulated crash" in t.error for t in errored)
    assert ok and all(t.success for t in ok)
    assert len(res.trajectories) == 10
