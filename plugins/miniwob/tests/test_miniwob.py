"""Tests of the MiniWoB++ plugin, in a real headless Chromium: tasks, page text, actions, experts,
the browser's lifecycle (crash, exit, orphans) and its network lock-down."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from agentclone.envs import make_env
from agentclone.policies.expert import ExpertPolicy
from agentclone.rollout import RolloutSettings, plan_episodes, run_rollouts
from agentclone_miniwob.browser import MARKER, processes_matching, reap_orphans
from agentclone_miniwob.env import EXPERT_TASKS, HELDOUT_SEED_BASE, MiniWoBEnv
from agentclone_miniwob.experts import EXPERTS

SEEDS_PER_SPLIT = 3  # expert check: 3 training and 3 held-out seeds of every task


@pytest.fixture(scope="module")
def env():
    with MiniWoBEnv(tasks=list(EXPERT_TASKS), train_seeds=SEEDS_PER_SPLIT, heldout_seeds=SEEDS_PER_SPLIT) as e:
        yield e


def task(env: MiniWoBEnv, name: str, split: str = "train", i: int = 0):
    return [t for t in env.tasks(split) if t.kind == name][i]


def run_expert(env: MiniWoBEnv, cap: int = 12) -> tuple[bool, list[str]]:
    actions = []
    for _ in range(cap):
        move = env.expert_action()
        actions.append(move.action)
        _, reward, terminated, truncated, info = env.step(move.action)
        assert not info.get("invalid"), (actions, info)
        if terminated or truncated:
            return bool(info.get("success")) and reward == 1.0, actions
    return False, actions


# -- tasks --------------------------------------------------------------------------------------


def test_tasks_are_seeds_of_each_page_in_disjoint_stable_splits():
    e = MiniWoBEnv(tasks=["click-button", "enter-text"], train_seeds=5, heldout_seeds=2)
    train, heldout = e.tasks("train"), e.tasks("heldout")
    assert len(train) == 10 and len(heldout) == 4
    assert {t.data["seed"] for t in train} == set(range(5))
    assert {t.data["seed"] for t in heldout} == {HELDOUT_SEED_BASE, HELDOUT_SEED_BASE + 1}
    assert not {t.id for t in train} & {t.id for t in heldout}
    assert [t.id for t in MiniWoBEnv(tasks=["click-button", "enter-text"], train_seeds=5).tasks("train")] == [
        t.id for t in train]
    assert train[0].id == "click-button/0" and train[0].kind == "click-button" and train[0].split == "train"
    assert e.browser is None  # listing tasks starts no browser


def test_environment_ids_and_options():
    env = make_env("miniwob/click-button-v1", train_seeds=2)
    assert env.env_id == "miniwob/click-button-v1" and env.task_names == ("click-button",)
    assert [t.id for t in env.tasks("train")] == ["click-button/0", "click-button/1"]
    assert set(make_env("miniwob/suite-v1").task_names) == set(EXPERT_TASKS)
    with pytest.raises(ValueError, match="suite-v1"):
        make_env("miniwob/click-button-v1", tasks=["enter-text"])
    with pytest.raises(ValueError, match="unknown MiniWoB"):
        MiniWoBEnv(tasks=["no-such-task"])
    with pytest.raises(ValueError, match="at least one"):
        MiniWoBEnv(tasks=[])
    with pytest.raises(ValueError):
        MiniWoBEnv(train_seeds=-1)
    with pytest.raises(TypeError, match="bogus"):
        MiniWoBEnv(bogus=1)


def test_every_registered_task_has_an_expert():
    assert len(EXPERT_TASKS) >= 12
    assert set(EXPERT_TASKS) <= set(EXPERTS)


# -- experts ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EXPERT_TASKS)
def test_expert_solves_every_sampled_seed(env, name):
    for split in ("train", "heldout"):
        for i in range(SEEDS_PER_SPLIT):
            t = task(env, name, split, i)
            env.reset(t)
            ok, actions = run_expert(env)
            assert ok, f"{t.id}: the expert failed with {actions}"
            assert env.browsers_started == 1  # one browser for every page and episode


# -- the page as text ---------------------------------------------------------------------------


def test_observation_lists_elements_with_refs_and_state(env):
    obs = env.reset(task(env, "login-user"))
    lines = obs.splitlines()
    assert lines[0].startswith('Task: Enter the username "')
    assert any(line.endswith('textbox value=""') for line in lines)
    assert any(" button \"Login\"" in line for line in lines)
    user = next(e for e in env.view().elements if e.role == "textbox")
    obs, *_ = env.step(f'type {user.ref} "ann"')
    assert f'[{user.ref}] textbox value="ann" focused' in obs
    obs, *_ = env.step(f'type [{user.ref}] "bob"')  # typing replaces the text; [N] is accepted too
    assert f'[{user.ref}] textbox value="bob" focused' in obs
    assert len(obs) < 400  # a short page stays a short prompt

    obs = env.reset(task(env, "click-checkboxes"))
    box = next(e for e in env.view().elements if e.role == "checkbox")
    assert f'[{box.ref}] checkbox "{box.text}" unchecked' in obs
    obs, *_ = env.step(f"click {box.ref}")
    assert f'[{box.ref}] checkbox "{box.text}" checked' in obs

    obs = env.reset(task(env, "choose-list"))
    menu = next(e for e in env.view().elements if e.role == "select")
    assert "options: " in obs and len(menu.options) >= 3
    obs, *_ = env.step(f'select {menu.ref} "{menu.options[-1].upper()}"')  # case is forgiven for options
    assert f'selected="{menu.options[-1]}"' in obs


# -- invalid actions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "action, reason",
    [
        ("goto http://example.com", "unknown action"),
        ("navigate file:///etc/passwd", "unknown action"),
        ("click", "could not parse"),
        ("click 9999", "no element [9999]"),
        ("press Escape", "unknown key"),
        ('type 4 "x"', "not a text field"),  # [4] is the select
        ('select 4 "Atlantis"', 'no option "Atlantis"'),
        ('select 5 "x"', "not a list"),  # [5] is the Submit button
        ("", "empty"),
    ],
)
def test_invalid_actions_are_reported_not_raised(env, action, reason):
    env.reset(task(env, "choose-list"))
    assert [e.role for e in env.view().elements] == ["select", "button"]
    obs, reward, terminated, truncated, info = env.step(action)
    assert info == {"invalid": True} and not terminated and reward == 0.0
    assert obs.startswith("Invalid action: ") and reason in obs
    assert env.invalid_actions == 1
    ok, _ = run_expert(env)  # the page is untouched: the episode goes on and can still be won
    assert ok


def test_wrong_answer_ends_the_episode_as_a_failure(env):
    env.reset(task(env, "click-button"))
    target = env.view().fields["target"]
    wrong = next(f"click {e.ref}" for e in env.view().elements if e.role == "button" and e.text != target)
    obs, reward, terminated, _, info = env.step(wrong)
    assert terminated and reward == -1.0 and info["success"] is False
    assert obs.startswith("The episode is over: failure")
    obs, _, _, _, info = env.step("click 4")
    assert info.get("invalid") and "over" in obs


def test_time_limit_is_lifted_unless_asked_for():
    with MiniWoBEnv(tasks=["click-test"], time_limit_s=0.5) as limited:
        limited.reset(limited.tasks("train")[0])
        time.sleep(1.0)
        _, reward, terminated, _, info = limited.step(limited.expert_action().action)
        assert terminated and not info["success"] and info["reason"] == "timed out"
        limited.time_limit_s = None  # the default: no wall-clock limit (a CPU model may take longer than 10 s)
        limited.reset(limited.tasks("train")[0])
        time.sleep(1.0)
        _, reward, terminated, _, info = limited.step(limited.expert_action().action)
        assert terminated and info["success"]


# -- the browser's lifecycle ------------------------------------------------------------------------


class KillsItsBrowser(MiniWoBEnv):
    """A real MiniWoB env whose Chromium is SIGKILLed just before the second step of one episode."""

    victim = "login-user/1"
    killed: list[int] = []

    def step(self, action):
        if self.task.id == self.victim and self.steps_taken == 1:
            pid = self.browser.chrome_pid
            os.kill(pid, signal.SIGKILL)
            KillsItsBrowser.killed.append(pid)
        return super().step(action)


def test_killed_browser_errors_its_episode_and_is_replaced_while_the_others_finish(our_chromium):
    made: list[KillsItsBrowser] = []

    def factory():
        made.append(KillsItsBrowser(tasks=["login-user"], train_seeds=6))
        return made[-1]

    before = set(our_chromium())  # the module's shared env may have a browser open
    tasks = MiniWoBEnv(tasks=["login-user"], train_seeds=6).tasks("train")
    episodes = plan_episodes(tasks, None, shuffle=False)  # login-user/1 runs in the second slot
    result = run_rollouts(factory, ExpertPolicy(), episodes, settings=RolloutSettings(concurrency=2), progress=False)
    by_task = {t.task_id: t for t in result.trajectories}
    assert len(by_task) == 6
    victim = by_task[KillsItsBrowser.victim]
    assert not victim.success and "BrowserError" in victim.error and len(victim.steps) == 1
    others = [t for t in result.trajectories if t.task_id != KillsItsBrowser.victim]
    assert all(t.success and t.error is None for t in others), [(t.task_id, t.error) for t in others]
    assert sorted(e.browsers_started for e in made) == [1, 2]  # the victim's env started a new browser
    assert KillsItsBrowser.killed and all(e.browser is None for e in made)  # run_rollouts closed them
    assert set(our_chromium()) <= before


def test_close_stops_every_process_of_the_browser():
    with MiniWoBEnv(tasks=["click-test"]) as e:
        e.reset(e.tasks("train")[0])
        browser = e.browser
        pids = browser.processes()
        assert len(pids) >= 3 and browser.chrome_pid in pids  # chromedriver, Chromium, its helpers
        e.close()
        e.close()  # twice is fine
    assert processes_matching(browser.workdir) == []
    assert not os.path.exists(browser.workdir)


CHILD = textwrap.dedent("""
    import os, sys, time
    from agentclone_miniwob.env import MiniWoBEnv
    env = MiniWoBEnv(tasks=["click-test"])
    env.reset(env.tasks("train")[0])
    print(env.browser.workdir, flush=True)
    if sys.argv[1] == "hang":
        time.sleep(600)
