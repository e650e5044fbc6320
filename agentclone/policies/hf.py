"""transformers ``generate``, batched with left padding, optionally with a PEFT adapter.

``engine="continuous"`` runs the same policy on transformers' continuous batching with prefix
caching instead (``agentclone.policies.hf_continuous``); ``generate`` stays the default.
"""

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


ENGINES = ("generate", "continuous")


class HFPolicy(Policy):
    """A transformers model (optionally with a LoRA adapter) answering batches of conversations.

    ``engine``: ``generate`` (``model.generate`` on length-sorted, left-padded chunks of
    ``batch_size``) or ``continuous`` (transformers' continuous batching: a paged KV cache of
    ``cache_tokens`` tokens in pages of ``page_size``, at most ``max_batch_tokens`` tokens per
    forward pass, and prompt prefixes shared across rollout steps). Both give the same greedy
    answers, cut at the same token after the ``Action:`` line.
    """

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
        stop_at_action: bool = True,
        engine: str = "generate",
        page_size: int = 32,
        cache_tokens: int = 65536,
        max_batch_tokens: int = 1024,
    ) -> None:
        if engine not in ENGINES:
            raise ValueError(f"unknown hf engine {engine!r}; allowed: {', '.join(ENGINES)}")
        for key, value in (("page_size", page_size), ("cache_tokens", cache_tokens),
                           ("max_batch_tokens", max_batch_tokens)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"hf option {key} must be a positive integer, got {value!r}")
        super().__init__(fmt)
        from agentclone.models import load_tokenizer, resolve_model

        self.model_name = model
        self.adapter = adapter
        self.batch_size = batch_size
        self.stop_at_action = stop_at_action  # False for free text (a judge's answer)
        self.engine = engine
        self.page_size = page_size
        self.cache_tokens = cache_tokens
        self.max_batch_tokens = max_batch_tokens
        self._continuous = None  # the continuous engine, started on the first act()
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
        if self.engine == "continuous":
            return self._continuous_engine().answer(self._prompts(requests))
        if not self._generator_seeded:
            torch.manual_seed(self.gen.seed)
            self._generator_seeded = True
        prompts = self._prompts(requests)
        # Chunks of similar length: left padding to the longest prompt of a chunk
        # is wasted prefill, and prefill dominates rollouts on a CPU.
        lengths = [len(ids) for ids in self.tokenizer(prompts, add_special_tokens=False)["input_ids"]]
        order = sorted(range(len(prompts)), key=lambda i: lengths[i])
        out: list[str | None] = [None] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            for i, text in zip(chunk, self._generate([prompts[i] for i in chunk])):
                out[i] = text
        return out  # type: ignore[return-value]

    def _continuous_engine(self):
        if self._continuous is None:
            from agentclone.policies.hf_continuous import ContinuousEngine

            self._continuous = ContinuousEngine(
                self.model, self.tokenizer, self.gen, self._stop_ids, stop_at_action=self.stop_at_action,
                max_requests_per_batch=self.batch_size, page_size=self.page_size, cache_tokens=self.cache_tokens,
                max_batch_tokens=self.max_batch_tokens,
            )
        return self._continuous

    def _generate(self, prompts: list[str]) -> list[str]:
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        prompt_len = enc["input_ids"].shape[1]
        sample = self.gen.temperature > 0
        kwargs = dict(
            max_new_tokens=self.gen.max_new_tokens,
            do_sample=sample,
            eos_token_id=self._stop_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            stopping_criteria=[_ActionLineStop(self.tokenizer, prompt_len)] if self.stop_at_action else None,
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

    @torch.inference_mode()
    def turn_logprobs(
        self, trajectories: list, reduce: str = "mean", max_batch_tokens: int = 4096
    ) -> list[list[float]]:
        """Log-probability of every assistant turn of each trajectory under this model (teacher forcing).

        Each trajectory is one conversation, scored in one forward pass (several
        short ones may share a batch): the chat template's generation markers
        give each assistant turn's tokens (its end-of-turn token included), the
        same spans the trainer puts loss on. ``reduce`` is ``mean`` (per token)
        or ``sum``. An invalid step scores like any other turn.
        """
        from agentclone.prompting import trajectory_messages
        from agentclone.training import _spans

        if reduce not in ("mean", "sum"):
            raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
        encoded = []
        for traj in trajectories:
            if not traj.steps:
                encoded.append(([], []))
                continue
            messages, _ = trajectory_messages(traj, self.fmt)
            enc = self.tokenizer.apply_chat_template(
                messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
            )
            spans = _spans(list(enc["assistant_masks"]))
            if len(spans) != len(traj.steps):
                raise RuntimeError(
                    f"chat template marked {len(spans)} assistant spans for {len(traj.steps)} steps in "
                    f"trajectory {traj.id}; the template needs {{% generation %}} markers"
                )
            encoded.append((list(enc["input_ids"]), spans))
        out: list[list[float]] = [[] for _ in trajectories]
        order = sorted((i for i, (ids, _) in enumerate(encoded) if ids), key=lambda i: len(encoded[i][0]))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        batch: list[int] = []

        def run(batch: list[int]) -> None:
            width = max(len(encoded[i][0]) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):  # right padding: positions stay those of training
                seq = encoded[i][0]
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            for row, i in enumerate(batch):
                seq_ids, spans = encoded[i]
                scores = []
                for a, b in spans:
                    # the token at position p is predicted by the logits at p - 1
                    pred = logits[row, a - 1 : b - 1].float()
                    target = ids[row, a:b].to(pred.device)
                    lp = pred.gather(-1, target[:, None]).squeeze(-1) - torch.logsumexp(pred, dim=-1)
                    scores.append(float(lp.mean() if reduce == "mean" else lp.sum()))
                out[i] = scores

        for i in order:
            longest = max([len(encoded[j][0]) for j in batch] + [len(encoded[i][0])])
            if batch and longest * (len(batch) + 1) > max_batch_tokens:
                run(batch)
                batch = []
            batch.append(i)
        if batch:
            run(batch)
        return out

    def close(self) -> None:
        if self._continuous is not None:
            self._continuous.close()  # destroys the engine's manager: stops its thread, frees its cache
            self._continuous = None
        del self.model
