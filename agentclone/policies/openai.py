"""Any OpenAI-compatible chat server as a policy: a fleet of vLLM servers, or a teacher / judge endpoint.

Requests for one batch go out in parallel (``concurrency`` at a time), spread
round-robin over ``base_url`` (one URL or a list, e.g. one vLLM server per
GPU). Connection errors, timeouts, 429 and 5xx answers are retried with
exponential backoff, each retry on the next server of the list. The API key is
read from the environment variable that ``api_key_env`` names; it is sent only
in the ``Authorization`` header and never appears in errors, logs or
trajectories.

The server applies the model's chat template; for the models agentclone
converts, the tokenizer in the model directory carries the same template the
``hf`` backend uses. Answers are cut right after the ``Action:`` line, at the
token that ends it when the server reports tokens (``logprobs``), which is where
the ``hf`` backend stops generating, so both backends return the same text.
"""

from __future__ import annotations

import itertools
import os
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agentclone.policies.base import (  # noqa: F401 - request_seed: imported from here by older code
    GenerationSettings,
    ModelPolicy,
    PolicyRequest,
    cut_after_action_line,
    request_seed,
)


class OpenAIBackendError(RuntimeError):
    """A request that failed for good (after its retries), or a server that does not serve the model."""


def cut_after_action(text: str, tokens: list[str] | None = None) -> str:
    """``text`` up to the end of its first full ``Action:`` line, as the ``hf`` backend stops.

    The ``hf`` backend stops after the token that completes the line, so the
    text it returns runs to the end of that token. With the answer's ``tokens``
    (when they add up to ``text``) the cut is made at that token's end, else
    right after the newline (``cut_after_action_line`` over the text's characters).
    """
    pieces = tokens if tokens and "".join(tokens) == text else text
    return cut_after_action_line(pieces)[0]


