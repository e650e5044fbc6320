"""agentclone plugin: one environment id per MiniWoB++ task with a scripted expert, plus the suite.

Importing it is cheap: selenium and miniwob load when an environment first resets.
"""

from __future__ import annotations

from agentclone import hookimpl
from agentclone_miniwob.env import EXPERT_TASKS, MiniWoBEnv

SUITE_ID = "miniwob/suite-v1"


def task_env_id(task: str) -> str:
    return f"miniwob/{task}-v1"


def _single_task(task: str):
    def make(**kwargs) -> MiniWoBEnv:
        if "tasks" in kwargs:
            raise TypeError(f"{task_env_id(task)} runs {task} only; pass tasks= to {SUITE_ID}")
        return MiniWoBEnv(tasks=[task], **kwargs)

    make.__doc__ = f"The MiniWoB++ task {task}."
    return make


@hookimpl
def register_environments(register):
    register(SUITE_ID, MiniWoBEnv)
    for task in EXPERT_TASKS:
        register(task_env_id(task), _single_task(task))
