"""``agentclone new-plugin``: write the skeleton of a plugin package with a passing test.

The package has a ``pyproject.toml`` whose entry point (group ``agentclone``) names the
plugin module, the module with one hook and a minimal working class of the chosen kind
(the same classes as in docs/plugins.md), and ``tests/test_<name>.py``, which loads the
plugin through agentclone's plugin manager whether or not the package is installed.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from agentclone.errors import UserError

KINDS = ("env", "builder", "policy", "selector")
NAME_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")

PYPROJECT = """\
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "agentclone-$name"
version = "0.1.0"
description = "agentclone plugin: $what"
requires-python = ">=3.11"
dependencies = ["agentclone"]

[project.optional-dependencies]
test = ["pytest"]

[project.entry-points.agentclone]
$name = "$module.plugin"

[tool.setuptools.packages.find]
include = ["$module*"]
"""

README = """\
# agentclone-$name

An agentclone plugin: $what.

    pip install -e .
    pytest                  # the plugin's tests
    agentclone plugins      # lists $name and what it registered

docs/plugins.md in agentclone explains each hook.
"""

FIXTURE = '''\
"""Tests of the $name plugin, made through agentclone's plugin manager as a user reaches it."""

import pytest

from agentclone.plugins import OptionError, build_registry, create, use_registry
from $module import plugin


@pytest.fixture
def registry(monkeypatch):
    """agentclone's registry with this plugin loaded (installed or not) and no other installed plugin."""
    monkeypatch.setenv("AGENTCLONE_LOAD_PLUGINS", "")
    with use_registry(build_registry(extra_plugins={"$name": plugin})) as reg:
        yield reg
'''

ENV = {
    "what": "the text environment $name/counter-v1",
    "plugin": '''\
"""agentclone plugin $name: the text environment $name/counter-v1 (a counting game: replace it with yours)."""

from agentclone import hookimpl
from agentclone.data import Task
from agentclone.envs import ExpertAction, InvalidAction, TextEnv

ENV_ID = "$name/counter-v1"


class CounterEnv(TextEnv):
    """Reach a target number by adding 1, 2 or 3."""

    instructions = "Reach the target number. Actions: `add N` with N from 1 to 3."

    # the keyword arguments are the options (--env-kwarg, a recipe's env.kwargs): give each a type and a default
    def __init__(self, tasks_per_split: int = 5, max_steps: int = 10) -> None:
        super().__init__(max_steps=max_steps)
        self.tasks_per_split = tasks_per_split
        self.value = self.target = 0

    def _tasks(self, split):
        first = 0 if split == "train" else 100  # held-out targets differ from training ones
        return [Task(id=f"{split}-{i}", env_id=ENV_ID, split=split, data={"target": 3 + first + i})
                for i in range(self.tasks_per_split)]

    def _reset(self, task):
        self.value, self.target = 0, task.data["target"]
        return f"Value 0. Target {self.target}."

    def _step(self, action):
        verb, _, n = action.partition(" ")
        if verb != "add" or n not in ("1", "2", "3"):
            raise InvalidAction(f"cannot parse {action!r}; use `add N`")
        self.value += int(n)
        success = self.value == self.target
        return f"Value {self.value}. Target {self.target}.", float(success), self.value >= self.target, {"success": success}

    def _expert(self):
        n = min(3, self.target - self.value)
        return ExpertAction(action=f"add {n}", thought=f"{self.target - self.value} to go.")


@hookimpl
def register_environments(register):
    register(ENV_ID, CounterEnv)
''',
    "test": '''
from agentclone.envs import make_env
from agentclone.rollout import plan_episodes, run_rollouts


def test_registered(registry):
    assert registry.environments[plugin.ENV_ID] is plugin.CounterEnv and not registry.failures


def test_the_expert_solves_every_task(registry):
    env = make_env(plugin.ENV_ID)
    train, heldout = env.tasks("train"), env.tasks("heldout")
    assert train and not {t.id for t in train} & {t.id for t in heldout}
    result = run_rollouts(lambda: make_env(plugin.ENV_ID), create("policy_backend", "expert"),
                          plan_episodes(train, None), progress=False)
    assert len(result.trajectories) == len(train) and all(t.success for t in result.trajectories)


