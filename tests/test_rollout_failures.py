"""A model that fails errors only its own episodes, and a rerun runs the errored episodes again."""

from agentclone.data import latest_per_id, read_trajectories
from agentclone.policies.base import Policy
from agentclone.prompting import ActionFormat
from agentclone.rollout import RolloutSettings, completed_ids, plan_episodes, run_rollouts

from conftest import CounterEnv


def answer_by_target(req) -> str:
    value = int(req.messages[-1]["content"].split()[1].rstrip("."))
    target = int(req.messages[1]["content"].split()[-1].rstrip("."))
    return f"Action: add {min(3, target - value)}"


class FlakyModel(Policy):
    """Plays the counter game well, but fails every call that includes one of ``bad_ids`` (as a model
    server fails a whole batch on one prompt it cannot take); ``bad_ids=None``: fails every call."""

    name = "flaky"

    def __init__(self, bad_ids=()):
        super().__init__(ActionFormat())
        self.bad_ids = bad_ids
        self.calls = []

    def act(self, requests):
        self.calls.append([r.episode_id for r in requests])
        if self.bad_ids is None:
            raise ConnectionError("model server unreachable")
        for r in requests:
            if r.episode_id in self.bad_ids:
                raise RuntimeError(f"prompt of {r.episode_id} too long for the model")
        return [answer_by_target(r) for r in requests]


def plan(n=6):
    return plan_episodes(CounterEnv().tasks("train"), n, shuffle=False)


def test_a_request_the_model_fails_on_errors_only_its_episode(tmp_path):
    episodes = plan(6)
    bad = episodes[1].id
    policy = FlakyModel(bad_ids={bad})
    out = tmp_path / "x.jsonl"
    res = run_rollouts(lambda: CounterEnv(), policy, episodes, RolloutSettings(concurrency=3), output=out,
                       progress=False)
    by_id = {t.id: t for t in res.trajectories}
    assert set(by_id) == {e.id for e in episodes}
    assert by_id[bad].error.startswith("policy failed: RuntimeError: prompt of") and not by_id[bad].steps
    assert all(t.success and t.error is None for i, t in by_id.items() if i != bad)
    assert [bad] in policy.calls  # the failing batch was retried one request at a time
    assert {t.id for t in read_trajectories(out)} == set(by_id)  # every episode written, the failed one too


def test_a_model_that_always_fails_errors_every_episode_and_the_run_ends_normally(tmp_path):
    episodes = plan(5)
    out = tmp_path / "x.jsonl"
    res = run_rollouts(lambda: CounterEnv(), FlakyModel(bad_ids=None), episodes, RolloutSettings(concurrency=2),
                       output=out, progress=False)
    assert len(res.trajectories) == 5
    assert all(t.error == "policy failed: ConnectionError: model server unreachable" for t in res.trajectories)
    written = read_trajectories(out)
    assert sorted(t.id for t in written) == sorted(e.id for e in episodes) and all(t.error for t in written)


def test_a_rerun_runs_the_errored_episodes_again_and_skips_the_finished_ones(tmp_path):
    episodes = plan(6)
    bad = {episodes[0].id, episodes[4].id}
    out = tmp_path / "x.jsonl"
    run_rollouts(lambda: CounterEnv(), FlakyModel(bad_ids=bad), episodes, RolloutSettings(concurrency=3),
                 output=out, progress=False)
    assert completed_ids(out) == {e.id for e in episodes} - bad  # errored records do not count as done

    healthy = FlakyModel()
    res = run_rollouts(lambda: CounterEnv(), healthy, episodes, RolloutSettings(concurrency=3), output=out,
                       progress=False)
    assert res.skipped == 4 and {t.id for t in res.trajectories} == bad
    assert {i for call in healthy.calls for i in call} == bad  # the finished episodes were not run again
    assert all(t.success for t in res.trajectories)

    records = read_trajectories(out)
    assert len(records) == 8  # the old errored records stay: the file is append-only
    latest = latest_per_id(records)
    assert [t.id for t in latest] == [t.id for t in records[:6]]  # one per episode, in first-seen order
    assert all(t.success and t.error is None for t in latest)
    assert completed_ids(out) == {e.id for e in episodes}

    again = run_rollouts(lambda: CounterEnv(), FlakyModel(), episodes, output=out, progress=False)
    assert again.skipped == 6 and not again.trajectories


def test_latest_per_id_keeps_the_newest_record_of_each_episode():
    from agentclone.data import Trajectory

    def rec(i, error=None):
        return Trajectory(id=i, env_id="e", task_id=i, error=error)

    records = [rec("a", "boom"), rec("b"), rec("a", "boom again"), rec("c", "x"), rec("a")]
    latest = latest_per_id(records)
    assert [t.id for t in latest] == ["a", "b", "c"]
    assert [t.error for t in latest] == [None, None, "x"]
