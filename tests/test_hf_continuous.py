"""The ``hf`` policy's ``continuous`` engine (transformers' continuous batching with prefix caching)
against its ``generate`` engine, with the real SmolLM2-135M on real TextCraft prompts."""

import inspect
import re

import pytest

from agentclone.policies.base import GenerationSettings, Policy, PolicyRequest
from agentclone.policies.hf import HFPolicy
from agentclone.prompting import ActionFormat, build_prompt

MAX_NEW_TOKENS = 32
ACTION_LINE = re.compile(r"(?im)^\s*action\s*:[^\n]*\S[^\n]*\n")  # as agentclone.prompting.stop_after_action


# ----------------------------------------------------------------------------- fast checks


def test_unknown_engine_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown hf engine 'vllm'; allowed: generate, continuous"):
        HFPolicy(engine="vllm")  # before any model is loaded
    with pytest.raises(ValueError, match=r"page_size must be a positive integer"):
        HFPolicy(engine="continuous", page_size=0)


class _Recorder(Policy):
    """Stands in for the hf backend: records its options and plays the counter game."""

    seen: list[dict] = []

    def __init__(self, fmt=None, **options) -> None:
        super().__init__(fmt)
        inspect.signature(HFPolicy).bind(fmt=fmt, **options)  # options HFPolicy accepts, no model loaded
        _Recorder.seen.append(options)

    def act(self, requests):
        return ["Thought: one more.\nAction: add 1\n" for _ in requests]


def test_recipe_backend_options_reach_the_hf_policy(tmp_path, counter_env_registered, monkeypatch):
    from agentclone.pipeline import evaluate, make_collect_policy
    from agentclone.plugins import get_registry
    from agentclone.recipes import load_recipe

    p = tmp_path / "r.yaml"
    p.write_text(
        "env: {id: test/counter-v0}\n"
        "collect: {policy: hf, backend_options: {engine: continuous}}\n"
        "eval:\n  policies: [base]\n  episodes: 2\n"
        "  backend_options: {engine: continuous, page_size: 16, cache_tokens: 4096, max_batch_tokens: 512}\n"
    )
    recipe = load_recipe(p)
    assert recipe.collect.backend_options == {"engine": "continuous"}
    monkeypatch.setitem(get_registry().policy_backends, "hf", _Recorder)
    monkeypatch.setattr(_Recorder, "seen", [])
    make_collect_policy(recipe, ActionFormat())
    evaluate(recipe, None, tmp_path / "out", ActionFormat())
    collect_options, eval_options = _Recorder.seen
    assert collect_options["engine"] == "continuous"
    assert {k: eval_options[k] for k in ("engine", "page_size", "cache_tokens", "max_batch_tokens")} == {
        "engine": "continuous", "page_size": 16, "cache_tokens": 4096, "max_batch_tokens": 512}


# ----------------------------------------------------------------------------- the real model


