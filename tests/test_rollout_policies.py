"""Model policies in rollouts: per-episode sampling seeds, ``generation.extra``, the shared base class and
the one ``Action:``-line cut (tiny random-init models with SmolLM2's tokenizer; no model download)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agentclone.data import read_trajectories
from agentclone.policies.base import (
    GenerationSettings,
    ModelPolicy,
    Policy,
    PolicyRequest,
    cut_after_action_line,
    derive_seed,
)
from agentclone.policies.hf import HFPolicy
from agentclone.prompting import ActionFormat, stop_after_action
from agentclone.rollout import RolloutSettings, plan_episodes, run_rollouts, step_seed

from conftest import CounterEnv


@pytest.fixture(scope="module")
def tokenizer(smollm2_path):
    from agentclone.models import load_tokenizer

    return load_tokenizer(smollm2_path)


@pytest.fixture(scope="module")
def tiny(tokenizer):
    """A randomly initialised 2-layer Llama over SmolLM2's vocabulary: generates in milliseconds."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config).eval()


def hf(tiny, tokenizer, batch_size=8, **gen):
    gen.setdefault("max_new_tokens", 10)
    return HFPolicy(model_obj=tiny, tokenizer=tokenizer, device="cpu", batch_size=batch_size,
                    generation=GenerationSettings(**gen))


PROMPTS = [
    "Value 0. Target 4.",
    "You are in a kitchen. There is a fridge here, and a door to the north. What do you do?",
    "Hi",
    "Crafting commands:\ncraft 4 oak planks using 1 oak logs\n\nGoal: craft oak planks.",
    "Inventory: [oak planks] (4) [stick] (2)",
    "Go.",
]


def requests(seeds, prompts=PROMPTS):
    return [PolicyRequest(messages=[{"role": "user", "content": p}], episode_id=f"ep{i}", seed=s)
            for i, (p, s) in enumerate(zip(prompts, seeds))]


# ------------------------------------------------------------------ per-episode seeds (hf)


def test_sampled_answers_do_not_depend_on_the_batch(tiny, tokenizer):
    reqs = requests([11, 12, 13, 14, 15, 16])
    together = hf(tiny, tokenizer, temperature=1.0).act(reqs)
    assert len(set(together)) == len(reqs)  # real samples, not one fixed string
    reversed_ = hf(tiny, tokenizer, temperature=1.0).act(reqs[::-1])[::-1]
    one_by_one = [hf(tiny, tokenizer, temperature=1.0).act([r])[0] for r in reqs]
    in_pairs = hf(tiny, tokenizer, batch_size=2, temperature=1.0).act(reqs)
    assert together == reversed_ == one_by_one == in_pairs
    mixed = hf(tiny, tokenizer, temperature=1.0).act(reqs[3:] + requests([21, 22, 23]))  # other company
    assert mixed[:3] == together[3:]


def test_sampled_answers_differ_by_seed_and_by_the_policy_seed(tiny, tokenizer):
    same_prompt = [PROMPTS[1]] * 4
    answers = hf(tiny, tokenizer, temperature=1.0).act(requests([1, 2, 3, 4], same_prompt))
    assert len(set(answers)) == 4
    again = hf(tiny, tokenizer, temperature=1.0).act(requests([1, 2, 3, 4], same_prompt))
    assert again == answers  # a rerun samples the same
    other = hf(tiny, tokenizer, temperature=1.0, seed=7).act(requests([1, 2, 3, 4], same_prompt))
    assert other != answers  # generation.seed still picks another sample stream
    unseeded = hf(tiny, tokenizer, temperature=1.0).act(requests([None] * 4, same_prompt))
    assert len(set(unseeded)) == 4  # requests without a seed still get samples of their own


