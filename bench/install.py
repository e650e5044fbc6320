"""`make install` from nothing with pip against uv: seconds and the packages each installs.

    python bench/install.py [--repeats 1] [--json-out runs/bench/install.json]

Each run creates a new venv in a temporary folder and runs `make install VENV=<it>`, once with
AGENTCLONE_INSTALLER=pip (the baseline: pip alone, as before scripts/install.py) and once with uv
(the default), alternating which goes first; uv's cache is a new empty folder every time, so neither
installer reuses the other's downloads. Both must end with the same packages at the same versions
(compared with `pip list`), or the run says so. The ratio column is pip's seconds over uv's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, machine_info, ratio, table, write_json  # noqa: E402


def install(installer: str, root: Path) -> tuple[float, dict[str, str]]:
    venv = root / f"venv-{installer}"
    env = dict(os.environ, AGENTCLONE_INSTALLER=installer, UV_CACHE_DIR=str(root / f"uv-cache-{installer}"))
    start = time.perf_counter()
    subprocess.run(["make", "-s", "install", f"VENV={venv}"], cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    listing = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format", "freeze"],
                             capture_output=True, text=True, check=True).stdout
    packages = dict(line.split("==", 1) for line in listing.splitlines() if "==" in line)
    packages.pop("uv", None)  # make install installs uv into the venv either way
    return seconds, packages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json-out")
    args = parser.parse_args(argv)
    rows = []
    for repeat in range(args.repeats):
        order = ["pip", "uv"] if repeat % 2 == 0 else ["uv", "pip"]
        with tempfile.TemporaryDirectory(prefix="agentclone-install-") as tmp:
            results = {name: install(name, Path(tmp)) for name in order}
        (pip_s, pip_pkgs), (uv_s, uv_pkgs) = results["pip"], results["uv"]
        differ = sorted(k for k in pip_pkgs.keys() | uv_pkgs.keys() if pip_pkgs.get(k) != uv_pkgs.get(k))
        rows.append({"repeat": repeat + 1, "first": order[0], "pip_s": pip_s, "uv_s": uv_s,
                     "ratio": ratio(pip_s, uv_s), "packages": len(uv_pkgs),
                     "same_packages": not differ, "differ": ", ".join(differ) or "-"})
        print(table("make install from nothing (seconds; ratio = pip / uv)",
                    [("repeat", "repeat"), ("first", "first"), ("pip s", "pip_s"), ("uv s", "uv_s"),
                     ("ratio", "ratio"), ("packages", "packages"), ("same versions", "same_packages"),
                     ("differ", "differ")], rows), flush=True)
    write_json(args.json_out, {"machine": machine_info("cpu"), "rows": rows})
    return 0 if all(r["same_packages"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
