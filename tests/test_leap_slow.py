"""One small LEAP round with the real SmolLM2-135M on TextCraft (a few minutes on a CPU)."""

import pytest

from agentclone.builders.base import BuildContext, make_builder
from agentclone.data import normalize_action, read_trajectories
from agentclone.evaluation import expert_stats, summarize
from agentclone.pipeline import collect
from agentclone.policies.base import GenerationSettings, make_policy
from agentclone.prompting import ActionFormat
from agentclone.rollout import RolloutSettings
from agentclone.training import TrainSettings, train_lora

pytestmark = pytest.mark.slow

ENV = "textcraft/craft-v1"
KWARGS = {"max_depth": 1, "num_distractors": 2, "max_steps": 4}
LABELS = RolloutSettings(concurrency=12, max_consecutive_invalid=2, expert_labels=True)


def rollouts(tmp_path, name, split, n, adapter=None):
    options = {"adapter": str(adapter)} if adapter else {}
    policy = make_policy("hf", fmt=ActionFormat(), model="smollm2-135m", generation=GenerationSettings(max_new_tokens=40),
                         batch_size=12, **options)
    try:
        collect(ENV, KWARGS, policy, split, n, tmp_path / f"{name}.jsonl", seed=7, settings=LABELS)
    finally:
        policy.close()
    return read_trajectories(tmp_path / f"{name}.jsonl")


def test_one_leap_round_targets_the_experts_actions_and_raises_agreement(tmp_path, smollm2_path):
    agent = rollouts(tmp_path, "agent", "train", 12)
    # every state the agent visited carries the expert's answer from that very state
    assert all(s.expert is not None and s.expert.action for t in agent for s in t.steps)
    samples = make_builder("leap", {"states": "all", "expert_demos": 0.0}).build(agent, BuildContext())
    assert len(samples) == sum(len(t.steps) for t in agent)
    by_id = {t.id: t for t in agent}
    for sample in samples:
        source_id, k = sample.id.rsplit("@", 1)
        source = by_id[source_id]
        k = int(k)
        target = sample.steps[-1]
        # the target is the expert's action at the agent's own state; the history is the agent's own
        assert target.loss and target.action == source.steps[k].expert.action
        assert target.observation == source.steps[k].observation
        assert [s.action for s in sample.steps[:-1]] == [s.action for s in source.steps[:k]]
        assert not any(s.loss for s in sample.steps[:-1])

    settings = TrainSettings(max_steps=10, batch_size=4, learning_rate=2e-3, max_length=512, logging_steps=5,
                             save_steps=100)
    train_lora(samples, "smollm2-135m", tmp_path / "adapter", settings, progress=False)

    base_runs = rollouts(tmp_path, "base-heldout", "heldout", 8)
    base = expert_stats(base_runs)
    tuned_runs = rollouts(tmp_path, "leap-heldout", "heldout", 8, adapter=tmp_path / "adapter")
    tuned = expert_stats(tuned_runs)
    print("agreement with the expert on held-out states the agent visited: base", base, "leap", tuned)
    # the base model never writes a valid action, so it never agrees with the expert; after 10 steps on 12
    # episodes' worth of corrections the adapter writes valid actions and takes the expert's at some states
    # (measured here: agreement 0.17, invalid 7%; how much varies with the CPU's arithmetic, so no higher bar)
    assert tuned["expert_agreement"] > base["expert_agreement"]
    assert summarize(tuned_runs)["invalid_action_rate"] <= 0.5 < summarize(base_runs)["invalid_action_rate"]
    agreed = [s for t in tuned_runs for s in t.steps if s.agrees_with_expert]
    assert all(normalize_action(s.action) == normalize_action(s.expert.action) for s in agreed)
