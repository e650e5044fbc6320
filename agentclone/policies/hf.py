"""transformers ``generate``, batched with left padding, optionally with a PEFT adapter."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from agentclone.policies.base import GenerationSettings, Policy, PolicyRequest
from agentclone.prompting import stop_after_action


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> torch.dtype:
    # bf16 is about 5x slower than float32 on AVX2 CPUs (STACK-NOTES); fine on GPUs
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


class _ActionLineStop:
    """Stops each row once it has written a full ``Action:`` line."""

    def __init__(self, tokenizer, prompt_len: int) -> None:
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        gen = input_ids[:, self.prompt_len :]
        texts = self.tokenizer.batch_decode(gen, skip_special_tokens=True)
        return torch.tensor([stop_after_action(t) for t in texts], dtype=torch.bool, device=input_ids.device)


class HFPolicy(Policy):
    name = "hf"

    def __init__(
        self,
        fmt=None,
        model: str = "smollm2-135m",
        adapter: str | None = None,
        batch_size: int = 32,
        generation: GenerationSettings | dict | None = None,
        device: str | None = None,
        model_obj=None,
        tokenizer=None,
    ) -> None:
        super().__init__(fmt)
        from agentclone.models import load_tokenizer, resolve_model

        self.model_name = model
        self.adapter = adapter
        self.batch_size = batch_size
        if isinstance(generation, dict):
            generation = GenerationSettings(**generation)
        self.gen = generation or GenerationSettings()
        self.device = device or default_device()
        if model_obj is None:
            from transformers import AutoModelForCausalLM

            path = resolve_model(model)
            self.tokenizer = tokenizer or load_tokenizer(path)
            model_obj = AutoModelForCausalLM.from_pretrained(path, dtype=default_dtype(self.device))
            if adapter:
                from peft import PeftModel

                if not (Path(adapter) / "adapter_config.json").exists():
                    raise FileNotFoundError(f"no LoRA adapter at {adapter} (adapter_config.json missing)")
                model_obj = PeftModel.from_pretrained(model_obj, adapter)
            model_obj.to(self.device)
        else:
            self.tokenizer = tokenizer
        self.model = model_obj.eval()
        self.tokenizer.padding_side = "left"
        self._stop_ids = [
            i
            for i in {self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids("<|im_end|>")}
            if isinstance(i, int) and i >= 0
        ]
        self._generator_seeded = False

    @property
    def model_id(self) -> str | None:
        return f"{self.model_name}+{self.adapter}" if self.adapter else self.model_name

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _prompts(self, requests: list[PolicyRequest]) -> list[str]:
        return [
            self.tokenizer.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True)
            for r in requests
        ]

    @torch.inference_mode()
    def act(self, requests: list[PolicyRequest]) -> list[str]:
        if not self._generator_seeded:
            torch.manual_seed(self.gen.seed)
            self._generator_seeded = True
        prompts = self._prompts(requests)
        out: list[str] = []
        for i in range(0, len(prompts), self.batch_size):
            out.extend(self._generate(prompts[i : i + self.batch_size]))
        return out

    def _generate(self, prompts: list[str]) -> list[str]:
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        prompt_len = enc["input_ids"].shape[1]
        sample = self.gen.temperature > 0
        kwargs = dict(
            max_new_tokens=self.gen.max_new_tokens,
            do_sample=sample,
            eos_token_id=self._stop_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            stopping_criteria=[_ActionLineStop(self.tokenizer, prompt_len)],
        )
        if sample:
            kwargs.update(temperature=self.gen.temperature, top_p=self.gen.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        try:
            seqs = self.model.generate(**enc, **kwargs)
        except torch.OutOfMemoryError:
            if len(prompts) == 1:
                raise
            print(f"out of memory at batch {len(prompts)}; halving", file=sys.stderr)
            half = len(prompts) // 2
            return self._generate(prompts[:half]) + self._generate(prompts[half:])
        return self.tokenizer.batch_decode(seqs[:, prompt_len:], skip_special_tokens=True)

    def close(self) -> None:
        del self.model
