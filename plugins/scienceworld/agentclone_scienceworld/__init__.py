"""ScienceWorld environment plugin for agentclone: the simulator's 30 task types as text, its gold path as the expert."""

from agentclone_scienceworld.env import TASK_TYPES, ScienceWorldTextEnv
from agentclone_scienceworld.pool import POOL, JvmPool, ScienceWorldTimeout

__all__ = ["POOL", "TASK_TYPES", "JvmPool", "ScienceWorldTextEnv", "ScienceWorldTimeout"]
