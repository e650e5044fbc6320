"""Step selectors: which steps of an expert trajectory carry the training loss (``critical`` trainer).

Built in: ``llm-judge`` (ATLaS: an LLM names the critical steps), ``disagreement``
(the expert turns the current model finds least likely), ``progress`` (steps
where the environment signals progress), ``random`` (the baseline at the same
budget) and ``all`` (plain behaviour cloning).
"""

from agentclone.selectors.base import Pick, SelectorConfig, StepSelector, eligible_steps, make_selector, step_budget

__all__ = ["Pick", "SelectorConfig", "StepSelector", "eligible_steps", "make_selector", "step_budget"]
