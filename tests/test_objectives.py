"""Training objectives as plugins, TRL settings passed through, weight averaging, atomic adapters."""

import json
from types import SimpleNamespace

import pytest
import torch

from agentclone import hookimpl
from agentclone.data import Step, Trajectory
from agentclone.errors import UserError
from agentclone.objectives.sft import SFT
from agentclone.plugins import build_registry, use_registry
from agentclone.training import TrainSettings, build_trl_config, is_adapter_complete, save_adapter, train_lora

from test_disagreement import tiny_model  # noqa: F401  (a fixture)


def samples(n=4):
    return [Trajectory(id=f"e:t{i}#0", env_id="e/x-v1", task_id=f"t{i}", instructions="Count.", success=True,
                       steps=[Step(observation=f"Value {j}. Target {i + 3}.", thought=f"{j} more", action=f"add {j + 1}")
                              for j in range(2)]) for i in range(n)]


class HalfLossSFT(SFT):
    """A toy objective from an outside plugin: SFT with the loss halved."""

    name = "half-sft"

    def trainer(self, model, args, dataset, tokenizer, peft_config):
        from trl import SFTTrainer

        class Half(SFTTrainer):
            def compute_loss(self, model, inputs, return_outputs=False, **kw):
                out = super().compute_loss(model, inputs, return_outputs=return_outputs, **kw)
                return (out[0] * 0.5, out[1]) if return_outputs else out * 0.5

        return Half(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config)


class OutsidePlugin:
    @hookimpl
    def register_objectives(self, register):
        register("half-sft", HalfLossSFT)


SETTINGS = dict(max_steps=2, batch_size=2, save_steps=100, logging_steps=1, learning_rate=0.01, group_by_length=False)


def test_an_objective_from_an_outside_plugin_trains_an_adapter_end_to_end(tmp_path, tiny_model):
    with use_registry(build_registry(extra_plugins={"outside": OutsidePlugin()})) as reg:
        assert "half-sft" in reg.objectives and "sft" in reg.objectives
        plain = train_lora(samples(), tiny_model, tmp_path / "sft", TrainSettings(**SETTINGS), progress=False)
        half = train_lora(samples(), tiny_model, tmp_path / "half", TrainSettings(**SETTINGS, objective="half-sft"),
                          progress=False)
    assert is_adapter_complete(tmp_path / "half")
    meta = json.loads((tmp_path / "half" / "agentclone.json").read_text())
    assert meta["metrics"]["objective"] == "half-sft"
    # the same data, seed and first step: the toy objective's first logged loss is half of SFT's
    first = lambda m: next(h["loss"] for h in m["log_history"] if "loss" in h)  # noqa: E731
    assert first(half) == pytest.approx(first(plain) / 2, rel=1e-3)


def test_trl_fields_pass_through_and_typos_are_one_clear_error(tmp_path):
    config = build_trl_config(SFT(), TrainSettings(trl={"max_grad_norm": 0.25, "optim": "adamw_torch"}), str(tmp_path))
    assert config.max_grad_norm == 0.25 and config.optim == "adamw_torch"
    with pytest.raises(UserError, match=r"train.trl.max_grad_nrom: not a field of SFTConfig"):
        build_trl_config(SFT(), TrainSettings(trl={"max_grad_nrom": 1.0}), str(tmp_path))
    with pytest.raises(UserError, match=r"train.trl.learning_rate: set by agentclone's own train settings"):
        build_trl_config(SFT(), TrainSettings(trl={"learning_rate": 1.0}), str(tmp_path))


def test_a_trl_typo_in_a_recipe_fails_when_the_recipe_is_loaded(counter_env_registered):
    from agentclone.recipes import RecipeError, validate_recipe

    with pytest.raises(RecipeError, match=r"train: train.trl.packng: not a field of SFTConfig"):
        validate_recipe({"env": {"id": "test/counter-v0"}, "train": {"trl": {"packng": True}}})
    with pytest.raises(RecipeError, match=r"unknown objective 'dpoo'"):
        validate_recipe({"env": {"id": "test/counter-v0"}, "train": {"objective": "dpoo"}})


def lora_b_norm(path):
    from safetensors.torch import load_file

    weights = load_file(str(path / "adapter_model.safetensors"))
    return sum(float(v.norm()) for k, v in weights.items() if "lora_B" in k)


def test_weight_average_is_what_is_saved(tmp_path, tiny_model):
    """decay 0 keeps exactly the last iterate; a decay of 0.9 averages in the earlier, smaller LoRA weights
    (B starts at zero), and the average travels in checkpoints for resume."""
    common = dict(SETTINGS, max_steps=4, save_steps=2)
    last = train_lora(samples(8), tiny_model, tmp_path / "last", TrainSettings(**common), progress=False)
    zero = train_lora(samples(8), tiny_model, tmp_path / "zero", TrainSettings(**common, ema_decay=0.0), progress=False)
    avg = train_lora(samples(8), tiny_model, tmp_path / "avg", TrainSettings(**common, ema_decay=0.9), progress=False)
    assert last["global_step"] == zero["global_step"] == avg["global_step"] == 4
    assert lora_b_norm(tmp_path / "zero") == pytest.approx(lora_b_norm(tmp_path / "last"), rel=1e-6)
    assert lora_b_norm(tmp_path / "avg") < 0.99 * lora_b_norm(tmp_path / "last")
    assert (tmp_path / "avg" / "checkpoints" / "checkpoint-4" / "ema.pt").exists()


def test_weight_average_formula():
    from agentclone.training import _WeightAverage

    p = torch.nn.Parameter(torch.zeros(1))
    model = SimpleNamespace(named_parameters=lambda: [("w", p)])
    avg = _WeightAverage(0.5)
    avg.start(model)
    expected = 0.0
    for n, value in enumerate([1.0, 2.0, 3.0, 4.0]):
        p.data.fill_(value)
        avg.update(model)
        decay = min(0.5, (1 + n) / (10 + n))
        expected = decay * expected + (1 - decay) * value
    assert float(avg.shadow["w"]) == pytest.approx(expected)


class _CrashingModel:
    """Writes the first adapter file, then dies, as a process killed during a save would."""

    def save_pretrained(self, path):
        from pathlib import Path

        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "adapter_model.safetensors").write_bytes(b"new weights")
        raise KeyboardInterrupt("killed while saving")


def test_an_interrupted_save_never_leaves_an_adapter_that_looks_complete(tmp_path, tiny_model):
    """Review item 4: files were replaced one by one, so a crash left new weights beside an old manifest."""
    out = tmp_path / "adapter"
    train_lora(samples(), tiny_model, out, TrainSettings(**SETTINGS), progress=False)
    assert is_adapter_complete(out)
    with pytest.raises(KeyboardInterrupt):
        save_adapter(_CrashingModel(), None, out, {})
    assert not is_adapter_complete(out)
    # a file changed behind the manifest's back is caught too
    train_lora(samples(), tiny_model, tmp_path / "b", TrainSettings(**SETTINGS), progress=False)
    (tmp_path / "b" / "adapter_model.safetensors").write_bytes(b"torn")
    assert not is_adapter_complete(tmp_path / "b")
