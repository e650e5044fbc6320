"""Teacher-forced turn log-probabilities and the selectors that use a model (disagreement, a real judge)."""

import pytest
import torch

from agentclone.data import Step, Trajectory, read_trajectories
from agentclone.models import load_tokenizer
from agentclone.policies.hf import HFPolicy
from agentclone.prompting import ActionFormat
from agentclone.selectors.disagreement import DisagreementSteps
from agentclone.builders.base import BuildContext
from agentclone.builders.critical import CriticalSteps
from agentclone.training import tokenize_trajectories


@pytest.fixture
def tiny_model(tmp_path, smollm2_path):
    """A randomly initialised 2-layer Llama with SmolLM2's tokenizer (trains and generates in seconds)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = load_tokenizer(smollm2_path)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    path = tmp_path / "tiny-llama"
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def traj(n, tid="t"):
    return Trajectory(
        id=f"e:{tid}#0", env_id="e/x-v1", task_id=tid, instructions="Craft things.", success=True,
        steps=[Step(observation=f"{tid} observation {i}", thought=f"thought {i} " * (1 + i % 3),
                    action=f"get {i} oak log") for i in range(n)],
    )


def manual_turn_logprobs(policy, t):
    """The same numbers the slow way: the training sample's loss mask, one turn at a time."""
    ds = tokenize_trajectories([t], policy.tokenizer, policy.fmt)
    ids, mask = ds[0]["input_ids"], ds[0]["assistant_masks"]
    logits = policy.model(input_ids=torch.tensor([ids])).logits[0]
    logp = torch.log_softmax(logits.float(), dim=-1)
    out, cur = [], []
    for p in range(1, len(ids)):
        if mask[p]:
            cur.append(float(logp[p - 1, ids[p]]))
        elif cur:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def test_turn_logprobs_match_the_training_mask_and_batching_changes_nothing(tiny_model):
    policy = HFPolicy(model=tiny_model, device="cpu")
    trajs = [traj(3, "a"), traj(6, "b"), traj(1, "c"), Trajectory(id="e:empty#0", env_id="e/x-v1", task_id="empty")]
    batched = policy.turn_logprobs(trajs, max_batch_tokens=100_000)  # all in one padded batch
    single = policy.turn_logprobs(trajs, max_batch_tokens=1)  # one forward pass per trajectory
    sums = policy.turn_logprobs(trajs, reduce="sum")
    assert [len(s) for s in batched] == [3, 6, 1, 0]
    with torch.inference_mode():
        for t, got, got_sum in zip(trajs[:3], batched, sums):
            turns = manual_turn_logprobs(policy, t)
            assert got == pytest.approx([sum(x) / len(x) for x in turns], abs=1e-4)
            assert got_sum == pytest.approx([sum(x) for x in turns], abs=1e-3)
    for a, b in zip(batched, single):
        assert a == pytest.approx(b, abs=1e-4)
    with pytest.raises(ValueError, match="reduce"):
        policy.turn_logprobs(trajs, reduce="max")


def test_disagreement_picks_the_lowest_scoring_turns(tiny_model):
    policy = HFPolicy(model=tiny_model, device="cpu")
    trajs = [traj(10, "a"), traj(4, "b")]
    trajs[0].steps[6].invalid = True  # never selected, however unlikely
    scores = policy.turn_logprobs(trajs)
    built = CriticalSteps({"selector": "disagreement"}, selector=DisagreementSteps(scorer=policy)).build(
        trajs, BuildContext())
    for t, s in zip(built, scores):
        valid = [i for i in range(len(s)) if not t.steps[i].invalid]
        expected = sorted(sorted(valid, key=lambda i: (s[i], i))[: round(0.3 * len(s) + 1e-9)])
        assert [i for i, st in enumerate(t.steps) if st.loss] == expected
        for i in expected:
            assert t.steps[i].selection["score"] == pytest.approx(s[i], abs=1e-3)
            assert t.steps[i].selection["selector"] == "disagreement"


@pytest.mark.slow
def test_disagreement_with_smollm2_finds_the_gibberish_step(tmp_path, smollm2_path):
    from agentclone.pipeline import collect
    from agentclone.policies.base import make_policy

    collect("textcraft/craft-v1", {"min_depth": 2, "max_depth": 2, "num_distractors": 2}, make_policy("expert"),
            "train", 6, tmp_path / "demos.jsonl")
    trajs = [t for t in read_trajectories(tmp_path / "demos.jsonl") if len(t.steps) >= 4][:4]
    assert len(trajs) >= 2
    corrupted = []
    for t in trajs:
        bad = len(t.steps) // 2
        t.steps[bad].action = "zqxv wibble 77 frobnicate ~~ plank?!"
        corrupted.append(bad)
    builder = CriticalSteps({"selector": "disagreement", "budget": 0.01, "min_steps": 1})
    built = builder.build(trajs, BuildContext(model="smollm2-135m"))
    picked = [[i for i, s in enumerate(t.steps) if s.loss] for t in built]
    print("picked", picked, "gibberish at", corrupted)
    assert picked == [[bad] for bad in corrupted]
    assert builder.report["selector_stats"] == {"trajectories_scored": len(trajs)}


@pytest.mark.slow
def test_llm_judge_with_smollm2_runs_counts_and_caches(tmp_path, smollm2_path):
    from agentclone.pipeline import collect
    from agentclone.policies.base import make_policy

    collect("textcraft/craft-v1", {"max_depth": 2, "num_distractors": 2}, make_policy("expert"), "train", 3,
            tmp_path / "demos.jsonl")
    trajs = read_trajectories(tmp_path / "demos.jsonl")
    options = {"selector": "llm-judge", "selector_options": {"max_new_tokens": 48, "cache_dir": str(tmp_path / "cache")}}
    first = CriticalSteps(options)
    built = first.build(trajs, BuildContext(model="smollm2-135m"))
    stats = first.report["selector_stats"]
    print("SmolLM2 as the judge:", first.report)
    assert stats["judge_calls"] == 3 and stats.get("cache_hits", 0) == 0
    assert stats.get("answers_used", 0) + stats.get("malformed_answers", 0) == 3
    for t in built:
        assert sum(s.loss for s in t.steps) == max(1, round(0.3 * len(t.steps) + 1e-9))
    second = CriticalSteps(options)
    again = second.build(trajs, BuildContext(model="smollm2-135m"))
    assert second.report["selector_stats"].get("judge_calls", 0) == 0
    assert second.report["selector_stats"]["cache_hits"] == 3
    assert [[s.selection for s in t.steps] for t in again] == [[s.selection for s in t.steps] for t in built]
