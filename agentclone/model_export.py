"""Export a trained LoRA adapter for use outside agentclone.

- ``export_merged``: the adapter merged into its base model (PEFT ``merge_and_unload``), saved with the
  tokenizer and its chat template as a plain transformers model directory: no peft needed to load it.
- ``export_vllm_lora``: the adapter alone, in the layout vLLM's ``--lora-modules NAME=DIR`` (and
  ``LoRARequest``) loads: ``adapter_config.json`` and ``adapter_model.safetensors``.

Both write into a temporary folder next to the target and rename it into place, so an interrupted
export leaves no half-written model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from agentclone.data import AtomicFolder
from agentclone.errors import UserError

DTYPES = ("float32", "bfloat16", "float16")


def adapter_base_model(adapter: Path) -> str:
    """The base model an adapter was trained on: agentclone's manifest, else PEFT's adapter_config.json."""
    manifest = adapter / "agentclone.json"
    if manifest.is_file():
        meta = json.loads(manifest.read_text())
        for key in ("base_model_path", "base_model"):
            if meta.get(key) and (key == "base_model" or Path(meta[key]).exists()):
                return str(meta[key])
    config = json.loads((adapter / "adapter_config.json").read_text())
    if config.get("base_model_name_or_path"):
        return str(config["base_model_name_or_path"])
    raise UserError(f"{adapter}: cannot tell the adapter's base model; name it with --model")


def _check_adapter(adapter: Path) -> None:
    if not (adapter / "adapter_config.json").is_file():
        raise UserError(f"no LoRA adapter at {adapter} (adapter_config.json missing)")


def export_merged(adapter: str | Path, output: str | Path, base_model: str | None = None,
                  dtype: str = "float32") -> dict:
    """Merge ``adapter`` into its base model and save the result (and tokenizer) in ``output``."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from agentclone.models import load_tokenizer, resolve_model

    adapter, output = Path(adapter), Path(output)
    _check_adapter(adapter)
    if dtype not in DTYPES:
        raise UserError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    base_name = base_model or adapter_base_model(adapter)
    base_path = resolve_model(base_name)
    with AtomicFolder(output) as staged:  # refuses an output that is not an empty folder
        model = AutoModelForCausalLM.from_pretrained(base_path, dtype=getattr(torch, dtype))
        peft_model = PeftModel.from_pretrained(model, str(adapter))
        merged_modules = sum(1 for name, _ in peft_model.named_modules() if name.endswith("lora_A"))
        merged = peft_model.merge_and_unload()
        merged.save_pretrained(str(staged.tmp), safe_serialization=True)
        # the tokenizer the adapter was trained with (train saves it with the adapter), chat template included
        tokenizer = load_tokenizer(str(adapter) if (adapter / "tokenizer_config.json").is_file() else base_path)
        tokenizer.save_pretrained(str(staged.tmp))
    return {"base_model": base_name, "base_model_path": base_path, "merged_modules": merged_modules}


def export_vllm_lora(adapter: str | Path, output: str | Path) -> Path:
    """Copy the adapter's config and safetensors weights into ``output`` (vLLM's LoRA directory layout)."""
    adapter, output = Path(adapter), Path(output)
    _check_adapter(adapter)
    weights = adapter / "adapter_model.safetensors"
    if not weights.is_file():
        raise UserError(f"{adapter}: adapter_model.safetensors missing (vLLM loads LoRA weights from safetensors)")
    config = json.loads((adapter / "adapter_config.json").read_text())
    if config.get("use_dora") or config.get("modules_to_save"):
        raise UserError(f"{adapter}: the adapter uses DoRA or modules_to_save, which vLLM's LoRA support does not load")
    with AtomicFolder(output) as staged:
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copyfile(adapter / name, staged.tmp / name)
    return output
