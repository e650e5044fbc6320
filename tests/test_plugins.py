import json
import os
import subprocess
import sys

import pytest

from agentclone.envs import UnknownEnvironmentError, make_env
from agentclone.plugins import build_registry


def test_builtins_register_through_hooks():
    reg = build_registry()
    builtin = next(p for p in reg.plugins if p.name == "agentclone.builtins")
    assert "bc" in builtin.registered["trainers"]
    assert {"hf", "expert"} <= set(builtin.registered["policy_backends"])
    assert "smollm2-135m" in builtin.registered["models"]


def _fake_distributions(tmp_path):
    """Two installed plugins: one that works, one whose import fails."""
    (tmp_path / "good_plugin.py").write_text(
        "from agentclone import hookimpl\n"
        "from agentclone.envs import TextEnv\n"
        "@hookimpl\n"
        "def register_environments(register):\n"
        "    register('good/thing-v1', TextEnv)\n"
    )
    (tmp_path / "bad_plugin.py").write_text("import not_a_module_anywhere\n")
    for name in ("good", "bad"):
        info = tmp_path / f"{name}_plugin-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}-plugin\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[agentclone]\n{name} = {name}_plugin\n")


def _cli(tmp_path, *args, env_extra=None):
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "agentclone.cli", *args], capture_output=True, text=True, env=env)


def test_broken_plugin_is_reported_and_others_load(tmp_path):
    _fake_distributions(tmp_path)
    res = _cli(tmp_path, "plugins", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    names = {p["name"]: p for p in data["plugins"]}
    assert names["good"]["registered"] == {"environments": ["good/thing-v1"]}
    assert names["good"]["distribution"] == "good-plugin"
    failure = next(f for f in data["failures"] if f["name"] == "bad")
    assert "not_a_module_anywhere" in failure["error"]


def test_env_var_restricts_plugins(tmp_path):
    _fake_distributions(tmp_path)
    res = _cli(tmp_path, "plugins", "--json", env_extra={"AGENTCLONE_LOAD_PLUGINS": "good"})
    data = json.loads(res.stdout)
    assert {p["name"] for p in data["plugins"]} == {"agentclone.builtins", "good"}
    assert data["failures"] == []
    res = _cli(tmp_path, "plugins", "--json", env_extra={"AGENTCLONE_LOAD_PLUGINS": ""})
    assert [p["name"] for p in json.loads(res.stdout)["plugins"]] == ["agentclone.builtins"]


def test_unknown_env_id_is_a_clear_error(counter_env_registered):
    with pytest.raises(UnknownEnvironmentError, match="unknown environment id 'nope/x-v1'.*test/counter-v0"):
        make_env("nope/x-v1")
    with pytest.raises(ValueError, match="bogus"):
        make_env("test/counter-v0", bogus=3)


def test_invalid_action_is_an_observation_not_an_exception(counter_env_registered):
    env = make_env("test/counter-v0", max_steps=3)
    env.reset(env.tasks("train")[0])
    obs, r, term, trunc, info = env.step("jump")
    assert obs.startswith("Invalid action") and info["invalid"] and not term and not trunc
    env.step("add 1")
    obs, r, term, trunc, info = env.step("fly")
    assert trunc and env.invalid_actions == 2