def test_an_invalid_action_is_an_observation(registry):
    env = make_env(plugin.ENV_ID)
    env.reset(env.tasks("train")[0])
    obs, reward, terminated, truncated, info = env.step("jump")
    assert info["invalid"] and not terminated and obs.startswith("Invalid action")


def test_options_are_checked(registry):
    assert len(make_env(plugin.ENV_ID, tasks_per_split=2).tasks("train")) == 2
    with pytest.raises(OptionError, match="tasks_per_split"):
        make_env(plugin.ENV_ID, tasks_per_split="many")
''',
}

BUILDER = {
    "what": "the data builder $name",
    "plugin": '''\
"""agentclone plugin $name: a data builder (behaviour cloning on the shortest successes: replace it with yours)."""

from pydantic import Field

from agentclone import hookimpl
from agentclone.builders.base import BuildContext, BuilderConfig, DataBuilder
from agentclone.data import Trajectory


class ShortestConfig(BuilderConfig):
    per_task: int = Field(1, ge=1, description="successful trajectories kept per task, shortest first")


class ShortestSuccesses(DataBuilder):
    """Behaviour cloning on the shortest successful trajectories of each task."""

    name = "$name"
    Config = ShortestConfig

    def build(self, trajectories: list[Trajectory], context: BuildContext) -> list[Trajectory]:
        self.stats.trajectories_in = len(trajectories)
        by_task: dict[str, list[Trajectory]] = {}
        for traj in trajectories:
            if traj.success and traj.steps:
                by_task.setdefault(traj.task_id, []).append(traj)
            else:
                self.stats.drop("unsuccessful")
        out = []
        for trajs in by_task.values():
            for traj in sorted(trajs, key=lambda t: len(t.steps))[: self.config.per_task]:
                new = traj.model_copy(deep=True)
                for step in new.steps:
                    step.loss = not step.invalid
                out.append(new)
        return self._count(out)


@hookimpl
def register_builders(register):
    register("$name", ShortestSuccesses)
''',
    "test": '''
from agentclone.building import BuildContext
from agentclone.data import Step, Trajectory


def traj(task: str, n: int, success: bool = True) -> Trajectory:
    steps = [Step(observation=f"obs {i}", action=f"act {i}", invalid=i == 0 and n > 2) for i in range(n)]
    return Trajectory(id=f"{task}#{n}", env_id="x/y-v1", task_id=task, steps=steps, success=success)


def test_keeps_the_shortest_success_of_each_task(registry):
    builder = create("builder", "$name")
    out = builder.build([traj("a", 3), traj("a", 2), traj("b", 4), traj("b", 1, success=False)], BuildContext())
    assert sorted(t.id for t in out) == ["a#2", "b#4"]
    assert [s.loss for s in out[-1].steps] == [False, True, True, True]  # no loss on the invalid step
    assert builder.stats.dropped == {"unsuccessful": 1}


def test_options_are_checked(registry):
    assert create("builder", "$name", per_task=2).config.per_task == 2
    with pytest.raises(OptionError, match="per_task"):
        create("builder", "$name", per_task=0)
''',
}

POLICY = {
    "what": "the policy backend $name",
    "plugin": '''\
"""agentclone plugin $name: a policy backend (a fixed answer: a real one calls a model in act)."""

from agentclone import hookimpl
from agentclone.policies.base import Policy, PolicyRequest


class FixedPolicy(Policy):
    """Answers ``action`` to every request."""

    name = "$name"

    # the keyword arguments after fmt are the options (--backend-option, a recipe's backend_options)
    def __init__(self, fmt=None, action: str = "look", thought: str | None = None) -> None:
        super().__init__(fmt)
        self.action, self.thought = action, thought

    def act(self, requests: list[PolicyRequest]) -> list[str]:
        return [self.fmt.render(self.action, self.thought) for _ in requests]


@hookimpl
def register_policy_backends(register):
    register("$name", FixedPolicy)