def test_greedy_answers_are_generates_own_and_ignore_seeds(tiny, tokenizer):
    reqs = requests([1, 2, 3, 4, 5, 6])
    greedy = hf(tiny, tokenizer).act(reqs)
    assert hf(tiny, tokenizer).act(requests([9, 9, 9, 9, 9, 9])) == greedy
    for req, answer in zip(reqs, greedy):  # what plain greedy generate gives for the prompt alone
        text = tokenizer.apply_chat_template(req.messages, tokenize=False, add_generation_prompt=True)
        enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        out = tiny.generate(**enc, max_new_tokens=10, do_sample=False, temperature=None, top_p=None, top_k=None,
                            eos_token_id=[tokenizer.eos_token_id], pad_token_id=tokenizer.pad_token_id)
        assert answer == tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def test_a_sharded_or_resumed_collection_samples_what_an_uninterrupted_one_does(tmp_path, tiny, tokenizer):
    tasks = CounterEnv().tasks("train")
    episodes = plan_episodes(tasks, 6, seed=3)

    def run(eps, out, concurrency=4):
        policy = hf(tiny, tokenizer, temperature=1.0, max_new_tokens=6)
        run_rollouts(lambda: CounterEnv(max_steps=3), policy, eps, RolloutSettings(concurrency=concurrency),
                     output=out, progress=False)
        return {t.id: [s.raw_output for s in t.steps] for t in read_trajectories(out)}

    whole = run(episodes, tmp_path / "whole.jsonl")
    shards = {**run(episodes[0::2], tmp_path / "a.jsonl", 1), **run(episodes[1::2], tmp_path / "b.jsonl", 2)}
    assert shards == whole
    resumed_out = tmp_path / "resumed.jsonl"
    run(episodes[:2], resumed_out)
    assert run(episodes, resumed_out, 3) == whole
    assert len({a for answers in whole.values() for a in answers}) > 6  # real samples


def test_the_rollout_gives_every_request_its_episode_and_step_seed():
    class Recorder(Policy):
        name = "recorder"

        def __init__(self):
            super().__init__(ActionFormat())
            self.seen = []

        def act(self, reqs):
            self.seen += [(r.episode_id, len([m for m in r.messages if m["role"] == "assistant"]), r.seed)
                          for r in reqs]
            return ["Action: add 1"] * len(reqs)

    episodes = plan_episodes(CounterEnv().tasks("train"), 3, seed=5)
    policy = Recorder()
    run_rollouts(lambda: CounterEnv(), policy, episodes, RolloutSettings(concurrency=3), progress=False)
    seeds = {e.id: e.seed for e in episodes}
    assert policy.seen and all(seed == step_seed(seeds[ep], step) for ep, step, seed in policy.seen)
    assert len({seed for _, _, seed in policy.seen}) == len(policy.seen)


# ------------------------------------------------------------------ generation.extra


def test_generation_extra_reaches_generate(tiny, tokenizer):
    reqs = requests([1, 2, 3])
    greedy = hf(tiny, tokenizer).act(reqs)
    prompt = tokenizer.apply_chat_template(reqs[0].messages, tokenize=False, add_generation_prompt=True)
    with torch.no_grad():  # the greedy answer's first token
        first = int(tiny(**tokenizer(prompt, return_tensors="pt", add_special_tokens=False)).logits[0, -1].argmax())
    suppressed = hf(tiny, tokenizer, extra={"suppress_tokens": [first]}).act(reqs)
    assert suppressed[0] != greedy[0]
    # a sampling setting: top_k 1 leaves one token to sample, so sampling gives the greedy answers
    assert hf(tiny, tokenizer, temperature=1.0, extra={"top_k": 1}).act(reqs) == greedy
    assert hf(tiny, tokenizer, temperature=1.0).act(reqs) != greedy
    with pytest.raises(ValueError, match="generation.extra sets temperature"):
        hf(tiny, tokenizer, extra={"temperature": 0.5})
    with pytest.raises(ValueError, match="stopping_criteria, which the hf policy sets itself"):
        hf(tiny, tokenizer, extra={"stopping_criteria": []})


