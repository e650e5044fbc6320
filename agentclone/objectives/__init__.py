"""Training objectives: how a model learns from the samples a builder made (SFT today; DPO, KTO next).

Each objective is a plugin (``register_objectives``) pairing a TRL config with its trainer.
"""

from agentclone.objectives.base import Objective, make_objective

__all__ = ["Objective", "make_objective"]
