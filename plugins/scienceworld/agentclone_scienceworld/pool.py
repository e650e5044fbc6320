"""ScienceWorld simulators (one JVM each) pooled across the episodes and environments of a process.

Starting the JVM takes seconds, loading a task variation about a second, a step some milliseconds. So:

* a ``Simulator`` is one ``scienceworld.ScienceWorldEnv`` (its JVM and py4j gateway); every call into it
  runs in a daemon thread with a deadline: a call past it kills the JVM (SIGKILL, which also ends a
  stopped or hung one) and raises ``ScienceWorldTimeout`` instead of hanging;
* ``JvmPool`` hands out simulators: an idle one when there is one, else a new one (started lazily, on
  the first reset that needs it). An environment keeps its simulator across episodes (each reset
  loads the next task variation into the same JVM) and gives it back on ``close``; the next
  environment made in the process (a replaced one, the adapter's evaluation after the base model's)
  takes it from the pool. ``POOL.close()`` ends every JVM the pool started; it runs at exit too, and
  py4j starts each JVM with ``die_on_exit`` (it exits when this process's end closes its stdin).
"""

from __future__ import annotations

import atexit
import subprocess
import threading
from typing import Any, Callable

#: seconds a JVM may take to start and answer
START_TIMEOUT_S = 120.0


class ScienceWorldTimeout(RuntimeError):
    """A ScienceWorld call took longer than its deadline; its JVM was killed."""


def _with_deadline(fn: Callable[[], Any], timeout_s: float | None) -> tuple[bool, Any, BaseException | None]:
    """Run ``fn`` in a daemon thread: (finished, value, exception)."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=work, daemon=True, name="scienceworld-call")
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        return False, None, None
    return True, box.get("value"), box.get("error")


def _make_science_world():
    from scienceworld import ScienceWorldEnv

    class _QuietScienceWorldEnv(ScienceWorldEnv):
        def __del__(self):  # the wrapper's __del__ shuts the gateway down again; Simulator.close does it once
            pass

    return _QuietScienceWorldEnv("", envStepLimit=10**9)


class Simulator:
    """One ScienceWorld simulator (JVM). ``call(fn)`` runs ``fn(server)`` on its py4j ``PythonInterface``."""

    def __init__(self, start_timeout_s: float = START_TIMEOUT_S) -> None:
        self._closed = False
        self._lock = threading.Lock()
        abandoned = threading.Event()

        def start():
            env = _make_science_world()
            if abandoned.is_set():  # too late: the caller gave up on this JVM
                _close_env(env)
            return env

        finished, env, error = _with_deadline(start, start_timeout_s)
        if not finished:
            abandoned.set()
            raise ScienceWorldTimeout(f"the ScienceWorld JVM did not start within {start_timeout_s:g} s")
        if error is not None:
            raise RuntimeError(f"the ScienceWorld JVM did not start (is Java 17 installed?): "
                               f"{type(error).__name__}: {error}") from error
        self.env = env
        self.process: subprocess.Popen = env._gateway.java_process
        self.pid: int = self.process.pid
        self.loads = 0  # task variations loaded into this JVM

    @property
    def alive(self) -> bool:
        return not self._closed and self.process.poll() is None

    def call(self, fn: Callable[[Any], Any], timeout_s: float | None, what: str) -> Any:
        """``fn(server)`` within ``timeout_s`` seconds; past it the JVM is killed and ScienceWorldTimeout raised."""
        if not self.alive:
            raise RuntimeError(f"the ScienceWorld JVM (pid {self.pid}) is not running")
        with self._lock:  # one call at a time: a py4j call from a second thread would open a second connection
            finished, value, error = _with_deadline(lambda: fn(self.env.server), timeout_s)
        if not finished:
            self.kill()
            raise ScienceWorldTimeout(
                f"ScienceWorld gave no answer to {what} within {timeout_s:g} s; its JVM (pid {self.pid}) was killed")
        if error is not None:
            if not self.alive:
                raise RuntimeError(f"the ScienceWorld JVM (pid {self.pid}) died during {what}: "
                                   f"{type(error).__name__}: {error}") from error
            raise error
        return value

    def kill(self) -> None:
        """End the JVM at once (SIGKILL: a hung or stopped JVM too)."""
        self._closed = True
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        _with_deadline(self.env._gateway.shutdown, 5)

    def close(self, timeout_s: float = 10.0) -> None:
        """End the JVM cleanly (the gateway's shutdown); kill it if it does not exit within ``timeout_s``."""
        if self._closed:
            return
        self._closed = True
        _with_deadline(lambda: _close_env(self.env), timeout_s)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def _close_env(env) -> None:
    """The wrapper's close, made safe against a JVM already gone."""
    try:
        env.close()
    except Exception:  # noqa: BLE001 - the JVM is gone already; nothing to shut
        pass
    process = env._gateway.java_process
    if process.stdin is not None:
        try:
            process.stdin.close()  # py4j's die_on_exit: the JVM exits when its stdin closes
        except Exception:  # noqa: BLE001
            pass


class JvmPool:
    """Simulators shared by the ScienceWorld environments of a process (see the module docstring)."""

    def __init__(self, max_idle: int = 16) -> None:
        self.max_idle = max_idle
        self._lock = threading.Lock()
        self._idle: list[Simulator] = []
        self._live: list[Simulator] = []  # every simulator this pool started that is not closed yet
        self.started = 0
        self.reused = 0

    def acquire(self, start_timeout_s: float = START_TIMEOUT_S) -> Simulator:
        with self._lock:
            while self._idle:
                sim = self._idle.pop()
                if sim.alive:
                    self.reused += 1
                    return sim
                self._forget(sim)
        sim = Simulator(start_timeout_s)
        with self._lock:
            self._live.append(sim)
            self.started += 1
        return sim

    def release(self, sim: Simulator) -> None:
        """Take ``sim`` back for the next environment (or close it: dead, or more idle ones than ``max_idle``)."""
        with self._lock:
            if sim.alive and len(self._idle) < self.max_idle and sim not in self._idle:
                self._idle.append(sim)
                return
            self._forget(sim)
        sim.close()

    def discard(self, sim: Simulator) -> None:
        """Kill ``sim`` (busy or hung) and forget it."""
        with self._lock:
            self._forget(sim)
            if sim in self._idle:
                self._idle.remove(sim)
        sim.kill()

    def _forget(self, sim: Simulator) -> None:
        if sim in self._live:
            self._live.remove(sim)

    def pids(self) -> list[int]:
        """Process ids of the JVMs this pool started that are still running."""
        with self._lock:
            return [s.pid for s in self._live if s.alive]

    @property
    def idle(self) -> int:
        return len(self._idle)

    def close(self) -> None:
        """End every JVM this pool started (idle or still held by an environment)."""
        with self._lock:
            sims = list(self._live)
            self._live.clear()
            self._idle.clear()
        for sim in sims:
            sim.close()


#: the process-wide pool every ScienceWorld environment draws from
POOL = JvmPool()
atexit.register(POOL.close)
