"""transformers ``generate``, batched with left padding, optionally with a PEFT adapter.

``engine="continuous"`` runs the same policy on transformers' continuous batching with prefix
caching instead (``agentclone.policies.hf_continuous``); ``generate`` stays the default.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import Literal, get_args

import torch

from agentclone.policies.base import GenerationSettings, ModelPolicy, PolicyRequest, derive_seed
from agentclone.prompting import stop_after_action


def default_device() -> str:
    if not torch.cuda.is_available():
        return "cpu"
    from agentclone.distributed import world_size

    # under accelerate launch each process has its own GPU (LOCAL_RANK), as its Trainer does
    return f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if world_size() > 1 else "cuda"


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
#: the continuous engine's attention: ``varlen`` attends each running sequence to its own context
#: (agentclone.policies.varlen_attention); ``sdpa`` is transformers' own, one attention over every
#: running sequence's context under a block-diagonal mask. A Literal, so a recipe's wrong value is
#: refused when the recipe is checked (agentclone.plugins.check_options), before any stage runs
ContinuousAttention = Literal["varlen", "sdpa"]
CONTINUOUS_ATTENTIONS = get_args(ContinuousAttention)

# ``generation.extra`` keys the policy sets itself, or that have their own GenerationSettings field
_OWN_KEYS = {"max_new_tokens", "do_sample", "temperature", "top_p", "seed"}
_RESERVED_KEYS = {"eos_token_id", "pad_token_id", "stopping_criteria", "logits_processor", "generation_config",
                  "num_return_sequences", "num_beams", "input_ids", "attention_mask", "streamer"}
# sampling settings the per-row sampler applies (``generate`` itself runs greedily over its choices)
_SAMPLING_KEYS = ("top_k", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "top_h")


def check_extra(extra: dict) -> None:
    """Refuse ``generation.extra`` keys that would fight the policy's own settings."""
    own = sorted(set(extra) & _OWN_KEYS)
    if own:
        raise ValueError(f"generation.extra sets {', '.join(own)}: use the generation setting of that name instead")
    reserved = sorted(set(extra) & _RESERVED_KEYS)
    if reserved:
        raise ValueError(f"generation.extra sets {', '.join(reserved)}, which the hf policy sets itself")


class _SeededSampler:
    """Samples each row's next token with that row's own ``torch.Generator``; every other token gets -inf.

    Used as the last logits processor of a greedy ``generate``: the model's processors (repetition
    penalty, ...) run first, then the sampling warpers ``generate`` would apply (temperature, top-k,
    top-p, ...) run here, then one token is drawn per row from its own generator, exactly as
    ``generate`` draws (``multinomial`` of the softmax), and greedy decoding picks it. A row's answer
    depends on its prompt and its seed only, never on which other rows share the batch or in what order.
    """

    def __init__(self, seeds: list[int], warpers: list, device) -> None:
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        self.warpers = warpers

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        probs = torch.nn.functional.softmax(scores.float(), dim=-1)
        chosen = torch.full_like(scores, -float("inf"))
        for row, generator in enumerate(self.generators):
            token = torch.multinomial(probs[row], num_samples=1, generator=generator)
            chosen[row, token] = 0.0
        return chosen


def sampling_warpers(cfg, device="cpu") -> list:
    """The logits warpers ``generate`` applies when sampling with the GenerationConfig ``cfg``, in its order."""
    from transformers.generation import logits_process as lp

    warpers: list = []

    def get(key):
        return getattr(cfg, key, None)

    if get("temperature") is not None and cfg.temperature != 1.0:
        warpers.append(lp.TemperatureLogitsWarper(cfg.temperature))
    if get("top_h") is not None:
        warpers.append(lp.TopHLogitsWarper(top_h=cfg.top_h))
    if get("top_k") is not None and cfg.top_k != 0:
        warpers.append(lp.TopKLogitsWarper(top_k=cfg.top_k, min_tokens_to_keep=1))
    if get("top_p") is not None and cfg.top_p < 1.0:
        warpers.append(lp.TopPLogitsWarper(top_p=cfg.top_p, min_tokens_to_keep=1))
    if get("min_p") is not None:
        warpers.append(lp.MinPLogitsWarper(min_p=cfg.min_p, min_tokens_to_keep=1))
    if get("typical_p") is not None and cfg.typical_p < 1.0:
        warpers.append(lp.TypicalLogitsWarper(mass=cfg.typical_p, min_tokens_to_keep=1))
    if get("epsilon_cutoff") is not None and 0.0 < cfg.epsilon_cutoff < 1.0:
        warpers.append(lp.EpsilonLogitsWarper(epsilon=cfg.epsilon_cutoff, min_tokens_to_keep=1))
    if get("eta_cutoff") is not None and 0.0 < cfg.eta_cutoff < 1.0:
        warpers.append(lp.EtaLogitsWarper(epsilon=cfg.eta_cutoff, min_tokens_to_keep=1, device=device))
    return warpers


