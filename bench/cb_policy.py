"""An experiment: the ``hf`` policy on transformers' continuous batching, with prefix caching.

Rollouts re-send the whole conversation at every step, so most of each prompt was already
encoded at the previous step. transformers' continuous-batching engine (``init_continuous_batching``,
a paged KV cache) keeps the blocks of finished requests and reuses every block whose
tokens match a new prompt's prefix (``allow_block_sharing``), so a step only encodes what
is new. Finished rows leave the batch at once instead of being decoded as padding.

``ContinuousBatchingPolicy`` answers exactly like ``HFPolicy`` (greedy; each answer cut
right after its first full ``Action:`` line, as ``HFPolicy``'s stopping criterion does):
tokens are streamed and a request is cancelled once its action line is complete.
"""

from __future__ import annotations

import itertools
import time

import torch

from agentclone.policies.base import PolicyRequest
from agentclone.policies.hf import HFPolicy
from agentclone.prompting import stop_after_action


class ContinuousBatchingPolicy(HFPolicy):
    name = "hf-cb"

    def __init__(self, *args, page_size: int = 32, cache_tokens: int = 65536, max_batch_tokens: int = 1024,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.gen.temperature > 0:
            raise ValueError("this experiment is greedy only")
        self.page_size = page_size
        self.cache_tokens = cache_tokens
        self.max_batch_tokens = max_batch_tokens
        self._manager = None
        self._ids = itertools.count()
        self.cached_prompt_tokens = 0  # prompt tokens served from the prefix cache (when known)

    def _start(self):
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        gen = GenerationConfig(max_new_tokens=self.gen.max_new_tokens, do_sample=False,
                               eos_token_id=self._stop_ids, pad_token_id=self.tokenizer.pad_token_id)
        cfg = ContinuousBatchingConfig(
            page_size=self.page_size,
            num_blocks=max(16, self.cache_tokens // self.page_size),  # bounded: the default sizes itself to memory
            max_batch_tokens=self.max_batch_tokens,
            max_requests_per_batch=max(1, self.batch_size),
            allow_block_sharing=True,
            use_cuda_graph=False,
            auto_switch_to_flash=False,
        )
        self._manager = self.model.init_continuous_batching(generation_config=gen, continuous_batching_config=cfg)
        self._manager.start()

    @torch.inference_mode()
    def act(self, requests: list[PolicyRequest]) -> list[str]:
        if self._manager is None:
            self._start()
        manager = self._manager
        prompts = self._prompts(requests)
        ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        rid_to_index = {}
        for i, prompt_ids in enumerate(ids):
            rid = f"r{next(self._ids)}"
            rid_to_index[rid] = i
            manager.add_request(prompt_ids, request_id=rid, max_new_tokens=self.gen.max_new_tokens,
                                streaming=True, eos_token_id=self._stop_ids)
        out: list[str | None] = [None] * len(ids)
        left = set(rid_to_index)
        deadline = time.monotonic() + 3600
        while left:
            result = manager.get_result(timeout=1.0)
            if result is None:
                if not manager.is_running():
                    raise RuntimeError("the continuous batching engine stopped")
                if time.monotonic() > deadline:
                    raise TimeoutError("no answer from the continuous batching engine for an hour")
                continue
            if result.request_id not in left:
                continue  # a late stream item of a request already answered (cancelled)
            if result.error:
                raise RuntimeError(f"generation failed: {result.error}")
            text, complete = self._answer(result.generated_tokens)
            if complete or result.is_finished():
                out[rid_to_index[result.request_id]] = text
                left.discard(result.request_id)
                if not result.is_finished():
                    manager.cancel_request(result.request_id)
        return out  # type: ignore[return-value]

    def _answer(self, tokens: list[int]) -> tuple[str, bool]:
        """The answer text, cut where ``HFPolicy``'s stopping criterion would have stopped generating."""
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        if not getattr(self, "stop_at_action", True) or not stop_after_action(text):
            return text, False
        for k in range(1, len(tokens) + 1):  # the first token after which the action line is complete
            prefix = self.tokenizer.decode(tokens[:k], skip_special_tokens=True)
            if stop_after_action(prefix):
                return prefix, True
        return text, True

    def close(self) -> None:
        if self._manager is not None:
            self._manager.destroy()  # stops the engine thread, frees its cache, restores the attention implementation
            self._manager = None
        super().close()
