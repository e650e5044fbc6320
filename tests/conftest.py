import os
import sys
import textwrap
from pathlib import Path

import pytest

from agentclone import hookimpl
from agentclone.data import Task
from agentclone.envs import ExpertAction, InvalidAction, TextEnv

REPO = Path(__file__).resolve().parents[1]

# Deterministic plugins: only TextCraft of the installed ones (and the built-ins, always), whatever else
# happens to be installed. Subprocesses inherit it; a test that needs another plugin sets it itself.
os.environ["AGENTCLONE_LOAD_PLUGINS"] = "textcraft"


class CounterEnv(TextEnv):
    """A small real environment for unit tests: reach the target number by `add N`."""

    instructions = "Reach the target number. Actions: `add N` with N from 1 to 3."

    def __init__(self, targets: int = 10, max_steps: int = 12, crash_on: int | None = None) -> None:
        super().__init__(max_steps=max_steps)
        self.targets = targets
        self.crash_on = crash_on
        self.value = 0
        self.target = 0

    def _tasks(self, split):
        ids = range(self.targets) if split == "train" else range(100, 100 + self.targets // 2)
        return [Task(id=f"t{i}", env_id="test/counter-v0", split=split, kind=f"len-{2 + i % 3}",
                     data={"target": 2 + i % 3 * 2}) for i in ids]

    def _reset(self, task):
        self.value, self.target = 0, task.data["target"]
        return f"Value 0. Target {self.target}."

    def _step(self, action):
        parts = action.split()
        if len(parts) != 2 or parts[0] != "add" or parts[1] not in ("1", "2", "3"):
            raise InvalidAction(f"cannot parse {action!r}; use `add N`")
        if self.crash_on is not None and int(parts[1]) == self.crash_on:
            raise RuntimeError("simulated crash inside the environment")
        self.value += int(parts[1])
        if self.value == self.target:
            return f"Value {self.value}. Done!", 1.0, True, {"success": True}
        if self.value > self.target:
            return f"Value {self.value}. Overshot.", 0.0, True, {"success": False}
        return f"Value {self.value}. Target {self.target}.", 0.0, False, {}

    def _expert(self):
        n = min(3, self.target - self.value)
        return ExpertAction(action=f"add {n}", thought=f"I need {self.target - self.value} more.")


class CounterPlugin:
    @hookimpl
    def register_environments(self, register):
        register("test/counter-v0", CounterEnv)


@pytest.fixture
def counter_env_registered():
    """Register the counter environment in the live registry for the duration of a test."""
    from agentclone.plugins import get_registry

    reg = get_registry()
    reg.environments["test/counter-v0"] = CounterEnv
    yield
    reg.environments.pop("test/counter-v0", None)


@pytest.fixture(scope="session")
def smollm2_path():
    """The real SmolLM2-135M-Instruct, converted into the cache (once)."""
    from agentclone.models import resolve_model

    return resolve_model("smollm2-135m")


@pytest.fixture
def installed_plugins(tmp_path, monkeypatch):
    """Install plugins the way pip would, into a folder on sys.path: ``install(name, source)`` writes
    the module (default ``<name>_plugin``; ``pkg.mod`` makes a package) and the distribution
    ``<name>-plugin`` whose entry point (group ``agentclone``) ``<name>`` names that module.
    Returns the folder (for a subprocess's PYTHONPATH)."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    modules = []

    def install(name: str, source: str, module: str | None = None) -> Path:
        module = module or f"{name}_plugin"
        path = site.joinpath(*module.split(".")).with_suffix(".py")
        for package in reversed(path.relative_to(site).parents[:-1]):
            (site / package).mkdir(exist_ok=True)
            (site / package / "__init__.py").touch()
        path.write_text(textwrap.dedent(source))
        info = site / f"{name}_plugin-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}-plugin\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[agentclone]\n{name} = {module}\n")
        parts = module.split(".")
        modules.extend(".".join(parts[: i + 1]) for i in range(len(parts)))
        return site

    yield install
    for module in modules:  # the next test's plugin of the same name is another module
        sys.modules.pop(module, None)


def load_script(name: str):
    """scripts/NAME.py as a module (the scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run ``agentclone ARGS...`` in this process: (exit status, captured stdout/stderr)."""
    from agentclone.cli import main

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["agentclone", *map(str, args)])
        try:
            main()
        except SystemExit as exc:
            return exc.code, capsys.readouterr()
        return 0, capsys.readouterr()

    return run