def test_generation_extra_and_request_seeds_reach_an_openai_server():
    from test_openai_policy import ChatServer, policy

    with ChatServer() as server:
        gen = GenerationSettings(temperature=0.7, seed=3, extra={"top_k": 20, "presence_penalty": 0.5})
        p = policy(server.url, generation=gen)
        p.act(requests([41, 42]))
        p.act(requests([42], PROMPTS[1:2]))
        p.close()
        with pytest.raises(ValueError, match="generation.extra sets max_tokens"):
            policy(server.url, generation=GenerationSettings(extra={"max_tokens": 3}))
    bodies = server.requests
    assert all(b["top_k"] == 20 and b["presence_penalty"] == 0.5 and b["temperature"] == 0.7 for b in bodies)
    by_prompt = sorted((b["messages"][0]["content"], b["seed"]) for b in bodies)
    assert by_prompt == sorted([(PROMPTS[0], derive_seed(3, 41)), (PROMPTS[1], derive_seed(3, 42)),
                                (PROMPTS[1], derive_seed(3, 42))])


# ------------------------------------------------------------------ one base class, one cut


def test_model_backends_share_the_model_policy_contract(tiny, tokenizer):
    from agentclone.policies.openai import OpenAIPolicy
    from agentclone.policies.vllm import VLLMPolicy

    assert issubclass(HFPolicy, ModelPolicy) and issubclass(OpenAIPolicy, ModelPolicy)
    assert issubclass(VLLMPolicy, ModelPolicy)
    p = HFPolicy(model="tiny", adapter="out/adapter", model_obj=tiny, tokenizer=tokenizer, device="cpu",
                 generation={"max_new_tokens": 5, "temperature": 0.5})
    assert p.model_id == "tiny+out/adapter" and p.gen.max_new_tokens == 5 and p.gen.temperature == 0.5
    o = OpenAIPolicy(model="m", base_url="http://127.0.0.1:9", tokenizer=None, stop_at_action=False)
    assert o.model_id == "m" and o.cut_answer(["Action: a\n", "more"]) == "Action: a\nmore"
    o.close()


PIECES = ["Thought", ":", " x", "\n", "Action", "action", " add 1", "\n\n", " ", "é", "ok\n", ":", "Action:"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=14), st.integers(0, 3))
def test_the_action_cut_stops_where_a_token_by_token_generator_stops(pieces, start):
    def generator_stop(tokens, decode):  # what a generate loop checking stop_after_action per token returns
        for k in range(1, len(tokens) + 1):
            if stop_after_action(decode(tokens[:k])):
                return decode(tokens[:k]), k
        return decode(tokens), None

    assert cut_after_action_line(pieces) == generator_stop(pieces, "".join)
    # token ids with a decoder (as the hf continuous engine and vLLM cut)
    vocab = {p: i for i, p in enumerate(PIECES)}
    ids = [vocab[p] for p in pieces]

    def decode(xs):
        return "".join(PIECES[i] for i in xs)

    assert cut_after_action_line(ids, decode) == generator_stop(ids, decode)
    text, k = generator_stop(pieces, "".join)
    if k is None or k > start:  # a known line-free prefix of ``start`` tokens changes nothing
        assert cut_after_action_line(ids, decode, start=min(start, len(ids))) == (text, k)
    # a bare string (no tokens known): cut right after the line's newline, never later than a token cut
    char_text, char_k = cut_after_action_line("".join(pieces))
    assert (char_k is None) == (k is None) and text.startswith(char_text)
    assert stop_after_action(char_text) == (k is not None)


def test_every_backend_cuts_with_the_one_function():
    from agentclone.policies.hf_continuous import cut_at_action
    from agentclone.policies.openai import cut_after_action

    class CharTokenizer:
        def decode(self, ids, skip_special_tokens=True):
            return "".join(chr(i) for i in ids)

    answer = "Thought: go\nAction: get 1 oak log\nAction: more\n"
    ids = [ord(c) for c in answer]
    assert cut_at_action(CharTokenizer(), ids) == ("Thought: go\nAction: get 1 oak log\n", True)
    assert cut_at_action(CharTokenizer(), ids, stop_at_action=False) == (answer, False)
    assert cut_after_action(answer) == "Thought: go\nAction: get 1 oak log\n"
    assert cut_after_action(answer, ["Thought: go\nAction: get 1 oak", " log\nAct", "ion: more\n"]) == \
        "Thought: go\nAction: get 1 oak log\nAct"  # to the end of the token that completes the line
