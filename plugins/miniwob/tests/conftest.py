"""MiniWoB++ tests run real Chromium; they are skipped (with the install line) where there is none.

Where Chromium must be there (``make test``, ``make test-miniwob``, CI), ``AGENTCLONE_REQUIRE_CHROMIUM=1``
turns the skip into a failure, so a broken Chromium install cannot pass as green.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from agentclone_miniwob.browser import MARKER, BrowserError, chrome_paths


def ours() -> list[str]:
    """`pgrep -af chrom` lines (Chromium, its helpers, chromedriver) started by this Python process.

    Filtered by the marker this process puts in each browser's command line: the machine is
    shared, and other people's Chromium is none of these tests' business.
    """
    out = subprocess.run(["pgrep", "-af", "chrom"], capture_output=True, text=True).stdout
    mine = f"{MARKER}-{os.getpid()}-"
    return [line for line in out.splitlines() if mine in line]


def pytest_collection_modifyitems(config, items):
    try:
        chrome_paths()
    except BrowserError as exc:
        if os.environ.get("AGENTCLONE_REQUIRE_CHROMIUM") == "1":
            raise pytest.UsageError(f"AGENTCLONE_REQUIRE_CHROMIUM=1 but the MiniWoB++ tests cannot run: {exc}")
        skip = pytest.mark.skip(reason=str(exc))
        for item in items:
            if "plugins/miniwob/" in str(item.fspath).replace(os.sep, "/"):
                item.add_marker(skip)


@pytest.fixture
def our_chromium():
    """The function listing this process's Chromium processes (see ``ours``)."""
    return ours


@pytest.fixture(scope="session", autouse=True)
def no_chromium_survives():
    """After the whole session, no Chromium or chromedriver started by these tests may still run."""
    yield
    left = ours()
    assert not left, "Chromium processes survived the test session:\n" + "\n".join(left)
