"""The ``hf`` policy's ``continuous`` engine: transformers' continuous batching with prefix caching.

Rollouts re-send the whole conversation at every step, so most of each prompt was already
encoded at the previous step. transformers' continuous-batching engine
(``model.init_continuous_batching``: a paged KV cache and a background generation thread)
keeps the blocks of finished requests and reuses every block whose tokens match a new
prompt's prefix (``allow_block_sharing``), so a step only encodes what is new, and a
finished row leaves the batch at once instead of being decoded as padding.

Answers are the ``generate`` engine's: the same generation settings (the model's generation
config with the policy's sampling settings on top, as ``generate`` merges them), the same
stop tokens, and each answer cut right after its first full ``Action:`` line, at the token
where ``HFPolicy``'s stopping criterion stops (tokens are streamed and a request is
cancelled once its action line is complete). Used through ``HFPolicy(engine="continuous")``.
"""

from __future__ import annotations

import copy
import itertools
import threading
import time
import weakref

from agentclone.policies import varlen_attention
from agentclone.policies.base import GenerationSettings, cut_after_action_line
from agentclone.policies.hf import CONTINUOUS_ATTENTIONS as ATTENTIONS

# ``generate`` fills top_k with 50 when neither the caller nor the model's generation config
# sets it (GenerationConfig's global defaults); the engine applies only what it is given.
_GENERATE_DEFAULT_TOP_K = 50


def cut_at_action(tokenizer, tokens: list[int], stop_at_action: bool = True) -> tuple[str, bool]:
    """The answer text of ``tokens``, cut after the first token at which a full ``Action:`` line is
    written (where ``HFPolicy``'s ``_ActionLineStop`` stops ``generate``), and whether it was cut there."""
    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    if not stop_at_action:
        return decode(tokens), False
    text, cut = cut_after_action_line(tokens, decode)
    return text, cut is not None


def _engine_model(model):
    """The transformers model that owns ``init_continuous_batching``. A PEFT LoRA model injects its
    layers into the base model's modules, so the base model runs with the adapter applied."""
    try:
        from peft import PeftModel
    except ImportError:  # peft is optional without adapters
        return model
    if isinstance(model, PeftModel):
        if model.active_peft_config.is_prompt_learning:
            raise ValueError(
                "engine 'continuous' supports adapters that change the model's layers (LoRA), not prompt-learning "
                "adapters; use engine 'generate'"
            )
        return model.get_base_model()
    return model


def generation_config(model, gen: GenerationSettings, stop_ids: list[int], pad_token_id: int | None):
    """The GenerationConfig ``generate`` would use for ``HFPolicy``'s settings."""
    from transformers import GenerationConfig

    base = getattr(model, "generation_config", None)
    cfg = copy.deepcopy(base) if isinstance(base, GenerationConfig) else GenerationConfig()
    sample = gen.temperature > 0
    cfg.max_new_tokens = gen.max_new_tokens
    cfg.do_sample = sample
    cfg.eos_token_id = list(stop_ids)
    cfg.pad_token_id = pad_token_id
    cfg.num_return_sequences = 1
    if sample:
        cfg.temperature = gen.temperature
        cfg.top_p = gen.top_p
        if cfg.top_k is None:
            cfg.top_k = _GENERATE_DEFAULT_TOP_K
    else:
        cfg.temperature = cfg.top_p = cfg.top_k = None
    if gen.extra:  # generation.extra: further generate settings, as HFPolicy passes them to generate
        unknown = cfg.update(**gen.extra)
        if unknown:
            raise ValueError(f"generation.extra: {', '.join(sorted(unknown))} is no transformers generation setting")
    return cfg


