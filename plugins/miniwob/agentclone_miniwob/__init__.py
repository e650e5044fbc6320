"""MiniWoB++ web tasks in a real headless Chromium, for agentclone."""

from agentclone_miniwob.env import EXPERT_TASKS, MiniWoBEnv

__all__ = ["EXPERT_TASKS", "MiniWoBEnv"]
