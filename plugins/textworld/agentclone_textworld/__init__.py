"""TextWorld environment plugin for agentclone: generated, cached games with a walkthrough and replanning expert."""

from agentclone_textworld.env import CoinEnv, CookingEnv, TextWorldEnv, TreasureEnv

__all__ = ["CoinEnv", "CookingEnv", "TextWorldEnv", "TreasureEnv"]
