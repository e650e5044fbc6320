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


def _pair(system: str, history: bool = True):
    from agentclone.preferences import PreferencePair

    prompt = [{"role": "system", "content": system}, {"role": "user", "content": "Goal: craft 1 stick."}]
    if history:  # an earlier answer of the agent: context, never loss
        prompt += [{"role": "assistant", "content": "get 2 oak planks"},
                   {"role": "user", "content": "Could not parse."}]
    return PreferencePair(id="e:t#0@1", task_id="t", prompt=prompt,
                          chosen=[{"role": "assistant", "content": "Thought: planks first.\nAction: get 2 oak planks"}],
                          rejected=[{"role": "assistant", "content": "Action: craft 1 stick using 1 oak log"}])


def test_preference_cost_sft_sample_is_the_pairs_prompt_and_chosen_answer(smollm2_path):
    from agentclone.errors import UserError
    from agentclone.models import load_tokenizer
    from agentclone.preferences import tokenize_completion
    from agentclone.prompting import ActionFormat, system_prompt
    from agentclone.training import tokenize_trajectories
    from bench.preference_cost import sft_samples

    tok = load_tokenizer(smollm2_path)
    for name, history in (("thought-action", True), ("action", False)):
        pair = _pair(system_prompt("Craft the goal.", ActionFormat(name)), history)
        (traj,), fmt = sft_samples([pair])
        assert fmt == ActionFormat(name)
        row = tokenize_trajectories([traj], tok, fmt)[0]
        prompt_ids, chosen_ids, chosen_mask = tokenize_completion(tok, pair.prompt, pair.chosen)
        n = len(prompt_ids) + len(chosen_ids)
        # the tokens dpo forwards for prompt + chosen, loss exactly where dpo scores the chosen answer
        assert row["input_ids"][:n] == prompt_ids + chosen_ids
        assert row["assistant_masks"][:n] == [0] * len(prompt_ids) + chosen_mask
        # past it only the chat template's newline after the end-of-turn token, without loss
        assert len(row["input_ids"]) - n <= 1 and not any(row["assistant_masks"][n:])
    with pytest.raises(UserError, match="hint"):
        sft_samples([_pair("Some other system prompt.")])


def test_preference_cost_ratios_are_against_sft_of_the_same_run():
    from bench.preference_cost import add_ratios, case_settings

    rows = add_ratios([
        {"case": "sft", "pairs": 4, "rows": 4, "tokens_grad": 100, "train_s": 4.0, "peak_rss_gb": 2.0},
        {"case": "dpo", "pairs": 4, "rows": 4, "tokens_grad": 190, "train_s": 12.0, "peak_rss_gb": 3.0},
        {"case": "kto", "pairs": 4, "rows": 8, "tokens_grad": 190, "train_s": 20.0, "peak_rss_gb": 3.0},
        {"case": "kto", "error": "failed"},
    ])
    assert [r["tokens_forward_only"] for r in rows] == [0, 190, 570, None]  # reference; kto: KL x2 + reference
    assert [r["tokens_forwarded"] for r in rows] == [100, 380, 760, None]
    assert [r["s_per_pair"] for r in rows] == [1.0, 3.0, 5.0, None]
    assert [r["s_per_pair_vs_sft"] for r in rows] == [1.0, 3.0, 5.0, None]
    assert [r["tokens_vs_sft"] for r in rows] == [1.0, 3.8, 7.6, None]
    assert rows[1]["peak_vs_sft"] == 1.5
    # the same pairs a step in every case: kto's two rows a pair; the recipe's trl options
    assert [case_settings(c, 2).batch_size for c in ("sft", "dpo", "kto")] == [2, 2, 4]
    dpo = case_settings("dpo", 2)
    assert dpo.trl["beta"] == 0.1 and dpo.trl["loss_type"] == ["sigmoid", "sft"]
    assert (dpo.precision, dpo.gradient_checkpointing, dpo.lora.r, dpo.lora.alpha) == ("fp32", False, 16, 32)
    assert case_settings("sft", 2).trl == {} and case_settings("kto", 2).trl == {"beta": 0.1}


def test_rollout_meter_reads_the_mean_episode_an_engine_with_kv_reuse_sees():
    """--ceiling times the model on this workload: first prompt whole, later steps only their new tokens."""
    from bench.rollouts import PolicyMeter
    from agentclone.policies.base import PolicyRequest

    class Words:  # one token per word
        def __call__(self, texts, add_special_tokens=False):
            return {"input_ids": [t.split() for t in texts]}

    class Fake:
        tokenizer, batch_size, device = Words(), 8, "cpu"

        def _prompts(self, requests):
            return [" ".join(m["content"] for m in r.messages) for r in requests]

        def act(self, requests):
            return ["a b c"] * len(requests)  # 3-token answers

    policy = Fake()
    meter = PolicyMeter(policy)
    obs = lambda n: {"role": "user", "content": " ".join(["w"] * n)}  # noqa: E731
    said = {"role": "assistant", "content": "a b c"}
    # episode x: 10-token first prompt, then 5 new tokens; episode y: a 20-token first prompt alone
    policy.act([PolicyRequest(messages=[obs(10)], episode_id="x"), PolicyRequest(messages=[obs(20)], episode_id="y")])
    policy.act([PolicyRequest(messages=[obs(10), said, obs(5)], episode_id="x")])
    w = meter.snapshot()["workload"]
    assert w == {"first_prompt": 15, "later_prompt": 5, "answer": 3, "steps": 2}  # 3 steps over 2 episodes: 1.5 -> 2


def test_ceiling_runs_both_ways_on_the_same_tokens():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from bench.rollouts import ceiling

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1)).eval()
    out = ceiling(model, list(range(300)), "cpu", first_prompt=6, later_prompt=2, answer=3, steps=2, batch=4)
    assert (out["first_prompt"], out["later_prompt"], out["answer"], out["steps"], out["batch"]) == (6, 2, 3, 2, 4)
    assert out["one_at_a_time_s_per_episode"] > 0 and out["batched_s_per_episode"] > 0
    assert out["ceiling"] == out["one_at_a_time_s_per_episode"] / out["batched_s_per_episode"]
