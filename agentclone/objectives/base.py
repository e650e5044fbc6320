"""The training-objective interface: a TRL config class paired with its trainer.

An objective says which kinds of samples it trains on (``accepts``), turns them into a
tokenised ``datasets.Dataset`` and makes the trainer. Everything else is shared by every
objective (``agentclone.training``): the model and LoRA, the settings every TRL config
has (learning rate, epochs, batch size, ...), resume from checkpoints, weight averaging,
the data hash and the atomic save.

Sample kinds (what a builder produces, ``DataBuilder.sample_kind``):

- ``conversation``: whole trajectories, loss on the assistant turns whose step has ``loss``.
- ``completion``: a prompt and one target turn whose content may differ from what the
  history showed (a correction at a state the agent reached); stored as a trajectory
  prefix whose last step is the target and the only one with loss.
- ``preference``: a prompt with a chosen and a rejected answer (``agentclone.preferences.PreferencePair``).
- ``labelled``: a prompt with one answer labelled desirable or not (``LabelledCompletion``, KTO).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

SAMPLE_KINDS = ("conversation", "completion", "preference", "labelled")


class Objective(abc.ABC):
    """A training objective: ``config_class`` (a TRL config) plus the trainer it drives."""

    name: ClassVar[str] = ""
    #: the sample kinds this objective trains on
    accepts: ClassVar[tuple[str, ...]] = ("conversation",)

    @abc.abstractmethod
    def config_class(self) -> type:
        """The TRL (or transformers) ``TrainingArguments`` subclass this objective's trainer takes."""

    def config_fields(self, settings) -> dict[str, Any]:
        """This objective's own config fields derived from the shared settings (e.g. ``max_length``)."""
        return {}

    def read_samples(self, path) -> list:
        """The samples in a training file (a builder's output); trajectories by default."""
        from agentclone.data import read_trajectories

        return read_trajectories(path)

    def policy_model(self, model, init_adapter, lora_config):
        """The model to train and the PEFT config to give the trainer (None: the model already has one).

        By default a fresh LoRA on the base model, or ``init_adapter`` loaded trainable to continue
        it. An objective that needs the starting policy as its reference (DPO, KTO) can override this.
        """
        if init_adapter is None:
            return model, lora_config
        from peft import PeftModel

        return PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True), None

    @abc.abstractmethod
    def dataset(self, samples: list, tokenizer, fmt, max_length: int | None):
        """A ``datasets.Dataset`` of the tokenised samples (rows keep an ``id`` column)."""

    @abc.abstractmethod
    def trainer(self, model, args, dataset, tokenizer, peft_config):
        """A ``transformers.Trainer`` (subclass) ready to ``train()``."""

    def dataset_tokens(self, dataset) -> tuple[int, int]:
        """(tokens, loss tokens) in one epoch of ``dataset``; for the metrics."""
        tokens = sum(len(x) for x in dataset["input_ids"])
        loss_tokens = sum(sum(x) for x in dataset["assistant_masks"]) if "assistant_masks" in dataset.column_names else 0
        return tokens, loss_tokens


def make_objective(name: str) -> Objective:
    """Make a registered objective by name (``sft``, ...; ``agentclone.plugins.create``)."""
    from agentclone.plugins import create

    return create("objective", name)
