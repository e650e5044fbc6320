"""A killed `agentclone train` resumes from its last checkpoint (tiny random model, real TRL/PEFT)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

from agentclone.data import Step, Trajectory, write_trajectories
from agentclone.models import load_tokenizer


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, smollm2_path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny")
    tok = load_tokenizer(smollm2_path)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_killed_training_resumes_from_last_checkpoint(tmp_path, tiny_model_dir):
    trajs = [
        Trajectory(id=f"e:t{i}#0", env_id="e/x-v1", task_id=f"t{i}", instructions="Count.", success=True,
                   steps=[Step(observation=f"at {j}", thought="next", action=f"add {j}") for j in range(3)])
        for i in range(16)
    ]
    data = tmp_path / "train.jsonl"
    write_trajectories(data, trajs)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "env: {id: textcraft/craft-v1}\n"
        f"model: {tiny_model_dir}\n"
        "train: {max_steps: 40, batch_size: 2, save_steps: 10, logging_steps: 5, learning_rate: 0.001}\n"
    )
    out = tmp_path / "adapter"
    cmd = [sys.executable, "-m", "agentclone.cli", "train", str(data), "--output", str(out), "--recipe", str(recipe)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list((out / "checkpoints").glob("checkpoint-10/trainer_state.json")):
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "adapter_config.json").exists()  # killed before the end
    saved = sorted(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("checkpoint-*")
                   if (p / "trainer_state.json").exists())
    assert saved and saved[-1] >= 10
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 40
    assert metrics["resumed_from"].endswith(f"checkpoint-{saved[-1]}")
    # the history continues the checkpoint's: every step logged once, none redone
    logged = [h["step"] for h in metrics["log_history"] if "loss" in h]
    assert logged == list(range(5, 41, 5))
