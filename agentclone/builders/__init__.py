"""Trainer plugins (data builders): trajectories in, trajectories with loss flags out."""

from agentclone.builders.base import BuildContext, DataBuilder, make_builder

__all__ = ["BuildContext", "DataBuilder", "make_builder"]
