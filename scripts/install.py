"""Install packages into this interpreter's environment with uv when it is there, else with pip.

    python scripts/install.py [pip install arguments...]

`make install` calls it with the interpreter of `.venv`. uv (PyPI `uv`, installed into the venv first)
resolves and installs the same packages as pip about 3x faster (docs/benchmarks.md, "Install"); it
does not read pip's configuration, so the index, find-links, constraint and certificate settings
that pip would use (`pip config list`: its files and PIP_* variables) are handed to it, and it
considers every index the way pip does (`--index-strategy unsafe-best-match`). Where uv is missing
or fails, pip does the install, so the result never depends on uv. AGENTCLONE_INSTALLER=pip forces pip.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

#: pip option -> uv pip option (the value lists of pip are space separated)
_OPTIONS = {
    "index-url": "--index-url",
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "--constraint",
    "trusted-host": "--allow-insecure-host",
}


def pip_settings() -> dict[str, str]:
    """pip's effective settings for `install`, from `pip config list` (files, then PIP_* variables)."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    ranked: dict[str, tuple[int, str]] = {}
    # later sections win: global < install < environment variables (pip's own order)
    rank = {"global": 0, "install": 1, ":env:": 2}
    for line in out.stdout.splitlines():
        key, sep, value = line.partition("=")
        section, _, name = key.partition(".")
        if not sep or section not in rank:
            continue
        value = value.strip().strip("'\"")
        if name not in ranked or rank[section] >= ranked[name][0]:
            ranked[name] = (rank[section], value)
    return {name: value for name, (_, value) in ranked.items()}


def uv_command(uv: str, args: list[str], settings: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The `uv pip install` command line and environment equivalent to `pip install ARGS` here."""
    cmd = [uv, "pip", "install", "--python", sys.executable, "--index-strategy", "unsafe-best-match"]
    for name, option in _OPTIONS.items():
        for value in settings.get(name, "").split():
            cmd += [option, value]
    if settings.get("no-index", "").lower() in {"1", "true", "yes", "on"}:
        cmd.append("--no-index")
    env = dict(os.environ)
    if settings.get("cert"):
        env.setdefault("SSL_CERT_FILE", settings["cert"])
    return cmd + args, env


def main(args: list[str]) -> int:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent))
    if uv and os.environ.get("AGENTCLONE_INSTALLER", "uv") != "pip":
        cmd, env = uv_command(uv, args, pip_settings())
        if subprocess.run(cmd, env=env).returncode == 0:
            return 0
        print(f"install.py: uv failed ({shlex.join(cmd[:3])} ...); installing with pip instead", file=sys.stderr)
    return subprocess.run([sys.executable, "-m", "pip", "install", *args]).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
