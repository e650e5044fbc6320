"""The benchmark scripts' arithmetic (ratios, FLOPs, MFU, token counts) on known inputs; no timings."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import CounterEnv, FlopModel, mfu, ratio, table, training_flops  # noqa: E402


def test_rollout_ratios_are_against_the_first_row_of_the_same_run():
    from bench.rollouts import add_ratios

    assert ratio(6.0, 1.5) == 4.0
    assert ratio(1.0, 0) is None and ratio(None, 2.0) is None
    rows = add_ratios([
        {"name": "c=1", "episodes_per_s": 0.5, "steps_per_s": 2.0, "episodes_per_cpu_s": 0.25,
         "actions": {"a": ["x"], "b": ["y"]}},
        {"name": "c=16", "episodes_per_s": 2.5, "steps_per_s": 7.0, "episodes_per_cpu_s": None,
         "actions": {"a": ["x"], "b": ["z"], "c": ["w"]}},
    ])
    assert rows[0]["episodes_per_s_ratio"] == 1.0
    assert (rows[1]["episodes_per_s_ratio"], rows[1]["steps_per_s_ratio"]) == (5.0, 3.5)
    assert rows[1]["episodes_per_cpu_s_ratio"] is None
    assert rows[1]["same_actions_as_baseline"] == "1/2"  # only the baseline's episodes are compared
    text = table("t", [("setting", "name"), ("ratio", "episodes_per_s_ratio")], rows)
    assert text.splitlines()[-1].split() == ["c=16", "5.00"]


def test_training_flops_lora_formula_and_mfu():
    m = FlopModel(frozen=100, trainable=10, layers=2, attn_width=4)
    # (4*100 + 6*10) * (3 + 5) + 12 * 2 * 4 * (3**2 + 5**2)
    assert training_flops(m, [3, 5]) == 460 * 8 + 96 * 34
    # full fine-tuning is the usual 6 N per token (attention aside)
    assert training_flops(FlopModel(frozen=0, trainable=1000, layers=1, attn_width=0), [7]) == 6 * 1000 * 7
    assert mfu(6944.0, 2.0, 3472.0) == 1.0
    assert mfu(1.0, 1.0, None) is None


def test_flop_model_of_a_lora_model_counts_frozen_matmuls_once():
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    # per layer q 16x16, k 16x8, v 16x8, o 16x16, gate/up/down 3x 16x32; the tied output layer 64x16
    assert linear == 2 * (256 + 128 + 128 + 256 + 3 * 512) + 64 * 16
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules="all-linear", task_type="CAUSAL_LM"))
    fm = FlopModel.of(peft_model)
    assert fm.frozen == linear  # the LoRA matrices are trainable, the base weights are not
    assert fm.trainable == sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    assert (fm.layers, fm.attn_width) == (2, 16)


def test_step_clock_leaves_warmup_steps_out():
    from bench.training import StepClock, max_relative_difference

    clock = StepClock("cpu")
    clock.start, clock.cpu_start = 0.0, 0.0
    clock.ends, clock.cpu_ends = [1.0, 2.0, 4.0], [0.5, 1.0, 2.0]
    clock.tokens, clock.padded, clock.seqs = [10, 10, 20], [12, 12, 20], [[10], [10], [20]]
    s = clock.summary(warmup=1, flop_model=None, peak=None)
    assert s["tokens"] == 30 and s["measured_s"] == 3.0 and s["tokens_per_s"] == 10.0
    assert s["tokens_per_cpu_s"] == 20.0
    assert s["padding_share"] == pytest.approx(2 / 32)
    assert max_relative_difference([1.0, 2.2], [1.0, 2.0]) == pytest.approx(0.1)


def test_shapes_match_the_public_parameter_counts():
    import torch
    from transformers import AutoModelForCausalLM

    from bench.shapes import make_config

    expected = {"smollm2-135m": 134.5e6, "qwen2.5-0.5b": 494.0e6, "qwen2.5-1.5b": 1543.7e6}
    for name, params in expected.items():
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(make_config(name))
        assert sum(p.numel() for p in model.parameters()) == pytest.approx(params, rel=0.005), name


def test_counter_env_expert_solves_every_task():
    from bench.common import expert_demos

    demos = expert_demos("counter", "heldout")
    assert len(demos) == len(CounterEnv().tasks("heldout")) and all(t.success for t in demos)


def test_one_sample_per_trajectory_costs_the_last_prefix_of_the_naive_way(smollm2_path):
    from bench.data_building import per_step_tokens, per_trajectory_tokens
    from agentclone.data import Step, Trajectory
    from agentclone.models import load_tokenizer
    from agentclone.prompting import ActionFormat

    tok = load_tokenizer(smollm2_path)
    traj = Trajectory(id="e:t#0", env_id="e/x-v1", task_id="t", instructions="Do things.", success=True,
                      steps=[Step(observation=f"obs {i}", thought=f"thought {i}", action=f"act {i}") for i in range(4)])
    whole = per_trajectory_tokens([traj], tok, ActionFormat())
    prefixes = per_step_tokens([traj], tok, ActionFormat())
    assert len(whole) == 1 and len(prefixes) == 4
    assert prefixes == sorted(prefixes) and prefixes[-1] == whole[0]  # the full sample is the last prefix


def test_continuous_batching_answer_is_cut_where_generate_stops(smollm2_path):
    from agentclone.models import load_tokenizer
    from agentclone.policies.hf_continuous import cut_at_action

    tok = load_tokenizer(smollm2_path)
    tokens = tok("Thought: I need logs.\nAction: get 1 oak log\nThought: more", add_special_tokens=False)
    text, complete = cut_at_action(tok, tokens["input_ids"])
    assert complete and text == "Thought: I need logs.\nAction: get 1 oak log\n"
    text, complete = cut_at_action(tok, tok("Thought: still thinking", add_special_tokens=False)["input_ids"])
    assert not complete and text == "Thought: still thinking"