def normalize_base_url(url: str) -> str:
    """``http://host:8000`` -> ``http://host:8000/v1``; a URL with a path is kept as given."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"base_url must be a URL such as http://127.0.0.1:8000/v1, got {url!r}")
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base_url must start with http:// or https:// and name a host, got {url!r}")
    if parts.path in ("", "/"):
        url += "/v1"
    return url


# request body keys the policy sets itself (``generation.extra`` may add any other)
_OWN_BODY_KEYS = {"messages", "model", "max_tokens", "temperature", "top_p", "seed", "logprobs", "top_logprobs"}


class OpenAIPolicy(ModelPolicy):
    """Chat completions against OpenAI-compatible servers.

    ``model`` and ``adapter`` are matched against the server's ``/v1/models``:
    by served name, or by the path the server loaded them from (vLLM reports it
    as ``root``), so ``eval.backend: openai`` finds the adapter a recipe
    trained when the server was started with ``--adapter NAME=PATH``.
    ``served_model`` / ``served_adapter`` name them explicitly instead.
    ``batch_size`` is accepted for symmetry with ``hf`` and unused: the server
    batches the concurrent requests itself. ``generation.extra`` is added to
    every request's body (``top_k``, ``presence_penalty``, ...).
    """

    name = "openai"

    def __init__(
        self,
        fmt=None,
        model: str = "smollm2-135m",
        adapter: str | None = None,
        base_url: str | list[str] = "http://127.0.0.1:8000/v1",
        base_urls: list[str] | None = None,
        api_key_env: str | None = None,
        generation: GenerationSettings | dict | None = None,
        batch_size: int | None = None,
        concurrency: int = 16,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        served_model: str | None = None,
        served_adapter: str | None = None,
        tokenizer: str | None = "auto",
        logprobs: bool = True,
        stop_at_action: bool = True,
    ) -> None:
        # stop_at_action False: free text (a teacher's or judge's answer)
        super().__init__(fmt, model=model, adapter=adapter, batch_size=batch_size, generation=generation,
                         stop_at_action=stop_at_action)
        import httpx

        if base_urls is not None:  # the plural spelling of the same option
            base_url = base_urls
        urls = [base_url] if isinstance(base_url, str) else list(base_url or [])
        if not urls:
            raise ValueError("base_url: give at least one server URL, e.g. http://127.0.0.1:8000/v1")
        self.base_urls = [normalize_base_url(u) for u in urls]
        own = sorted(set(self.gen.extra) & _OWN_BODY_KEYS)
        if own:
            raise ValueError(f"generation.extra sets {', '.join(own)}, which the openai policy sets itself")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {max_retries}")
        self.concurrency = concurrency
        self.timeout_s = float(timeout_s)
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.served_model = served_model
        self.served_adapter = served_adapter
        self.logprobs = logprobs
        self.api_key_env = api_key_env
        self._api_key = self._read_key(api_key_env)
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        self._client = httpx.Client(
            timeout=httpx.Timeout(self.timeout_s),
            headers=headers,
            limits=httpx.Limits(max_connections=concurrency * len(self.base_urls), max_keepalive_connections=concurrency),
        )
        self._pool: ThreadPoolExecutor | None = None
        self._next_url = itertools.count()
        self._lock = threading.Lock()
        self._served: dict[str, str] = {}
        self._rng = random.Random(self.gen.seed)
        self._tokenizer = self._load_tokenizer(tokenizer)
        self.stats = {"requests": 0, "retries": 0, "prompt_tokens": 0, "completion_tokens": 0}

    # -- setup --------------------------------------------------------------------------------

    @staticmethod
    def _read_key(var: str | None) -> str | None:
        if not var:
            return None
        value = os.environ.get(var)
        if not value:
            raise ValueError(f"api_key_env: the environment variable {var} is not set (it should hold the API key)")
        return value

    def _load_tokenizer(self, spec: str | None):
        """The model's own tokenizer, so prompt budgets count tokens exactly as the ``hf`` backend does."""
        if spec is None:
            return None
        from agentclone.models import load_tokenizer, resolve_model
        from agentclone.plugins import get_registry

        name = self.model_name if spec == "auto" else spec
        local = name in get_registry().models or Path(name).expanduser().is_dir()
        if not local:
            if spec != "auto":
                raise FileNotFoundError(f"tokenizer: no model directory or alias {spec!r}")
            return None  # a remote model: the rough estimate counts its tokens
        try:
            return load_tokenizer(resolve_model(name))
        except Exception as exc:
            if spec != "auto":
                raise
            print(f"openai backend: cannot load the tokenizer of {name} ({exc}); estimating prompt tokens",
                  file=sys.stderr)
            return None

    def count_tokens(self, text: str) -> int:
        if self._tokenizer is None:
            return super().count_tokens(text)
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    # -- requests -----------------------------------------------------------------------------

    def act(self, requests: list[PolicyRequest]) -> list[str]:
        if not requests:
            return []
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="openai-policy")
        with self._lock:
            starts = [next(self._next_url) for _ in requests]
        futures = [self._pool.submit(self._complete, req, start) for req, start in zip(requests, starts)]
        return [f.result() for f in futures]

    def _body(self, request: PolicyRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            **self.gen.extra,
            "messages": request.messages,
            "max_tokens": self.gen.max_new_tokens,
            "temperature": self.gen.temperature,
            "top_p": self.gen.top_p,
            "seed": request_seed(self.gen.seed, request),
        }
        if self.logprobs and self.stop_at_action:
            body.update(logprobs=True, top_logprobs=0)
        return body

    def _complete(self, request: PolicyRequest, start: int) -> str:
        import httpx

        body = self._body(request)
        attempts = self.max_retries + 1
        last = ""
        for attempt in range(attempts):
            url = self.base_urls[(start + attempt) % len(self.base_urls)]
            retry_after: float | None = None
            try:
                model = self._served_name(url)
                resp = self._client.post(f"{url}/chat/completions", json={**body, "model": model})
            except httpx.TimeoutException as exc:
                last = f"timed out after {self.timeout_s:g}s ({type(exc).__name__}) at {url}; raise timeout_s"
            except httpx.TransportError as exc:
                last = f"cannot reach {url}: {type(exc).__name__}: {exc}"
            else:
                if resp.status_code == 200:
                    return self._answer(resp, url)
                last = f"HTTP {resp.status_code} from {url}/chat/completions: {self._redact(resp.text[:500])}"
                if resp.status_code != 429 and resp.status_code < 500 and resp.status_code != 408:
                    raise OpenAIBackendError(self._redact(last + " (not retried)"))
                retry_after = _retry_after(resp.headers.get("retry-after"))
            if attempt + 1 < attempts:
                with self._lock:
                    self.stats["retries"] += 1
                time.sleep(self._backoff(attempt, retry_after))
        raise OpenAIBackendError(self._redact(f"chat completion failed after {attempts} attempt(s); last error: {last}"))

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff_s)
        with self._lock:
            jitter = 0.5 + 0.5 * self._rng.random()
        return min(self.max_backoff_s, self.backoff_s * 2**attempt) * jitter

    def _answer(self, resp, url: str) -> str:
        try:
            data = resp.json()
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise OpenAIBackendError(
                self._redact(f"{url}/chat/completions answered 200 but not a chat completion: {resp.text[:300]}")
            ) from None
        tokens = None
        content = (choice.get("logprobs") or {}).get("content") if isinstance(choice.get("logprobs"), dict) else None
        if content:
            tokens = [c.get("token", "") for c in content if isinstance(c, dict)]
        usage = data.get("usage") or {}
        with self._lock:
            self.stats["requests"] += 1
            self.stats["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
            self.stats["completion_tokens"] += int(usage.get("completion_tokens") or 0)
        # a server that echoes the request's headers must not put the key into a trajectory
        return self._redact(cut_after_action(text, tokens) if self.stop_at_action else text)

    def _served_name(self, url: str) -> str:
        """The name under which ``url`` serves our model or adapter (looked up once per server)."""
        explicit = self.served_adapter if self.adapter else self.served_model
        if explicit:
            return explicit
        with self._lock:
            if url in self._served:
                return self._served[url]
        wanted = self.adapter or self.model_name
        resp = self._client.get(f"{url}/models")
        if resp.status_code in (404, 405, 501):
            name = wanted  # a server without a model list: use the name as given
        elif resp.status_code != 200:
            import httpx

            # a transient failure: let the caller's retry loop handle it like any other
            if resp.status_code == 429 or resp.status_code >= 500:
                raise httpx.TransportError(f"HTTP {resp.status_code} from {url}/models")
            raise OpenAIBackendError(self._redact(f"HTTP {resp.status_code} from {url}/models: {resp.text[:300]}"))
        else:
            try:
                models = [m for m in resp.json().get("data", []) if isinstance(m, dict)]
            except (ValueError, AttributeError):
                raise OpenAIBackendError(f"{url}/models did not answer a model list") from None
            name = _match_model(wanted, models)
            if name is None and not self.adapter:
                name = _match_model(_local_path(wanted), models)
            if name is None:
                served = ", ".join(f"{m.get('id')} (from {m.get('root')})" for m in models) or "nothing"
                what = "adapter" if self.adapter else "model"
                raise OpenAIBackendError(
                    f"{url} does not serve the {what} {wanted!r}; it serves: {served}. Start the server with "
                    f"`agentclone serve MODEL --adapter NAME=PATH`, or name it with the option "
                    f"served_{what}"
                )
        with self._lock:
            self._served[url] = name
        return name

    def _redact(self, text: str) -> str:
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return text

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._client.close()


def _match_model(wanted: str, models: list[dict]) -> str | None:
    """A served model id for ``wanted``: the same id, or the model loaded from the path ``wanted``."""
    for m in models:
        if m.get("id") == wanted:
            return m["id"]
    try:
        target = Path(wanted).expanduser().resolve()
    except (OSError, ValueError):
        return None
    for m in models:
        root = m.get("root")
        if isinstance(root, str) and root:
            try:
                if Path(root).expanduser().resolve() == target:
                    return m["id"]
            except (OSError, ValueError):
                continue
    return None


def _local_path(model: str) -> str:
    """The directory an alias resolves to (``smollm2-135m`` -> the converted model), else ``model``."""
    from agentclone.models import resolve_model
    from agentclone.plugins import get_registry

    if model not in get_registry().models:
        return model
    try:
        return resolve_model(model)
    except Exception:
        return model


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
