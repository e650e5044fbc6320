"""One headless Chromium per environment, driven by chromedriver, that can reach nothing but local files.

Every browser gets its own work directory ``/tmp/agentclone-miniwob-<python pid>-XXXX`` holding
its profile and chromedriver's log, so every process it starts (chromedriver, Chromium and
Chromium's helpers) carries that marker in its command line. That is how this module finds,
kills and checks for its processes, and never touches anyone else's Chromium:

* a process-wide registry closes every browser still open when Python exits (atexit);
* ``close()`` quits the driver, then kills whatever of its processes is left;
* the first browser of a process kills the leftovers of processes that died without cleaning up
  (SIGKILL, a crash): their marker names a pid that no longer runs.

Network: ``--host-resolver-rules=MAP * ~NOTFOUND`` makes every host name *and* IP literal fail to
resolve (measured: fetch and navigation to 127.0.0.1, localhost, [::1] and any name fail), so
the task pages, loaded from ``file://``, are all the browser can reach; WebRTC may not send UDP.
chromedriver talks to Chromium over its DevTools pipe, which these rules do not touch.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

MARKER = "agentclone-miniwob"
DEFAULT_CHROME_BINARY = "/usr/lib/chromium/chromium"  # Debian's `chromium` (/usr/bin/chromium is a shell wrapper)
DEFAULT_CHROMEDRIVER = "/usr/bin/chromedriver"  # Debian's `chromium-driver`
INSTALL_HINT = "install Debian's packages: apt-get install -y chromium chromium-driver"

# Chromium as root needs --no-sandbox; without the background-networking flags it keeps trying
# (and failing) to reach Google's services on this closed network.
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-dev-shm-usage",
    "--no-zygote",
    "--renderer-process-limit=1",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
    "--window-size=500,320",  # MiniWoB's window; the task area is its top-left 160x210
)


class BrowserError(RuntimeError):
    """The browser could not start, or died, or left the task page. Not the agent's fault."""


def chrome_paths() -> tuple[str, str]:
    """(Chromium binary, chromedriver) from MINIWOB_CHROME_BINARY / MINIWOB_CHROMEDRIVER or Debian's paths."""
    chrome = os.environ.get("MINIWOB_CHROME_BINARY") or DEFAULT_CHROME_BINARY
    driver = os.environ.get("MINIWOB_CHROMEDRIVER") or DEFAULT_CHROMEDRIVER
    missing = [p for p in (chrome, driver) if not os.access(p, os.X_OK)]
    if missing:
        raise BrowserError(
            f"no Chromium to run MiniWoB++ in ({', '.join(missing)} not found); {INSTALL_HINT}, "
            "or set MINIWOB_CHROME_BINARY and MINIWOB_CHROMEDRIVER"
        )
    return chrome, driver


# -- processes, found by their command line -----------------------------------------------------


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def processes_matching(text: str) -> list[int]:
    """Pids of running processes whose command line contains ``text`` (like ``pgrep -f``)."""
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me and text in _cmdline(int(entry)):
            pids.append(int(entry))
    return pids


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def reap_orphans() -> list[int]:
    """Kill browser processes left by agentclone-miniwob processes that no longer run; return their pids."""
    tmp = tempfile.gettempdir()
    orphans = []
    prefix = f"{tmp}/{MARKER}-"
    for pid in processes_matching(prefix):
        rest = _cmdline(pid).split(prefix, 1)[1]
        owner = rest.split("-", 1)[0]
        if owner.isdigit() and int(owner) != os.getpid() and not _pid_alive(int(owner)):
            orphans.append(pid)
    _kill(orphans)
    for stale in Path(tmp).glob(f"{MARKER}-*"):
        owner = stale.name[len(MARKER) + 1 :].split("-", 1)[0]
        if owner.isdigit() and not _pid_alive(int(owner)):
            shutil.rmtree(stale, ignore_errors=True)
    return orphans


# -- the registry -------------------------------------------------------------------------------

_OPEN: dict[int, "Browser"] = {}
_LOCK = threading.Lock()
_REAPED = False


def open_browsers() -> list["Browser"]:
    with _LOCK:
        return list(_OPEN.values())


def close_all() -> None:
    """Close every browser this process still has open (runs at exit)."""
    for browser in open_browsers():
        browser.close()


atexit.register(close_all)


class Browser:
    """A headless Chromium with chromedriver. ``driver`` is a selenium ``webdriver.Chrome``."""

    def __init__(self, page_timeout_s: float = 20.0, script_timeout_s: float = 10.0) -> None:
        global _REAPED
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service

        chrome, chromedriver = chrome_paths()
        with _LOCK:
            if not _REAPED:
                _REAPED = True
                reap_orphans()
        self.workdir = tempfile.mkdtemp(prefix=f"{MARKER}-{os.getpid()}-")
        self.closed = False
        self.driver = None
        options = webdriver.ChromeOptions()
        options.binary_location = chrome
        for flag in CHROME_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self.workdir}/profile")
        # The log path puts the marker into chromedriver's command line too. Its own session,
        # so a Ctrl-C in the terminal reaches Python (which closes the browser), not the browser.
        service = Service(
            chromedriver,
            service_args=[f"--log-path={self.workdir}/chromedriver.log"],
            popen_kw={"start_new_session": True},
        )
        self.service = service
        with _LOCK:
            _OPEN[id(self)] = self
        t0 = time.perf_counter()
        try:
            self.driver = webdriver.Chrome(service=service, options=options)
            self.driver.set_page_load_timeout(page_timeout_s)
            self.driver.set_script_timeout(script_timeout_s)
            # A headless page never has the window's focus, so newer Chromium (150) sets
            # document.activeElement on element.focus() but fires no 'focus' event, and tasks
            # that reward focusing a field (focus-text) could not be solved. Emulate a focused page.
            self.driver.execute_cdp_cmd("Emulation.setFocusEmulationEnabled", {"enabled": True})
        except WebDriverException as exc:
            self.close()
            raise BrowserError(f"Chromium did not start: {exc.msg or exc}") from None
        except BaseException:
            self.close()
            raise
        self.start_s = time.perf_counter() - t0

    def processes(self) -> list[int]:
        """Pids of every process of this browser (chromedriver, Chromium and its helpers)."""
        return processes_matching(self.workdir)

    @property
    def chrome_pid(self) -> int | None:
        """The main Chromium process (the one chromedriver started)."""
        profile = f"--user-data-dir={self.workdir}/profile"
        for pid in self.processes():
            line = _cmdline(pid)
            if profile in line and "--type=" not in line:
                return pid
        return None

    def close(self) -> None:
        """Quit the browser; kill whatever of it survives. Safe to call twice, and on a dead browser."""
        if self.closed:
            return
        self.closed = True
        try:
            if self.driver is not None:
                self.driver.quit()
        except Exception:
            pass  # a dead browser cannot be asked to quit; its processes are killed below
        try:
            self.service.stop()
        except Exception:
            pass
        for _ in range(20):
            left = self.processes()
            if not left:
                break
            _kill(left)
            time.sleep(0.05)
        shutil.rmtree(self.workdir, ignore_errors=True)
        with _LOCK:
            _OPEN.pop(id(self), None)
