"""agentclone plugin: registers the ScienceWorld environments (importing it is cheap; no JVM starts until a reset)."""

from agentclone import hookimpl
from agentclone_scienceworld.env import environment_classes


@hookimpl
def register_environments(register):
    for env_class in environment_classes():
        register(env_class.env_id, env_class)
