"""TextCraft environment plugin for agentclone."""

from agentclone_textcraft.env import TextCraftEnv

__all__ = ["TextCraftEnv"]
