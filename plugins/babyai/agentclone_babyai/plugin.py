"""agentclone plugin: registers the BabyAI environments (importing it is cheap; minigrid loads on first use)."""

from agentclone import hookimpl
from agentclone_babyai.env import environment_classes


@hookimpl
def register_environments(register):
    for env_class in environment_classes():
        register(env_class.env_id, env_class)
