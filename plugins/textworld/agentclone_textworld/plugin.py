"""agentclone plugin: registers the TextWorld environments (importing it is cheap; textworld loads on first use)."""

from agentclone import hookimpl
from agentclone_textworld.env import CoinEnv, CookingEnv, TreasureEnv


@hookimpl
def register_environments(register):
    for env_class in (CookingEnv, CoinEnv, TreasureEnv):
        register(env_class.env_id, env_class)
