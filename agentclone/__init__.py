"""agentclone: make LLM agents better by imitation."""

from agentclone.hookspecs import hookimpl

__all__ = ["hookimpl"]
__version__ = "0.1.0"
