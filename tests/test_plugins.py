import json
import os
import re
import subprocess
import sys

import pytest

from test_disagreement import tiny_model  # noqa: F401  (a fixture)

from agentclone.envs import UnknownEnvironmentError, make_env
from agentclone.plugins import build_registry, create, use_registry

from conftest import REPO


def test_builtins_register_through_hooks():
    reg = build_registry()
    builtin = next(p for p in reg.plugins if p.name == "agentclone.builtins")
    assert {"bc", "critical", "reflection"} <= set(builtin.registered["builders"])
    assert "sft" in builtin.registered["objectives"]
    assert {"hf", "expert"} <= set(builtin.registered["policy_backends"])
    assert "smollm2-135m" in builtin.registered["models"]
    assert not builtin.notes  # the built-ins use no deprecated hook


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
    """The real command line in a subprocess; an ``env_extra`` value of None unsets that variable."""
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    for key, value in (env_extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run([sys.executable, "-m", "agentclone.cli", *args], capture_output=True, text=True, env=env)


def test_broken_plugin_is_reported_and_others_load(tmp_path):
    _fake_distributions(tmp_path)
    res = _cli(tmp_path, "plugins", "--json", env_extra={"AGENTCLONE_LOAD_PLUGINS": "good,bad"})
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    names = {p["name"]: p for p in data["plugins"]}
    assert names["good"]["registered"] == {"environments": ["good/thing-v1"]}
    assert names["good"]["distribution"] == "good-plugin"
    failure = next(f for f in data["failures"] if f["name"] == "bad")
    assert "not_a_module_anywhere" in failure["error"]
    res = _cli(tmp_path, "plugins", env_extra={"AGENTCLONE_LOAD_PLUGINS": "good,bad"})
    assert "failed to load plugin bad (bad-plugin): ModuleNotFoundError" in res.stderr


def test_env_var_restricts_plugins(tmp_path):
    _fake_distributions(tmp_path)
    res = _cli(tmp_path, "plugins", "--json", env_extra={"AGENTCLONE_LOAD_PLUGINS": "good"})
    data = json.loads(res.stdout)
    assert {p["name"] for p in data["plugins"]} == {"agentclone.builtins", "good"}
    assert data["failures"] == []
    res = _cli(tmp_path, "plugins", "--json", env_extra={"AGENTCLONE_LOAD_PLUGINS": "good-plugin"})  # distribution name
    assert {p["name"] for p in json.loads(res.stdout)["plugins"]} == {"agentclone.builtins", "good"}
    res = _cli(tmp_path, "plugins", "--json", env_extra={"AGENTCLONE_LOAD_PLUGINS": ""})
    assert [p["name"] for p in json.loads(res.stdout)["plugins"]] == ["agentclone.builtins"]
    res = _cli(tmp_path, "plugins", "--json", env_extra={"AGENTCLONE_LOAD_PLUGINS": None})  # unset: every one
    data = json.loads(res.stdout)
    assert {"agentclone.builtins", "good", "textcraft"} <= {p["name"] for p in data["plugins"]}
    assert [f["name"] for f in data["failures"]] == ["bad"]


def test_the_test_session_loads_only_the_plugins_it_names():
    assert os.environ["AGENTCLONE_LOAD_PLUGINS"] == "textcraft"
    assert {p.name for p in build_registry().plugins} == {"agentclone.builtins", "textcraft"}


def test_unknown_env_id_is_a_clear_error(counter_env_registered):
    with pytest.raises(UnknownEnvironmentError, match="unknown environment 'nope/x-v1'; registered: .*test/counter-v0"):
        make_env("nope/x-v1")
    with pytest.raises(ValueError, match="option 'bogus': unknown option"):
        make_env("test/counter-v0", bogus=3)


def test_invalid_action_is_an_observation_not_an_exception(counter_env_registered):
    env = make_env("test/counter-v0", max_steps=3)
    env.reset(env.tasks("train")[0])
    obs, r, term, trunc, info = env.step("jump")
    assert obs.startswith("Invalid action") and info["invalid"] and not term and not trunc
    env.step("add 1")
    obs, r, term, trunc, info = env.step("fly")
    assert trunc and env.invalid_actions == 2


# -- docs/plugins.md: its example plugin, installed and used ----------------------------------------------


def _doc_blocks(language: str) -> list[str]:
    text = (REPO / "docs" / "plugins.md").read_text()
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.M | re.S)