class HFPolicy(ModelPolicy):
    """A transformers model (optionally with a LoRA adapter) answering batches of conversations.

    ``engine``: ``generate`` (``model.generate`` on length-sorted, left-padded chunks of
    ``batch_size``) or ``continuous`` (transformers' continuous batching: a paged KV cache of
    ``cache_tokens`` tokens in pages of ``page_size``, at most ``max_batch_tokens`` tokens per
    forward pass, and prompt prefixes shared across rollout steps). Both give the same greedy
    answers, cut at the same token after the ``Action:`` line. ``attention`` is the continuous
    engine's: ``varlen`` (each running sequence attends to its own context,
    agentclone.policies.varlen_attention) or ``sdpa`` (transformers' own: one attention over all
    of them under a block-diagonal mask, work growing with the square of the concurrency).

    Sampling (``temperature > 0``) on the ``generate`` engine draws each answer's tokens from a
    generator of its own, seeded from the request's ``seed`` (the rollout gives one per episode
    and step) and ``generation.seed``: an answer is the same whether its request is acted on
    alone or in any batch, so a resumed or sharded collection samples what an uninterrupted one
    does. Requests without a seed take the next seeds of a stream seeded by ``generation.seed``.
    The ``continuous`` engine samples from one generator for all requests (seeded once by
    ``generation.seed``): its samples depend on the batching.

    ``generation.extra`` is passed to ``generate`` (``repetition_penalty``, ``top_k``, ``min_p``, ...);
    on the ``continuous`` engine it goes into the engine's generation config.
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
        attention: ContinuousAttention = "varlen",
    ) -> None:
        if engine not in ENGINES:
            raise ValueError(f"unknown hf engine {engine!r}; allowed: {', '.join(ENGINES)}")
        if attention not in CONTINUOUS_ATTENTIONS:
            raise ValueError(
                f"unknown hf attention {attention!r} (the continuous engine's); allowed: {', '.join(CONTINUOUS_ATTENTIONS)}"
            )
        for key, value in (("page_size", page_size), ("cache_tokens", cache_tokens),
                           ("max_batch_tokens", max_batch_tokens)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"hf option {key} must be a positive integer, got {value!r}")
        # stop_at_action False: free text (a judge's answer)
        super().__init__(fmt, model=model, adapter=adapter, batch_size=batch_size, generation=generation,
                         stop_at_action=stop_at_action)
        check_extra(self.gen.extra)
        from agentclone.models import load_tokenizer, resolve_model

        self.engine = engine
        self.page_size = page_size
        self.cache_tokens = cache_tokens
        self.max_batch_tokens = max_batch_tokens
        self.attention = attention
        self._continuous = None  # the continuous engine, started on the first act()
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
        self._seed_stream = random.Random(self.gen.seed)  # seeds of requests that bring none
        self._warpers = None  # the sampling warpers, built on the first sampled act()

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
        prompts = self._prompts(requests)
        seeds = [self._row_seed(r) for r in requests]
        # Chunks of similar length: left padding to the longest prompt of a chunk
        # is wasted prefill, and prefill dominates rollouts on a CPU.
        lengths = [len(ids) for ids in self.tokenizer(prompts, add_special_tokens=False)["input_ids"]]
        order = sorted(range(len(prompts)), key=lambda i: lengths[i])
        out: list[str | None] = [None] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            for i, text in zip(chunk, self._generate([prompts[i] for i in chunk], [seeds[i] for i in chunk])):
                out[i] = text
        return out  # type: ignore[return-value]

    def _row_seed(self, request: PolicyRequest) -> int:
        """The seed of one answer's sampling generator (see the class docstring)."""
        if request.seed is not None:
            return derive_seed(self.gen.seed, request.seed)
        return self._seed_stream.randrange(2**31 - 1)

    def _continuous_engine(self):
        if self._continuous is None:
            from agentclone.policies.hf_continuous import ContinuousEngine

            self._continuous = ContinuousEngine(
                self.model, self.tokenizer, self.gen, self._stop_ids, stop_at_action=self.stop_at_action,
                max_requests_per_batch=self.batch_size, page_size=self.page_size, cache_tokens=self.cache_tokens,
                max_batch_tokens=self.max_batch_tokens, attention=self.attention,
            )
        return self._continuous

    def _sampling_warpers(self) -> list:
        """The warpers ``generate`` would apply when sampling with this policy's settings."""
        if self._warpers is None:
            from agentclone.policies.hf_continuous import generation_config

            cfg = generation_config(self.model, self.gen, self._stop_ids, self.tokenizer.pad_token_id)
            self._warpers = sampling_warpers(cfg, self.model.device)
        return self._warpers

    def _generate(self, prompts: list[str], seeds: list[int]) -> list[str]:
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        prompt_len = enc["input_ids"].shape[1]
        sample = self.gen.temperature > 0
        extra = dict(self.gen.extra)
        kwargs = dict(
            max_new_tokens=self.gen.max_new_tokens,
            do_sample=False,  # sampling: the per-row sampler chooses each token, greedy decoding takes it
            eos_token_id=self._stop_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            stopping_criteria=[_ActionLineStop(self.tokenizer, prompt_len)] if self.stop_at_action else None,
            temperature=None,
            top_p=None,
            top_k=None,
        )
        if sample:
            for key in _SAMPLING_KEYS:  # applied by the sampler (see _sampling_warpers), not by greedy generate
                extra.pop(key, None)
            from transformers import LogitsProcessorList

            sampler = _SeededSampler(seeds, self._sampling_warpers(), enc["input_ids"].device)
            kwargs["logits_processor"] = LogitsProcessorList([sampler])
        kwargs.update(extra)
        try:
            seqs = self.model.generate(**enc, **kwargs)
        except torch.OutOfMemoryError:
            if len(prompts) == 1:
                raise
            print(f"out of memory at batch {len(prompts)}; halving", file=sys.stderr)
            half = len(prompts) // 2
            return self._generate(prompts[:half], seeds[:half]) + self._generate(prompts[half:], seeds[half:])
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