@pytest.fixture(scope="module")
def textcraft_prompts(tmp_path_factory):
    """Real TextCraft prompts (expert trajectories cut at every step): ``(short, extended)``, where
    each prompt of ``extended`` is the same episode a step or two later, so it extends a prompt of
    ``short`` (the prefix-reuse path)."""
    from agentclone.data import read_trajectories
    from agentclone.pipeline import collect
    from agentclone.policies.base import make_policy

    path = tmp_path_factory.mktemp("demos") / "demos.jsonl"
    collect("textcraft/craft-v1", {"min_depth": 1, "max_depth": 2, "num_distractors": 2}, make_policy("expert"),
            "heldout", 4, path)
    trajs = sorted((t for t in read_trajectories(path) if len(t.steps) >= 3), key=lambda t: -len(t.steps))[:3]
    assert len(trajs) >= 2
    fmt = ActionFormat()

    def at(t, k):
        return build_prompt(t.instructions, t.steps[:k], t.steps[k].observation, fmt, lambda s: len(s) // 4, 1536)

    short = [at(t, k) for t in trajs for k in (0, 1)]
    extended = [at(t, len(t.steps) - 2 + k) for t in trajs for k in (0, 1)]  # later steps of the same episodes
    return short, extended


# Few-shot chats whose earlier answers hold several action lines: SmolLM2 then writes an action
# line and goes on, so these are the answers the stop rule cuts (TextCraft answers mostly end at
# the end-of-turn token right after the action, with no newline).
MULTILINE = [
    [{"role": "user", "content": "Plan for 4 stick."},
     {"role": "assistant", "content": "Action: get 1 oak log\nAction: craft 4 oak planks using 1 oak log\n"
                                      "Action: craft 4 stick using 2 oak planks"},
     {"role": "user", "content": "Plan for 1 torch."}],
    [{"role": "user", "content": "List the commands."},
     {"role": "assistant", "content": "Action: look\nAction: inventory\nAction: get 1 coal"},
     {"role": "user", "content": "List the commands again."}],
]


def _cut(answer: str) -> bool:
    """The answer ends right after its first full action line."""
    line = ACTION_LINE.search(answer)
    return line is not None and line.end() == len(answer)


@pytest.fixture(scope="module")
def tokenizer(smollm2_path):
    from agentclone.models import load_tokenizer

    return load_tokenizer(smollm2_path)


def _policies(tokenizer, adapter=None, stop_at_action=True, **options):
    """Both engines on one model (loaded by the continuous policy, with the adapter if any)."""
    gen = GenerationSettings(max_new_tokens=MAX_NEW_TOKENS, **options)
    kw = dict(model="smollm2-135m", tokenizer=tokenizer, batch_size=8, generation=gen, device="cpu",
              stop_at_action=stop_at_action)
    continuous = HFPolicy(engine="continuous", adapter=adapter, **kw)
    generate = HFPolicy(engine="generate", adapter=adapter, model_obj=continuous.model, **kw)
    return generate, continuous


def _act(policy, prompts):
    return policy.act([PolicyRequest(messages=m) for m in prompts])


def _same_on_both_engines(tokenizer, prompts, **options):
    """The continuous engine's answers, checked equal to generate's on the same model."""
    generate, continuous = _policies(tokenizer, **options)
    try:
        answers = _act(continuous, prompts)
        assert answers == _act(generate, prompts)
    finally:
        continuous.close()
        generate.close()
    return answers


def _prefix_matches(policy):
    """Record the prompt tokens the engine finds already cached (prefix matches) from now on."""
    cache = policy._continuous._manager.batch_processor.cache
    matched: list[int] = []
    search = cache.search_prefix_match

    def recording(request_id, prompt_ids):
        n = search(request_id, prompt_ids)
        matched.append(n)
        return n

    cache.search_prefix_match = recording
    return matched


@pytest.mark.slow  # about 40 s on a 2-core CPU
def test_continuous_answers_like_generate_and_reuses_prefixes(tokenizer, textcraft_prompts):
    short, extended = textcraft_prompts
    lengths = [len(tokenizer.apply_chat_template(m, tokenize=True)["input_ids"]) for m in short + extended]
    assert max(lengths) > 1.4 * min(lengths)  # prompts of different lengths
    generate, continuous = _policies(tokenizer)
    try:
        first = _act(continuous, MULTILINE + short)
        assert first == _act(generate, MULTILINE + short)
        assert all(_cut(a) for a in first[: len(MULTILINE)])  # cut after the action line, as generate is
        assert sum("Action:" in a for a in first) >= len(short) // 2  # real answers, not noise
        matched = _prefix_matches(continuous)
        second = _act(continuous, extended)  # each prompt extends one of the first call's
        assert second == _act(generate, extended)
        assert sum(matched) >= 32 * len(extended)  # at least a page of every prompt came from the cache
        manager = continuous._continuous._manager
        assert manager.is_running()
    finally:
        continuous.close()
        generate.close()
    assert not manager.is_running()  # close() destroyed the manager: its thread is gone
    assert continuous._continuous is None


@pytest.mark.slow  # about 50 s on a 2-core CPU
def test_continuous_with_a_lora_adapter(tmp_path, tokenizer, smollm2_path, textcraft_prompts):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32)
    lora = LoraConfig(r=8, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(base, lora)
    with torch.no_grad():  # a small random change: B is not zero, so the adapter changes the answers
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(0.5)
    peft_model.save_pretrained(tmp_path / "adapter")
    del peft_model, base

    short, extended = textcraft_prompts
    prompts = short + extended[:2]
    base_answers = _same_on_both_engines(tokenizer, prompts)
    with_adapter = _same_on_both_engines(tokenizer, prompts, adapter=str(tmp_path / "adapter"))
    assert with_adapter != base_answers  # the engine ran the adapter, not the bare base model


def test_continuous_sampling_keeps_the_stop_rule(tokenizer):
    _, continuous = _policies(tokenizer, temperature=1.0, top_p=0.9, seed=3)
    try:
        sampled = _act(continuous, MULTILINE[:1] * 6)  # one prompt, six samples
        assert continuous._continuous._manager.batch_processor.do_sample
    finally:
        continuous.close()
    assert len(set(sampled)) > 1  # temperature 1 gives different answers to the same prompt
    assert any(_cut(a) for a in sampled)
    for answer in sampled:  # never beyond the first action line
        line = ACTION_LINE.search(answer)
        assert line is None or line.end() == len(answer)


def test_stop_at_action_false_lets_answers_run_on(tokenizer):
    answers = _same_on_both_engines(tokenizer, MULTILINE, stop_at_action=False)
    assert not any(_cut(a) for a in answers) and all(ACTION_LINE.search(a) for a in answers)  # ran on past it


def test_engine_errors_surface_and_the_next_call_restarts_it(tokenizer):
    gen = GenerationSettings(max_new_tokens=8)
    policy = HFPolicy(engine="continuous", model="smollm2-135m", tokenizer=tokenizer, generation=gen, device="cpu")
    small = HFPolicy(engine="continuous", model_obj=policy.model, tokenizer=tokenizer, generation=gen,
                     page_size=8, cache_tokens=128)
    try:
        before = _act(policy, MULTILINE)
        engine = policy._continuous

        def boom(*args, **kwargs):
            raise RuntimeError("boom in the forward pass")

        engine.model.forward = boom  # the engine thread's next forward pass fails
        try:
            with pytest.raises(RuntimeError, match="boom in the forward pass"):
                _act(policy, MULTILINE)
        finally:
            del engine.model.forward
        assert engine._manager is None  # the dead engine was torn down...
        assert _act(policy, MULTILINE) == before  # ...and the next call runs a fresh one
        with pytest.raises(ValueError, match=r"does not fit the continuous engine's cache of 128 tokens"):
            _act(small, [[{"role": "user", "content": "word " * 200}]])
    finally:
        small.close()
        policy.close()


def test_an_unclosed_engine_does_not_keep_the_process_alive():
    """The engine's thread is not a daemon; the CLI's collect never closes its policy, so the exit
    must stop the engine."""
    import subprocess
    import sys

    code = (
        "from agentclone.policies.base import GenerationSettings, PolicyRequest\n"
        "from agentclone.policies.hf import HFPolicy\n"
        "p = HFPolicy(engine='continuous', generation=GenerationSettings(max_new_tokens=4), device='cpu')\n"
        "print(p.act([PolicyRequest(messages=[{'role': 'user', 'content': 'Hi'}])]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("[")


@pytest.mark.slow  # about 40 s on a 2-core CPU
def test_varlen_attention_answers_as_transformers_sdpa_and_gives_the_model_back(tokenizer, textcraft_prompts):
    """The engine's default attention (each sequence to its own context) against transformers' own (one
    masked attention over every sequence): the same answers on prompts of different lengths, first
    fresh, then extending cached prefixes (chunks after a cache, then decode batches)."""
    short, extended = textcraft_prompts
    gen = GenerationSettings(max_new_tokens=MAX_NEW_TOKENS)
    answers, model = {}, None
    for attention in ("sdpa", "varlen"):
        policy = HFPolicy(model="smollm2-135m", tokenizer=tokenizer, batch_size=8, generation=gen, device="cpu",
                          engine="continuous", attention=attention, model_obj=model)
        model = policy.model
        before = model.config._attn_implementation
        try:
            answers[attention] = (_act(policy, short), _act(policy, extended))
            switched = model.config._attn_implementation
            assert switched == ("agentclone_flash_varlen" if attention == "varlen" else before)
        finally:
            policy.close()
        assert model.config._attn_implementation == before  # closing gives the model its attention back
    assert answers["varlen"] == answers["sdpa"]
    assert sum("Action:" in a for a in answers["varlen"][0] + answers["varlen"][1]) >= len(short)  # real answers
