"""BabyAI environment plugin for agentclone: grid-world levels as text, with the BabyAI bot as the expert."""

from agentclone_babyai.env import LEVELS, BabyAIEnv, render_view

__all__ = ["LEVELS", "BabyAIEnv", "render_view"]
