"""The openai backend's HTTP behaviour against small chat servers on 127.0.0.1.

The servers here answer like an OpenAI-compatible endpoint (``/v1/models``,
``/v1/chat/completions``) with scripted faults; tests/vllm/ runs the backend
against a real vLLM server.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentclone.policies.base import GenerationSettings, PolicyRequest, make_policy
from agentclone.policies.openai import OpenAIBackendError, cut_after_action, normalize_base_url
from agentclone.prompting import ActionFormat, stop_after_action
from agentclone.serving import free_port

SECRET = "sk-test-4f9d8e7c6b5a-do-not-leak"


class ChatServer:
    """An OpenAI-compatible endpoint on 127.0.0.1 whose answers a test scripts.

    ``answer(body, headers)`` returns ``(status, payload, extra_headers)``; the
    default answers ``Thought: ...`` / ``Action: add 1`` with token pieces.
    """

    def __init__(self, answer=None, models=None, delay_s: float = 0.0, barrier: threading.Barrier | None = None):
        self.answer = answer or (lambda body, headers: (200, completion("Thought: go.\nAction: add 1"), {}))
        self.models = models if models is not None else [{"id": "smollm2-135m", "root": "/models/smollm2"}]
        self.delay_s = delay_s
        self.barrier = barrier
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.inflight = 0
        self.max_inflight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, status, payload, headers=None):
                data = json.dumps(payload).encode() if not isinstance(payload, bytes) else payload
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": server.models})
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    server.inflight += 1
                    server.max_inflight = max(server.max_inflight, server.inflight)
                try:
                    if server.barrier is not None:
                        server.barrier.wait(timeout=10)
                    if server.delay_s:
                        time.sleep(server.delay_s)
                    status, payload, headers = server.answer(body, dict(self.headers))
                finally:
                    with server.lock:
                        server.inflight -= 1
                try:
                    self._send(status, payload, headers)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def completion(text: str, tokens: list[str] | None = None) -> dict:
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    if tokens is not None:
        choice["logprobs"] = {"content": [{"token": t, "logprob": -0.1, "top_logprobs": []} for t in tokens]}
    return {"id": "x", "object": "chat.completion", "choices": [choice],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5}}


def requests_for(n: int) -> list[PolicyRequest]:
    return [
        PolicyRequest(messages=[{"role": "system", "content": "Reach the target."},
                                {"role": "user", "content": f"Value 0. Target {i}."}], episode_id=f"ep{i}")
        for i in range(n)
    ]


def policy(url, **options):
    options.setdefault("tokenizer", None)
    options.setdefault("backoff_s", 0.01)
    return make_policy("openai", fmt=ActionFormat(), base_url=url, **options)


def test_sends_generation_settings_and_cuts_after_the_action_line():
    tokens = ["Thought", ":", " go", ".\n", "Action", ":", " add", " 1", ".\n\n", "Observation", ": ok"]
    text = "".join(tokens)
    with ChatServer(answer=lambda b, h: (200, completion(text, tokens), {})) as server:
        gen = GenerationSettings(max_new_tokens=40, temperature=0.0, top_p=1.0)
        p = policy(server.url, generation=gen)
        [answer] = p.act(requests_for(1))
        p.close()
    # the hf backend stops after the token that completes the Action line: ".\n\n"
    assert answer == "Thought: go.\nAction: add 1.\n\n"
    body = server.requests[0]
    assert body["model"] == "smollm2-135m"
    assert body["max_tokens"] == 40 and body["temperature"] == 0.0 and body["top_p"] == 1.0
    assert body["messages"][1]["content"] == "Value 0. Target 0."
    assert "Authorization" not in server.headers[0]  # no api_key_env, no key


@given(st.lists(st.sampled_from(["Thought", ":", " x", "\n", "Action", "action", " add 1", "\n\n", " ", "é", "ok\n"]),
                max_size=14))
def test_cut_after_action_stops_where_generation_would_stop(tokens):
    text = "".join(tokens)
    # what a generate loop checking stop_after_action after every token returns
    expected = text
    for k in range(1, len(tokens) + 1):
        if stop_after_action("".join(tokens[:k])):
            expected = "".join(tokens[:k])
            break
    assert cut_after_action(text, tokens) == expected
    # without tokens: cut right after the newline, the same answer up to that token's tail
    assert expected.startswith(cut_after_action(text))


def test_finds_the_adapter_by_the_path_the_server_loaded(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    models = [{"id": "smollm2-135m", "root": "/models/smollm2", "parent": None},
              {"id": "bc", "root": str(adapter), "parent": "smollm2-135m"}]
    with ChatServer(models=models) as server:
        p = policy(server.url, adapter=str(adapter))
        p.act(requests_for(2))
        p.close()
        other = policy(server.url, adapter=str(tmp_path / "elsewhere"))
        with pytest.raises(OpenAIBackendError, match=r"does not serve the adapter .*elsewhere.*bc \(from"):
            other.act(requests_for(1))
        other.close()
    assert [b["model"] for b in server.requests] == ["bc", "bc"]


def test_retries_503_and_429_with_backoff_then_succeeds():
    calls = []

    def flaky(body, headers):
        calls.append(1)
        if len(calls) == 1:
            return 503, {"error": "loading"}, {}
        if len(calls) == 2:
            return 429, {"error": "slow down"}, {"Retry-After": "0"}
        return 200, completion("Action: add 2"), {}

    with ChatServer(answer=flaky) as server:
        p = policy(server.url, max_retries=3)
        assert p.act(requests_for(1)) == ["Action: add 2"]
        assert p.stats["retries"] == 2 and p.stats["requests"] == 1
        p.close()
    assert len(server.requests) == 3


def test_gives_up_after_the_retries_with_a_clear_error():
    with ChatServer(answer=lambda b, h: (500, {"error": "boom"}, {})) as server:
        p = policy(server.url, max_retries=2)
        with pytest.raises(OpenAIBackendError, match=r"failed after 3 attempt\(s\); last error: HTTP 500 .*boom"):
            p.act(requests_for(1))
        p.close()
    assert len(server.requests) == 3


def test_client_errors_are_not_retried():
    with ChatServer(answer=lambda b, h: (400, {"error": "bad max_tokens"}, {})) as server:
        p = policy(server.url, max_retries=4)
        with pytest.raises(OpenAIBackendError, match=r"HTTP 400 .*bad max_tokens.*not retried"):
            p.act(requests_for(1))
        p.close()
    assert len(server.requests) == 1


def test_timeout_is_a_clear_error_after_the_retries():
    with ChatServer(delay_s=1.0) as server:
        p = policy(server.url, timeout_s=0.1, max_retries=1)
        with pytest.raises(OpenAIBackendError, match=r"after 2 attempt\(s\); last error: timed out after 0.1s"):
            p.act(requests_for(1))
        p.close()


def test_requests_go_round_robin_and_fail_over_from_a_dead_server():
    closed = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with ChatServer() as a, ChatServer() as b:
        p = policy([a.url, b.url])
        assert len(p.act(requests_for(8))) == 8
        p.close()
        assert len(a.requests) == 4 and len(b.requests) == 4
        p = policy(None, base_urls=[a.url, b.url])  # the plural spelling works the same
        assert len(p.act(requests_for(2))) == 2
        p.close()
        assert len(a.requests) == 5 and len(b.requests) == 5
        p = policy([closed, a.url], max_retries=1)
        assert p.act(requests_for(4)) == ["Thought: go.\nAction: add 1"] * 4
        assert p.stats["retries"] == 2  # the two requests that started on the dead server
        p.close()


def test_concurrency_is_bounded():
    # three requests must be in flight together to pass the barrier; never more than three
    barrier = threading.Barrier(3)
    with ChatServer(barrier=barrier) as server:
        p = policy(server.url, concurrency=3)
        assert len(p.act(requests_for(9))) == 9
        p.close()
    assert server.max_inflight == 3


def test_api_key_comes_from_the_environment_and_never_leaks(tmp_path, monkeypatch, capsys, caplog,
                                                           counter_env_registered):
    import logging
    import traceback

    from agentclone.data import read_trajectories
    from agentclone.evaluation import write_report
    from agentclone.pipeline import collect

    monkeypatch.delenv("AGENTCLONE_TEST_KEY", raising=False)
    with pytest.raises(ValueError, match="AGENTCLONE_TEST_KEY is not set"):
        policy("http://127.0.0.1:9/v1", api_key_env="AGENTCLONE_TEST_KEY")
    monkeypatch.setenv("AGENTCLONE_TEST_KEY", SECRET)

    # a careless server that echoes the Authorization header into answers and errors
    def echo(body, headers):
        auth = headers.get("Authorization", "")
        if body["messages"][-1]["content"].startswith("fail"):
            return 401, {"error": f"invalid key {auth}"}, {}
        return 200, completion(f"Thought: my key is {auth}\nAction: add 3"), {}

    with ChatServer(answer=echo) as server:
        caplog.set_level(logging.DEBUG)  # whatever httpx or the backend logs
        p = policy(server.url, api_key_env="AGENTCLONE_TEST_KEY")
        res = collect("test/counter-v0", {}, p, "heldout", 3, tmp_path / "eval.jsonl")
        with pytest.raises(OpenAIBackendError) as exc:
            p.act([PolicyRequest(messages=[{"role": "user", "content": "fail please"}], episode_id="x")])
        p.close()
    assert all(h["Authorization"] == f"Bearer {SECRET}" for h in server.headers)  # the key was sent
    assert "***" in str(exc.value)  # the server's echo of the key reached the error text, redacted
    assert SECRET not in "".join(traceback.format_exception(exc.value))  # nor in any chained exception
    write_report({"base": read_trajectories(tmp_path / "eval.jsonl")}, tmp_path)
    steps = [s for t in res.trajectories for s in t.steps]
    # the echoed key reached every answer, redacted: the leak path below was live
    assert steps and all("Bearer ***" in s.raw_output and "Bearer ***" in s.thought for s in steps)
    files = [f for f in tmp_path.rglob("*") if f.is_file()]
    assert {"eval.jsonl", "report.json", "report.md"} <= {f.name for f in files}
    for f in files:  # trajectories, reports, anything else written
        assert SECRET not in f.read_bytes().decode(errors="replace"), f.name
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err + caplog.text


def test_base_url_is_checked_and_completed():
    assert normalize_base_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000/v1"
    assert normalize_base_url("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000/v1"
    with pytest.raises(ValueError, match="http:// or https://"):
        policy("127.0.0.1:8000")
    with pytest.raises(ValueError, match="at least one server URL"):
        policy([])


def test_a_recipe_evaluates_through_a_fleet_of_servers(tmp_path, counter_env_registered):
    from agentclone.pipeline import evaluate
    from agentclone.prompting import ActionFormat
    from agentclone.recipes import validate_recipe

    with ChatServer() as a, ChatServer() as b:
        recipe = validate_recipe({
            "env": {"id": "test/counter-v0"},
            "eval": {"backend": "openai", "policies": ["base"], "episodes": 4,
                     "backend_options": {"base_url": [a.url, b.url], "tokenizer": None, "concurrency": 4}},
        })
        report = evaluate(recipe, None, tmp_path, ActionFormat())
    assert report["base"]["episodes"] == 4 and report["base"]["errored"] == 0
    assert a.requests and b.requests  # spread over both servers
    assert (tmp_path / "report.md").exists()


def test_rollout_workers_split_one_collection_over_a_fleet_from_the_command_line(tmp_path, counter_env_registered):
    """`collect --shard I/N --backend-option base_url=...`: N workers, each on its own server,
    together run exactly the episodes of one unsharded run (same ids), none twice."""
    from typer.testing import CliRunner

    from agentclone.cli import app
    from agentclone.data import read_trajectories

    runner = CliRunner()
    base = ["collect", "--env", "test/counter-v0", "--split", "heldout", "-n", "7", "--seed", "3"]
    whole = runner.invoke(app, base + ["--output", str(tmp_path / "whole.jsonl")])
    assert whole.exit_code == 0, whole.output
    with ChatServer() as a, ChatServer() as b:
        for i, server in enumerate((a, b)):
            res = runner.invoke(app, base + [
                "--policy", "openai", "--shard", f"{i}/2", "--output", str(tmp_path / f"part{i}.jsonl"),
                "--backend-option", f"base_url={server.url}", "--backend-option", "tokenizer=null",
                "--backend-option", "concurrency=2"])
            assert res.exit_code == 0, res.output
    parts = [read_trajectories(tmp_path / f"part{i}.jsonl") for i in range(2)]
    assert len(parts[0]) == 4 and len(parts[1]) == 3 and a.requests and b.requests
    ids = [t.id for part in parts for t in part]
    assert len(ids) == len(set(ids)) and set(ids) == {t.id for t in read_trajectories(tmp_path / "whole.jsonl")}
    assert all(t.steps and t.steps[0].action == "add 1" for part in parts for t in part)  # the servers' answers

    bad = runner.invoke(app, base + ["--shard", "2/2", "--output", str(tmp_path / "x.jsonl")])
    assert bad.exit_code != 0 and "0 <= I < N" in bad.output
    bad = runner.invoke(app, base + ["--backend-option", "base_url", "--output", str(tmp_path / "x.jsonl")])
    assert bad.exit_code != 0 and "--backend-option takes KEY=VALUE" in bad.output