class ContinuousEngine:
    """One continuous-batching manager for one policy: started on first use, destroyed by ``close``."""

    #: seconds without any output from the engine before a call gives up (it is then torn down)
    idle_timeout_s: float = 1800.0

    def __init__(
        self,
        model,
        tokenizer,
        gen: GenerationSettings,
        stop_ids: list[int],
        stop_at_action: bool = True,
        max_requests_per_batch: int = 32,
        page_size: int = 32,
        cache_tokens: int = 65536,
        max_batch_tokens: int = 1024,
        attention: str = "varlen",
    ) -> None:
        if attention not in ATTENTIONS:
            raise ValueError(f"unknown continuous-engine attention {attention!r}; allowed: {', '.join(ATTENTIONS)}")
        self.model = _engine_model(model)
        self.tokenizer = tokenizer
        self.gen = gen
        self.stop_ids = list(stop_ids)
        self.stop_at_action = stop_at_action
        self.max_requests_per_batch = max(1, max_requests_per_batch)
        self.page_size = page_size
        self.cache_tokens = cache_tokens
        self.max_batch_tokens = max_batch_tokens
        self.attention = attention
        self._manager = None
        self._finalizer = None
        self._ids = itertools.count()
        self._lock = threading.Lock()  # one call at a time: results are read from one shared queue

    # -------------------------------------------------------------- lifecycle

    def _num_blocks(self) -> int:
        return max(16, self.cache_tokens // self.page_size)  # bounded: the default sizes itself to memory

    def _capacity(self) -> int:
        return self._num_blocks() * self.page_size

    def _start(self) -> None:
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        cfg = generation_config(self.model, self.gen, self.stop_ids, self.tokenizer.pad_token_id)
        unsupported = [
            type(p).__name__
            for p in self.model._get_logits_processor(cfg)
            if not getattr(p, "supports_continuous_batching", False)
        ]
        if unsupported:  # the engine would drop them (or apply them wrongly): answers would differ from generate
            raise ValueError(
                f"engine 'continuous' cannot apply {', '.join(unsupported)} (from the model's generation config); "
                "use engine 'generate'"
            )
        cb = ContinuousBatchingConfig(
            page_size=self.page_size,
            num_blocks=self._num_blocks(),
            max_batch_tokens=self.max_batch_tokens,
            max_requests_per_batch=self.max_requests_per_batch,
            allow_block_sharing=True,
            use_cuda_graph=False,
            auto_switch_to_flash=False,
            seed=self.gen.seed,
        )
        switched = self.attention == "varlen"
        if switched:
            varlen_attention.switch(self.model)
        try:
            manager = self.model.init_continuous_batching(generation_config=cfg, continuous_batching_config=cb)
            manager.start()
        except BaseException:
            if switched:
                varlen_attention.restore(self.model)
            raise
        self._manager = manager
        # The engine thread is not a daemon: if the policy is dropped or the interpreter exits without
        # close(), stop it anyway (threading's exit hooks run before non-daemon threads are joined).
        # Stopping it also gives the model back the attention it had.
        self._finalizer = weakref.finalize(self, _destroy, manager, self.model if switched else None)
        register = getattr(threading, "_register_atexit", None)
        if register is not None:
            try:
                register(self._finalizer)
            except RuntimeError:  # the interpreter is already shutting down
                pass

    def close(self) -> None:
        """Stop the engine thread and free its cache (restores the model's attention implementation)."""
        if self._finalizer is not None:
            self._finalizer()  # calls manager.destroy() once
        self._manager = None
        self._finalizer = None

    # -------------------------------------------------------------- answers

    def answer(self, prompts: list[str]) -> list[str]:
        """One answer per chat-templated prompt, in order."""
        if not prompts:
            return []
        with self._lock:
            if self._manager is None:
                self._start()
            try:
                return self._answer(prompts)
            except _EngineDown:
                self.close()  # the next call starts a fresh engine
                raise

    def _answer(self, prompts: list[str]) -> list[str]:
        manager = self._manager
        ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        capacity = self._capacity()
        longest = max(len(x) for x in ids) + self.gen.max_new_tokens
        if longest > capacity:  # the engine would fail the whole batch (and stop) on it
            raise ValueError(
                f"a prompt of {longest - self.gen.max_new_tokens} tokens plus {self.gen.max_new_tokens} new tokens "
                f"does not fit the continuous engine's cache of {capacity} tokens; raise cache_tokens"
            )
        index: dict[str, int] = {}
        streaming = self.stop_at_action  # tokens are watched only to cut at the action line
        left: set[str] = set()
        out: list[str | None] = [None] * len(ids)
        try:
            self._submit(manager, ids, streaming, index, left)
            last_output = time.monotonic()
            while left:
                result = manager.get_result(timeout=1.0)
                if result is None:
                    if not manager.is_running() or manager.background_thread_status.fatal_error is not None:
                        raise _EngineDown(self._why_down(manager, "it stopped")) from self._fatal(manager)
                    if time.monotonic() - last_output > self.idle_timeout_s:
                        raise _EngineDown(
                            f"the continuous batching engine gave no output for {self.idle_timeout_s:.0f} s"
                        )
                    continue
                last_output = time.monotonic()
                rid = result.request_id
                if rid not in left:
                    continue  # a late stream item of a request already answered (and cancelled)
                if result.error:  # the engine may be half down (it fails every request when it dies): restart it
                    raise _EngineDown(f"the continuous batching engine failed on a request: {result.error}")
                finished = result.is_finished()
                text, cut = cut_at_action(self.tokenizer, result.generated_tokens, self.stop_at_action)
                if cut or finished:
                    out[index[rid]] = text
                    left.discard(rid)
                    if not finished:
                        manager.cancel_request(rid)
        finally:
            if left and manager.is_running():  # an error or an interrupt: stop what this call left running
                for rid in left:
                    manager.cancel_request(rid)
        return out  # type: ignore[return-value]

    def _submit(self, manager, ids: list[list[int]], streaming: bool, index: dict[str, int], left: set[str]) -> None:
        """Queue one request per prompt, all while the engine is paused so they enter its next batch together."""
        if not manager.is_running():
            raise _EngineDown(self._why_down(manager, "its thread is not running")) from self._fatal(manager)
        pause = manager.pause()
        try:
            pause.__enter__()
        except RuntimeError as exc:  # the loop died before it could pause
            raise _EngineDown(self._why_down(manager, str(exc))) from self._fatal(manager)
        try:
            for i, prompt_ids in enumerate(ids):
                rid = f"agentclone-{next(self._ids)}"
                added = manager.add_request(
                    prompt_ids, request_id=rid, max_new_tokens=self.gen.max_new_tokens,
                    streaming=streaming, eos_token_id=self.stop_ids,
                )
                if added is None:
                    raise _EngineDown(self._why_down(manager, "it refused a request")) from self._fatal(manager)
                index[rid] = i
                left.add(rid)
        finally:
            pause.__exit__(None, None, None)

    @staticmethod
    def _fatal(manager) -> BaseException | None:
        return manager.background_thread_status.fatal_error

    @classmethod
    def _why_down(cls, manager, what: str) -> str:
        fatal = cls._fatal(manager)
        return f"the continuous batching engine is down ({what})" + (f": {fatal!r}" if fatal is not None else "")


class _EngineDown(RuntimeError):
    """The engine thread is gone or unusable."""


def _destroy(manager, model=None, timeout_s: float = 120.0) -> None:
    """Stop the engine thread now (requests still in it are dropped), then release the manager and, when
    the engine switched ``model``'s attention (``model`` given), give it back. A thread
    that does not stop within ``timeout_s`` is left behind rather than waited for forever."""
    try:
        if manager.is_running():
            manager.stop(block=True, timeout=timeout_s, hard_stop=True)
        if not manager.is_running():
            manager.destroy()
    except RuntimeError:  # e.g. called from the engine thread itself (garbage collection there)
        pass
    if model is not None:
        varlen_attention.restore(model)
