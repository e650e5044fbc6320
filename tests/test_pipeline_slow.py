"""A small version of the whole pipeline with the real SmolLM2-135M (minutes on a CPU)."""

import json

import pytest

from agentclone.data import read_trajectories
from agentclone.envs import make_env
from agentclone.evaluation import next_action_accuracy
from agentclone.pipeline import collect
from agentclone.policies.base import GenerationSettings, make_policy
from agentclone.prompting import ActionFormat
from agentclone.builders.base import BuildContext, make_builder
from agentclone.training import TrainSettings, train_lora

pytestmark = pytest.mark.slow

ENV = "textcraft/craft-v1"
KWARGS = {"max_depth": 1, "num_distractors": 2, "max_steps": 8}


def test_bc_adapter_imitates_the_expert_on_heldout_goals(tmp_path, smollm2_path):
    expert = make_policy("expert")
    collect(ENV, KWARGS, expert, "train", 24, tmp_path / "demos.jsonl")
    collect(ENV, KWARGS, expert, "heldout", 8, tmp_path / "heldout.jsonl")
    demos = read_trajectories(tmp_path / "demos.jsonl")
    heldout = read_trajectories(tmp_path / "heldout.jsonl")
    assert all(t.success for t in demos + heldout)
    train_goals = {t.task_id for t in demos}
    assert not train_goals & {t.task_id for t in heldout}  # held-out goals never seen in training

    built = make_builder("bc").build(demos, BuildContext())
    settings = TrainSettings(max_steps=8, batch_size=4, learning_rate=2e-3, max_length=512, logging_steps=2,
                             save_steps=4)
    metrics = train_lora(built, "smollm2-135m", tmp_path / "adapter", settings, progress=False)
    assert metrics["global_step"] == 8
    files = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "agentclone.json", "tokenizer.json"} <= files
    meta = json.loads((tmp_path / "adapter" / "agentclone.json").read_text())
    assert meta["data_hash"] and meta["settings"]["max_steps"] == 8

    gen = GenerationSettings(max_new_tokens=40)
    base = make_policy("hf", fmt=ActionFormat(), model="smollm2-135m", generation=gen)
    base_acc = next_action_accuracy(base, heldout)
    base.close()
    tuned = make_policy("hf", fmt=ActionFormat(), model="smollm2-135m", adapter=str(tmp_path / "adapter"),
                        generation=gen)
    tuned_acc = next_action_accuracy(tuned, heldout)
    print("next-action accuracy on held-out steps: base", base_acc, "adapter", tuned_acc)
    assert tuned_acc["accuracy"] > base_acc["accuracy"]
    assert tuned_acc["accuracy"] >= 0.25
    assert tuned_acc["parse_rate"] >= 0.8  # the adapter learned the answer format


def test_real_smollm2_gives_a_sensible_chat_reply(smollm2_path):
    import torch
    from transformers import AutoModelForCausalLM

    from agentclone.models import load_tokenizer

    tok = load_tokenizer(smollm2_path)
    model = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32)
    msgs = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**enc, max_new_tokens=10, do_sample=False)
    reply = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "paris" in reply.lower()
