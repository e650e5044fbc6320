"""Token-level checks of the training samples, with the real SmolLM2 tokenizer."""

import pytest

from agentclone.data import Step, Trajectory
from agentclone.models import load_tokenizer
from agentclone.prompting import ActionFormat
from agentclone.builders.bc import BehaviourCloning
from agentclone.builders.base import BuildContext
from agentclone.training import tokenize_trajectories


def traj(n=4, success=True, invalid_at=None):
    return Trajectory(
        id="e:t#0", env_id="e/x-v1", task_id="t", instructions="Craft things.", success=success,
        steps=[Step(observation=f"observation {i}", thought=f"thought {i}", action=f"get {i} oak log",
                    invalid=(i == invalid_at)) for i in range(n)],
    )


@pytest.fixture(scope="module")
def tok(smollm2_path):
    return load_tokenizer(smollm2_path)


def decoded_loss_spans(tok, row):
    spans, cur = [], []
    for t, m in zip(row["input_ids"], row["assistant_masks"]):
        if m:
            cur.append(t)
        elif cur:
            spans.append(tok.decode(cur))
            cur = []
    if cur:
        spans.append(tok.decode(cur))
    return spans


def test_template_renders_like_the_original(tok):
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]
    text = tok.apply_chat_template(msgs, tokenize=False)
    assert text == "<|im_start|>system\ns<|im_end|>\n<|im_start|>user\nu<|im_end|>\n<|im_start|>assistant\na<|im_end|>\n"


def test_loss_exactly_on_selected_assistant_turns_with_end_of_turn(tok):
    t = traj(4)
    for i, s in enumerate(t.steps):
        s.loss = i in (1, 3)
    ds = tokenize_trajectories([t], tok, ActionFormat())
    assert len(ds) == 1  # one sample per trajectory, never one per step
    spans = decoded_loss_spans(tok, ds[0])
    assert spans == [
        "Thought: thought 1\nAction: get 1 oak log<|im_end|>",
        "Thought: thought 3\nAction: get 3 oak log<|im_end|>",
    ]


def test_bc_puts_loss_on_every_valid_turn_and_last_turn_option(tok):
    trajs = [traj(3), traj(2, success=False), traj(3, invalid_at=1)]
    built = BehaviourCloning().build(trajs, BuildContext())
    assert len(built) == 2  # the failed one is dropped
    ds = tokenize_trajectories(built, tok, ActionFormat())
    assert len(decoded_loss_spans(tok, ds[0])) == 3
    assert len(decoded_loss_spans(tok, ds[1])) == 2  # no loss on the invalid step
    last = BehaviourCloning({"last_turn_only": True}).build(trajs[:1], BuildContext())
    spans = decoded_loss_spans(tok, tokenize_trajectories(last, tok, ActionFormat())[0])
    assert spans == ["Thought: thought 2\nAction: get 2 oak log<|im_end|>"]
    no_thoughts = BehaviourCloning({"include_thoughts": False}).build(trajs[:1], BuildContext())
    spans = decoded_loss_spans(tok, tokenize_trajectories(no_thoughts, tok, ActionFormat())[0])
    assert spans[0] == "Action: get 0 oak log<|im_end|>"


def test_bad_builder_option_is_a_clear_error():
    from agentclone.builders.base import make_builder

    with pytest.raises(ValueError, match="builder 'bc': option 'only_sucessful'.*allowed: only_successful"):
        make_builder("bc", {"only_sucessful": True})
