"""`agentclone serve` (a real vLLM OpenAI-compatible server on 127.0.0.1) and the openai backend against it.

One server for the whole module, started through the CLI with a LoRA adapter
(`--adapter noisy=PATH`) on a free port, and stopped with SIGTERM by the last
test. Every address used is on the loopback interface.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
from vllm_testing import (
    EPISODES,
    GEN,
    actions,
    answers,
    first_step_requests,
    heldout_rollouts,
    hf_reference,
    noisy_adapter,
    skip_or_fail_without_vllm,
)

skip_or_fail_without_vllm()

import httpx  # noqa: E402

from agentclone.policies.base import make_policy  # noqa: E402
from agentclone.policies.openai import OpenAIBackendError  # noqa: E402
from agentclone.serving import free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return noisy_adapter(tmp_path_factory)


@pytest.fixture(scope="module")
def server(adapter, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    port = free_port()
    stderr = open(tmp / "cli.err", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentclone.cli", "serve", "smollm2-135m", "--adapter", f"noisy={adapter}",
         "--port", str(port), "--log", str(tmp / "vllm.log")],
        stdout=subprocess.DEVNULL, stderr=stderr, stdin=subprocess.DEVNULL, cwd=REPO, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"agentclone serve exited with {proc.returncode}:\n{(tmp / 'cli.err').read_text()}")
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server was not healthy after 600s; log:\n{(tmp / 'vllm.log').read_text()[-3000:]}")
            time.sleep(1)
        yield SimpleNamespace(url=f"{url}/v1", port=port, proc=proc, err=tmp / "cli.err")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=120)
        stderr.close()


def test_the_server_lists_the_base_model_and_the_adapter(server, adapter):
    models = {m["id"]: m for m in httpx.get(f"{server.url}/models", timeout=30).json()["data"]}
    assert {"smollm2-135m", "noisy"} <= set(models)
    assert Path(models["noisy"]["root"]).resolve() == Path(adapter).resolve()


def test_rollouts_through_the_server_match_hf_for_the_base_and_the_adapter(server, adapter):
    reference = hf_reference(adapter)
    base = make_policy("openai", base_url=server.url, model="smollm2-135m", generation=GEN, concurrency=8)
    # found by the path the server loaded it from, as `eval.backend: openai` finds a recipe's adapter
    tuned = make_policy("openai", base_url=server.url, adapter=adapter, generation=GEN, concurrency=8)
    got = {"base": heldout_rollouts(base, EPISODES), "adapter": heldout_rollouts(tuned, EPISODES)}
    for name in ("base", "adapter"):
        for ref, traj in zip(reference[name], got[name]):
            assert actions(traj) == actions(ref), (name, ref.id)
            assert answers(traj) == answers(ref), (name, ref.id)  # the same text, cut where hf stops
    # the adapter named in --lora-modules gives different text from the base
    assert [answers(t) for t in got["adapter"]] != [answers(t) for t in got["base"]]
    assert tuned.stats["requests"] > 0 and tuned.stats["completion_tokens"] > 0
    base.close()
    tuned.close()


def test_a_tiny_timeout_is_a_clear_error_after_the_retries(server):
    policy = make_policy("openai", base_url=server.url, generation=GEN, timeout_s=0.001, max_retries=1,
                         backoff_s=0.01)
    requests = first_step_requests(policy, 1)
    with pytest.raises(OpenAIBackendError, match=r"failed after 2 attempt\(s\); last error: timed out after 0.001s"):
        policy.act(requests)
    policy.close()


class FlakyProxy:
    """A proxy on 127.0.0.1 that answers the first chat request with 503, then forwards to ``target``."""

    def __init__(self, target: str) -> None:
        self.posts = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _relay(self, resp):
                self.send_response(resp.status_code)
                self.send_header("Content-Type", resp.headers.get("content-type", "application/json"))
                self.send_header("Content-Length", str(len(resp.content)))
                self.end_headers()
                self.wfile.write(resp.content)

            def do_GET(self):
                self._relay(httpx.get(target + self.path, timeout=60))

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                proxy.posts += 1
                if proxy.posts == 1:
                    data = json.dumps({"error": "warming up"}).encode()
                    self.send_response(503)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                self._relay(httpx.post(target + self.path, content=body, timeout=120,
                                       headers={"Content-Type": "application/json"}))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_retries_a_dead_server_and_a_503_then_answers(server):
    direct = make_policy("openai", base_url=server.url, generation=GEN)
    requests = first_step_requests(direct, 1)
    expected = direct.act(requests)
    direct.close()
    proxy = FlakyProxy(server.url.removesuffix("/v1"))
    closed = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    try:
        policy = make_policy("openai", base_url=[closed, proxy.url], generation=GEN, max_retries=3, backoff_s=0.05)
        # closed port -> 503 from the proxy -> closed port -> the proxy forwards to vLLM
        assert policy.act(requests) == expected
        assert policy.stats["retries"] == 3 and proxy.posts == 2
        policy.close()
    finally:
        proxy.close()


def _processes() -> dict[int, tuple[int, list[bytes]]]:
    """pid -> (process group, command line) of every process on the machine."""
    out = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            stat = (proc / "stat").read_text()
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        pgrp = int(stat.rsplit(")", 1)[1].split()[2])  # the fields after the command name: state, ppid, pgrp
        out[int(proc.name)] = (pgrp, args)
    return out


def test_sigterm_stops_the_server_and_its_engine(server):
    """Last in the module: stops the module's server."""
    port = str(server.port).encode()
    # vLLM's api_server leads its own process group (engine core and workers included)
    groups = {pgrp for pgrp, args in _processes().values()
              if port in args and b"vllm.entrypoints.openai.api_server" in args}
    assert len(groups) == 1
    os.killpg(server.proc.pid, signal.SIGTERM)
    assert server.proc.wait(timeout=120) == 0
    assert "server stopped" in server.err.read_text()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/models", timeout=5)
    left = [pid for pid, (pgrp, _) in _processes().items() if pgrp in groups]
    assert not left, f"processes of the server left running: {left}"