def test_docs_plugin_example_works(installed_plugins, monkeypatch, tiny_model, tmp_path):
    """The python blocks of docs/plugins.md, as the one module its pyproject block names, installed
    with that entry point and loaded by the plugin manager; then each thing it registers is used."""
    from agentclone.building import BuildContext
    from agentclone.policies.base import PolicyRequest
    from agentclone.prompting import ActionFormat
    from agentclone.rollout import plan_episodes, run_rollouts

    [pyproject] = _doc_blocks("toml")
    entry, module = re.search(r'^\[project.entry-points.agentclone\]\n(\w+) = "([\w.]+)"', pyproject, re.M).groups()
    source = "\n\n".join(_doc_blocks("python"))
    assert len(_doc_blocks("python")) == 6
    installed_plugins(entry, source, module=module)
    monkeypatch.setenv("AGENTCLONE_LOAD_PLUGINS", entry)

    with use_registry(build_registry()) as reg:
        assert not reg.failures and not reg.conflicts
        doc = next(p for p in reg.plugins if p.name == entry)
        assert doc.registered == {"environments": ["hello/counter-v1"], "builders": ["shortest"],
                                  "step_selectors": ["last"], "policy_backends": ["fixed"],
                                  "objectives": ["plain-sft"], "formats": ["prompt-answer"]}

        # the environment runs episodes with the expert, and every one succeeds
        env = make_env("hello/counter-v1", tasks_per_split=3)
        train = env.tasks("train")
        assert len(train) == 3 and not {t.id for t in train} & {t.id for t in env.tasks("heldout")}
        result = run_rollouts(lambda: make_env("hello/counter-v1", tasks_per_split=3), create("policy_backend", "expert"),
                              plan_episodes(train, 6), progress=False)
        trajs = result.trajectories
        assert len(trajs) == 6 and all(t.success for t in trajs)

        # the builder keeps one trajectory per task, with loss on every step
        builder = create("builder", "shortest")
        built = builder.build(trajs, BuildContext())
        assert sorted(t.task_id for t in built) == sorted(t.id for t in train)
        assert all(s.loss for t in built for s in t.steps) and builder.stats.trajectories_out == 3

        # the selector picks the last steps, best first, and the critical builder uses it by name
        longest = max(trajs, key=lambda t: len(t.steps))
        n = len(longest.steps)
        assert n >= 2
        assert [i for i, _ in create("step_selector", "last").select(longest, 2, BuildContext())] == [n - 1, n - 2]
        [critical] = create("builder", "critical", selector="last", budget=0.01).build([longest], BuildContext())
        assert [s.loss for s in critical.steps] == [False] * (n - 1) + [True]

        # the policy answers each request with its action, and the rollout parses it as one
        policy = create("policy_backend", "fixed", fmt=ActionFormat(), action="add 1", thought="slowly")
        assert policy.act([PolicyRequest(messages=[])] * 2) == ["Thought: slowly\nAction: add 1"] * 2
        [slow] = run_rollouts(lambda: make_env("hello/counter-v1"), policy, plan_episodes(train[:1], 1),
                              progress=False).trajectories
        assert [s.action for s in slow.steps] == ["add 1"] * 3 and slow.success  # target 3, one at a time

        # the objective trains an adapter on the builder's samples, loss on the loss tokens only
        from agentclone.training import TrainSettings, is_adapter_complete, train_lora

        metrics = train_lora(built, tiny_model, tmp_path / "adapter",
                             TrainSettings(objective="plain-sft", max_steps=2, batch_size=2, save_steps=100),
                             progress=False)
        assert metrics["objective"] == "plain-sft" and metrics["global_step"] == 2
        assert is_adapter_complete(tmp_path / "adapter")

        # the trajectory format writes one prompt / answer record per trajectory and reads it back
        from agentclone.formats import ExportOptions, ImportOptions, export_file, iter_import

        one = slow.model_copy(update={"steps": slow.steps[:1]})
        export_file(create("format", "prompt-answer"), [one], tmp_path / "pa.jsonl", ExportOptions())
        [back] = iter_import(create("format", "prompt-answer"), tmp_path / "pa.jsonl", ImportOptions())
        assert (back.steps[0].observation, back.steps[0].thought, back.steps[0].action) == \
            (one.steps[0].observation, "slowly", "add 1")


# -- MiniWoB++: where Chromium must be there, its absence fails ---------------------------------------------


@pytest.mark.parametrize("required", [False, True])
def test_miniwob_tests_fail_without_chromium_when_it_is_required(tmp_path, required):
    env = dict(os.environ, MINIWOB_CHROME_BINARY=str(tmp_path / "no-chromium"))
    env.pop("AGENTCLONE_REQUIRE_CHROMIUM", None)
    if required:
        env["AGENTCLONE_REQUIRE_CHROMIUM"] = "1"
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "plugins/miniwob"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    if required:
        assert res.returncode != 0
        assert "AGENTCLONE_REQUIRE_CHROMIUM=1 but the MiniWoB++ tests cannot run: no Chromium" in out
        assert "no-chromium" in out
    else:
        assert res.returncode == 0, out
        assert re.search(r"\d+ skipped", out) and "passed" not in out