''',
    "test": '''
from agentclone.policies.base import PolicyRequest
from agentclone.prompting import ActionFormat


def test_answers_every_request_in_order(registry):
    policy = create("policy_backend", "$name", fmt=ActionFormat(), action="add 1", thought="one more")
    requests = [PolicyRequest(messages=[{"role": "user", "content": f"Value {i}."}]) for i in range(3)]
    answers = policy.act(requests)
    assert answers == ["Thought: one more\\nAction: add 1"] * 3
    assert ActionFormat().parse(answers[0]) == ("one more", "add 1")


def test_options_are_checked(registry):
    with pytest.raises(OptionError, match="action"):
        create("policy_backend", "$name", action=3)
''',
}

SELECTOR = {
    "what": "the step selector $name",
    "plugin": '''\
"""agentclone plugin $name: a step selector for the critical builder (the last steps: replace it with yours)."""

from pydantic import Field

from agentclone import hookimpl
from agentclone.building import BuildContext
from agentclone.data import Trajectory
from agentclone.selectors.base import Pick, SelectorConfig, StepSelector, eligible_steps


class LastStepsConfig(SelectorConfig):
    skip_final: bool = Field(False, description="leave out the very last step")


class LastSteps(StepSelector):
    """The last ``k`` valid steps: where an episode is won."""

    name = "$name"
    Config = LastStepsConfig

    def select(self, traj: Trajectory, k: int, context: BuildContext) -> list[Pick]:
        steps = eligible_steps(traj)
        if self.config.skip_final and steps:
            steps = steps[:-1]
        last = steps[-k:] if k > 0 else []
        return [(i, self.info(reason="near the end", score=1.0)) for i in reversed(last)]  # best first


@hookimpl
def register_step_selectors(register):
    register("$name", LastSteps)
''',
    "test": '''
from agentclone.building import BuildContext
from agentclone.data import Step, Trajectory


def traj(n: int) -> Trajectory:
    steps = [Step(observation=f"obs {i}", action=f"act {i}", invalid=i == n - 2) for i in range(n)]
    return Trajectory(id="t#0", env_id="x/y-v1", task_id="t", steps=steps, success=True)


def test_selects_the_last_valid_steps_best_first(registry):
    picks = create("step_selector", "$name").select(traj(5), 2, BuildContext())
    assert [i for i, _ in picks] == [4, 2]  # step 3 is invalid
    assert [i for i, _ in create("step_selector", "$name", skip_final=True).select(traj(5), 1, BuildContext())] == [2]


def test_the_critical_builder_puts_loss_on_the_selected_steps(registry):
    builder = create("builder", "critical", selector="$name", budget=0.4)
    [out] = builder.build([traj(5)], BuildContext())
    assert [s.loss for s in out.steps] == [False, False, True, False, True]


def test_options_are_checked(registry):
    with pytest.raises(OptionError, match="skip_final"):
        create("step_selector", "$name", skip_final="sometimes")
''',
}

TEMPLATES = {"env": ENV, "builder": BUILDER, "policy": POLICY, "selector": SELECTOR}


def write_plugin(name: str, kind: str, output: str | Path = ".") -> Path:
    """Write the package ``agentclone-<name>`` of a ``kind`` plugin into ``output``; return its directory."""
    if kind not in KINDS:
        raise UserError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not NAME_RE.match(name):
        raise UserError(f"plugin name {name!r}: use lowercase letters, digits and single dashes, starting with a letter")
    module = "agentclone_" + name.replace("-", "_")
    root = Path(output) / f"agentclone-{name}"
    if root.exists():
        raise UserError(f"{root} exists already; choose another --output or name")
    template = TEMPLATES[kind]
    values = {"name": name, "module": module}
    values["what"] = Template(template["what"]).substitute(values)
    files = {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        f"{module}/__init__.py": '"""agentclone plugin $name."""\n',
        f"{module}/plugin.py": template["plugin"],
        f"tests/test_{module.removeprefix('agentclone_')}.py": FIXTURE + template["test"],
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(text).substitute(values))
    return root
