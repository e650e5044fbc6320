"""The ``leap`` builder: the agent's own history as context, the expert's answer as the only target."""

import pytest

from agentclone.building import BuildContext
from agentclone.builders.base import make_builder
from agentclone.data import ExpertLabel, Step, Trajectory
from agentclone.models import load_tokenizer
from agentclone.prompting import ActionFormat
from agentclone.training import tokenize_trajectories


def rollout(tid="t", success=False):
    """The agent: a wrong item, an unparsable answer, then the right craft; the expert said otherwise twice."""
    return Trajectory(id=f"e:{tid}#0", env_id="e/x-v1", task_id=tid, instructions="Craft things.", success=success, steps=[
        Step(observation="Goal: craft 4 oak planks.", thought="I need birch.", action="get 1 birch log",
             expert=ExpertLabel(action="get 1 oak log", thought="Planks need 1 oak log.")),
        Step(observation="Got 1 birch log.", action="", invalid=True, raw_output="planks please",
             info={"invalid": True, "parse_error": True},
             expert=ExpertLabel(action="get 1 oak log", thought="I still need 1 oak log.")),
        Step(observation="Invalid action: no 'Action:' line found.", thought="Get oak.", action="get 1 oak log",
             expert=ExpertLabel(action="get 1 oak log", thought="I need 1 oak log.")),
        Step(observation="Got 1 oak log.", thought="Craft.", action="craft 4 oak planks using 1 oak log",
             expert=ExpertLabel(error="the expert cannot act from this state")),
    ])


def demo():
    return Trajectory(id="e:d#0", env_id="e/x-v1", task_id="d", instructions="Craft things.", success=True, steps=[
        Step(observation="Goal: craft 1 stick.", thought="Get planks.", action="get 2 oak planks"),
        Step(observation="Got 2 oak planks.", thought="Craft.", action="craft 4 stick using 2 oak planks"),
    ])


def test_targets_are_the_experts_answers_where_the_agent_differed():
    builder = make_builder("leap", {"expert_demos": 0.0})
    samples = builder.build([rollout()], BuildContext())
    assert [s.id for s in samples] == ["e:t#0@0", "e:t#0@1"]
    first, second = samples
    assert len(first.steps) == 1 and first.steps[0].action == "get 1 oak log" and first.steps[0].loss
    # the agent's own history, its unparsable answer included, is context without loss
    assert [s.loss for s in second.steps] == [False, True]
    assert second.steps[0].action == "get 1 birch log"
    assert second.steps[1].observation == "Got 1 birch log." and second.steps[1].thought == "I still need 1 oak log."
    assert builder.report["states_without_expert"] == 1 and builder.report["disagreements"] == 2


def test_state_choices_failed_only_aggregation_and_expert_demos():
    every = make_builder("leap", {"states": "all", "expert_demos": 0.0}).build([rollout()], BuildContext())
    assert [s.id for s in every] == ["e:t#0@0", "e:t#0@1", "e:t#0@2"]  # the state without an expert is skipped
    assert make_builder("leap", {"only_failed": True}).build([rollout(success=True)], BuildContext()) == []
    ctx = BuildContext(expert_demos=[demo()], earlier_rollouts=[[rollout("old")]])
    builder = make_builder("leap", {})
    mixed = builder.build([rollout()], ctx)
    assert [s.id for s in mixed] == ["e:old#0@0~round_1", "e:old#0@1~round_1", "e:t#0@0", "e:t#0@1", "e:d#0"]
    assert all(s.loss for s in mixed[-1].steps)  # the demonstration as behaviour cloning
    assert builder.report["targets_round_1"] == 2 and builder.report["expert_demos"] == 1
    no_aggregate = make_builder("leap", {"aggregate": False, "expert_demos": 0.0}).build([rollout()], ctx)
    assert len(no_aggregate) == 2


def test_rollouts_without_labels_are_dropped_with_a_reason():
    plain = rollout()
    for s in plain.steps:
        s.expert = None
    builder = make_builder("leap", {})
    assert builder.build([plain], BuildContext()) == []
    assert builder.stats.dropped == {"no expert labels (collect with expert_labels: true)": 1}


def test_completion_samples_carry_loss_exactly_on_the_experts_turn(smollm2_path):
    """Token by token: the loss mask covers the expert's thought and action and its end-of-turn token, and
    nothing of the agent's own history."""
    tok = load_tokenizer(smollm2_path)
    samples = make_builder("leap", {"expert_demos": 0.0}).build([rollout()], BuildContext())
    row = tokenize_trajectories(samples[1:], tok, ActionFormat())[0]
    masked = [t for t, m in zip(row["input_ids"], row["assistant_masks"]) if m]
    assert tok.decode(masked) == "Thought: I still need 1 oak log.\nAction: get 1 oak log<|im_end|>"
    text = tok.decode(row["input_ids"])
    assert "Action: get 1 birch log" in text  # the agent's real action stays in the context
    # the masked tokens are exactly the last assistant turn's
    last = max(i for i, m in enumerate(row["assistant_masks"]) if m)
    first = min(i for i, m in enumerate(row["assistant_masks"]) if m)
    assert all(row["assistant_masks"][first:last + 1])
    assert tok.decode(row["input_ids"][:first]).endswith("<|im_start|>assistant\n")


def test_leap_recipe_validates_and_the_objective_accepts_completions():
    from agentclone.recipes import load_recipe
    from conftest import REPO

    recipe = load_recipe(REPO / "recipes" / "textcraft_leap.yaml")
    assert recipe.builder.name == "leap" and recipe.rounds.collect.expert_labels


def test_a_builder_whose_samples_the_objective_cannot_train_is_refused(counter_env_registered):
    from agentclone.builders.base import DataBuilder
    from agentclone.plugins import get_registry
    from agentclone.recipes import RecipeError, validate_recipe

    class Pairs(DataBuilder):
        name = "pairs"
        sample_kind = "preference"

        def build(self, trajectories, context):
            return []

    get_registry().builders["pairs"] = Pairs
    try:
        with pytest.raises(RecipeError, match="pairs builder makes preference samples.*'sft'.*conversation, completion"):
            validate_recipe({"env": {"id": "test/counter-v0"}, "builder": {"name": "pairs"}})
    finally:
        get_registry().builders.pop("pairs")


def test_aggregated_rounds_give_every_sample_its_own_id():
    """The same task and repetition each round: without the round in the id, samples of two rounds collided
    (the baseline's token count, keyed by id, came out short)."""
    builder = make_builder("leap", {"expert_demos": 0.0})
    samples = builder.build([rollout()], BuildContext(earlier_rollouts=[[rollout()], [rollout()]]))
    assert len(samples) == 6 and len({s.id for s in samples}) == 6