""")


def _child(mode: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, mode], stdout=subprocess.PIPE, text=True)
    workdir = proc.stdout.readline().strip()
    assert workdir.startswith("/") and MARKER in workdir
    return proc, workdir


def test_a_process_that_exits_without_closing_leaves_no_browser():
    proc, workdir = _child("exit")  # never calls env.close(): the atexit hook must
    assert proc.wait(timeout=60) == 0
    assert processes_matching(workdir) == []


def test_browsers_of_a_killed_process_are_reaped():
    proc, workdir = _child("hang")
    assert processes_matching(workdir)
    proc.kill()  # SIGKILL: no atexit; its browser is orphaned
    proc.wait(timeout=30)
    assert processes_matching(workdir)
    killed = reap_orphans()  # what the next browser start does
    assert killed
    for _ in range(50):
        if not processes_matching(workdir):
            break
        time.sleep(0.1)
    assert processes_matching(workdir) == []
    assert not os.path.exists(workdir)


# -- the network --------------------------------------------------------------------------------------


class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):
        _Recorder.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"<html><body>reached</body></html>")

    def log_message(self, *args):
        pass


_PROBE_JS = """
var done = arguments[arguments.length - 1];
var url = arguments[0];
if (url.startsWith("ws")) {
  var ws = new WebSocket(url);
  ws.onopen = () => done("reached");
  ws.onerror = () => done("blocked");
} else {
  fetch(url, {mode: "no-cors"}).then(() => done("reached")).catch(() => done("blocked"));
}
"""


def test_the_browser_reaches_no_address_but_the_task_pages(env):
    """A web server on this machine is unreachable from the task page, by IP and by name, over HTTP and
    WebSocket, and by navigation: the browser resolves no address at all, so no other address, local or
    not, can be reached (only local ones are probed, so the test itself sends nothing off the machine)."""
    from selenium.common.exceptions import WebDriverException

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # the server answers a client outside the browser
        import urllib.request

        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/direct", timeout=5).status == 200
        env.reset(task(env, "click-test"))
        driver = env.browser.driver
        for url in (f"http://127.0.0.1:{port}/ip", f"http://localhost:{port}/name", f"http://[::1]:{port}/v6",
                    f"ws://127.0.0.1:{port}/ws"):
            assert driver.execute_async_script(_PROBE_JS, url) == "blocked", url
        with pytest.raises(WebDriverException, match="ERR_NAME_NOT_RESOLVED"):
            driver.get(f"http://127.0.0.1:{port}/navigate")
        assert _Recorder.hits == ["/direct"]
        # the page left its task: the env says so (an errored episode), and the next reset recovers
        with pytest.raises(Exception, match="browser"):
            env.step(env.expert_action().action)
        env.reset(task(env, "click-test"))
        assert run_expert(env)[0]
    finally:
        server.shutdown()


# -- the command line -------------------------------------------------------------------------------


def test_cli_collects_expert_demonstrations_and_leaves_no_browser(tmp_path):
    from agentclone.data import read_trajectories

    out = tmp_path / "demos.jsonl"
    cmd = [sys.executable, "-m", "agentclone.cli", "collect", "--env", "miniwob/enter-text-v1", "--policy", "expert",
           "-n", "3", "--concurrency", "1", "--output", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, log
    trajs = read_trajectories(out)
    assert len(trajs) == 3 and all(t.success and t.env_id == "miniwob/enter-text-v1" for t in trajs)
    first = trajs[0].steps[0]
    assert first.observation.startswith('Task: Enter "') and first.action.startswith("type ") and first.thought
    assert trajs[0].steps[-1].action.startswith("click ")
    assert processes_matching(f"{MARKER}-{proc.pid}-") == []
