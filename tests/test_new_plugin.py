"""``agentclone new-plugin``: the skeleton it writes loads through the plugin manager and its own test passes."""

import importlib
import os
import subprocess
import sys
import tomllib

import pytest

from agentclone.cli import main
from agentclone.plugins import build_registry

WHAT = {  # kind -> (Registry table, the name the skeleton registers)
    "env": ("environments", "demo-{kind}/counter-v1"),
    "builder": ("builders", "demo-{kind}"),
    "policy": ("policy_backends", "demo-{kind}"),
    "selector": ("step_selectors", "demo-{kind}"),
}


def new_plugin(monkeypatch, capsys, *args) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["agentclone", "new-plugin", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("kind", sorted(WHAT))
def test_the_skeleton_loads_and_its_test_passes(kind, tmp_path, monkeypatch, capsys):
    name = f"demo-{kind}"
    code, err = new_plugin(monkeypatch, capsys, name, "--kind", kind, "--output", tmp_path)
    root = tmp_path / f"agentclone-{name}"
    assert code == 0 and str(root) in err
    module = f"agentclone_demo_{kind}"

    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == f"agentclone-{name}"
    assert pyproject["project"]["entry-points"]["agentclone"] == {name: f"{module}.plugin"}

    # registered through the plugin manager like an installed plugin
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("AGENTCLONE_LOAD_PLUGINS", "")
    try:
        plugin = importlib.import_module(f"{module}.plugin")
        reg = build_registry(extra_plugins={name: plugin})
    finally:
        for loaded in (module, f"{module}.plugin"):
            sys.modules.pop(loaded, None)
    table, registered = WHAT[kind]
    info = next(p for p in reg.plugins if p.name == name)
    assert not reg.failures and info.registered == {table: [registered.format(kind=kind)]}

    # and the generated test passes, run as its author would run it
    test_file = root / "tests" / f"test_demo_{kind}.py"
    env = dict(os.environ, PYTHONPATH=str(root))
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
                         cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert " passed" in res.stdout and "failed" not in res.stdout and "skipped" not in res.stdout


def test_bad_name_kind_or_existing_directory_is_one_line(tmp_path, monkeypatch, capsys):
    code, err = new_plugin(monkeypatch, capsys, "Bad_Name", "--kind", "env", "--output", tmp_path)
    assert code == 2 and err.startswith("error: plugin name 'Bad_Name': use lowercase letters") and err.count("\n") == 1
    code, err = new_plugin(monkeypatch, capsys, "ok", "--kind", "trainer", "--output", tmp_path)
    assert code == 2 and err == "error: --kind must be one of env, builder, policy, selector, got 'trainer'\n"
    assert new_plugin(monkeypatch, capsys, "ok", "--kind", "env", "--output", tmp_path)[0] == 0
    code, err = new_plugin(monkeypatch, capsys, "ok", "--kind", "env", "--output", tmp_path)
    assert code == 2 and f"{tmp_path / 'agentclone-ok'} exists already" in err
