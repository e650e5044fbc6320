"""The run viewer with many episodes: how long the page takes to write, and to first render in a real
headless Chromium.

    python bench/viewer_bench.py --episodes 10000 --json-out runs/bench/viewer.json

Makes a plain run folder of synthetic episodes (half base, half adapter, on the same episode ids;
3 to 8 steps of TextCraft-sized observations), writes its report (``report.json``, ``.md``, ``.png``
and ``report.html``, the page), then loads the page in headless Chromium (Debian's ``chromium`` and
``chromium-driver``) ``--repeats`` times and reports the median of:

* first render: navigation start to the end of the viewer's first render (the summary view),
  from the page's own ``performance`` mark;
* tasks view: clicking "Tasks" to its first page of 100 rows built;
* first episode: opening an episode, which parses the steps block the first render skipped;
* next page: the task table's next page.

The last three are the click handler's script time (the DOM built), measured with ``performance.now()``
inside the page; layout and paint come after and are not in them.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import table, write_json  # noqa: E402

CHROME = os.environ.get("MINIWOB_CHROME_BINARY") or "/usr/lib/chromium/chromium"
CHROMEDRIVER = os.environ.get("MINIWOB_CHROMEDRIVER") or "/usr/bin/chromedriver"
ITEMS = ["oak log", "oak planks", "stick", "stone", "iron ingot", "redstone", "quartz", "stone slab"]


def synthetic_episodes(n: int, seed: int = 0):
    from agentclone.data import ExpertLabel, Step, Trajectory

    rng = random.Random(seed)
    out = {"base": [], "adapter": []}
    for i in range(n):
        policy = "base" if i % 2 == 0 else "adapter"
        task = i // 2
        goal = rng.choice(ITEMS)
        recipes = "\n".join(f"craft {rng.randint(1, 4)} {rng.choice(ITEMS)} using {rng.randint(1, 3)} {rng.choice(ITEMS)}, "
                            f"{rng.randint(1, 3)} {rng.choice(ITEMS)}" for _ in range(8))
        steps = []
        for k in range(rng.randint(3, 8)):
            obs = f"Crafting commands:\n{recipes}\n\nGoal: craft {goal}." if k == 0 else f"Got {rng.randint(1, 4)} {rng.choice(ITEMS)}."
            steps.append(Step(observation=obs, thought=f"I need {rng.choice(ITEMS)} to craft {goal}.",
                              action=f"get {rng.randint(1, 4)} {rng.choice(ITEMS)}", invalid=rng.random() < 0.05,
                              expert=ExpertLabel(action=f"get 1 {rng.choice(ITEMS)}")))
        success = rng.random() < (0.3 if policy == "base" else 0.6)
        out[policy].append(Trajectory(
            id=f"textcraft/craft-v1:task{task}#0", env_id="textcraft/craft-v1", task_id=f"task{task}", split="heldout",
            task_kind=f"depth-{1 + task % 3}", policy="hf", instructions="Craft the goal item.", steps=steps,
            success=success, error="timeout" if rng.random() < 0.01 else None, **{"return": float(success)}))
    return out


def measure(driver, page: Path) -> dict:
    def until(script: str, timeout: float = 60.0) -> None:
        end = time.time() + timeout
        while not driver.execute_script(script):
            if time.time() > end:
                raise TimeoutError(script)
            time.sleep(0.005)

    t0 = time.perf_counter()
    driver.get(page.resolve().as_uri())  # returns after the load event; the viewer renders before it
    until("return document.body && document.body.getAttribute('data-rendered') === 'summary'")
    get_s = time.perf_counter() - t0
    first = driver.execute_script("return performance.getEntriesByName('viewer-rendered')[0].startTime")
    dom = driver.execute_script("var n = performance.getEntriesByType('navigation')[0]; return n.domContentLoadedEventEnd")
    timed = ("var t0 = performance.now(); {action}; return performance.now() - t0;")
    tasks = driver.execute_script(timed.format(action="document.querySelector('nav button[data-view=tasks]').click()"))
    rows = driver.execute_script("return document.querySelectorAll('#tasks tr[data-id]').length")
    episode = driver.execute_script(timed.format(action="document.querySelector('#tasks tr[data-id]').click()"))
    driver.execute_script("__viewer.go('tasks')")
    next_page = driver.execute_script(timed.format(action="document.querySelectorAll('.pager button')[1].click()"))
    return {"first_render_ms": first, "dom_content_loaded_ms": dom, "driver_get_s": get_s, "tasks_view_ms": tasks,
            "rows_drawn": rows, "first_episode_ms": episode, "next_page_ms": next_page}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None, help="keep the run folder here")
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()

    from agentclone.data import write_trajectories
    from agentclone.evaluation import write_report
    from agentclone.viewer import write_page

    work = Path(tempfile.mkdtemp(prefix="agentclone-viewer-bench-"))
    run = args.keep or work / "run"
    t0 = time.perf_counter()
    results = synthetic_episodes(args.episodes)
    for name, trajs in results.items():
        write_trajectories(run / "eval" / f"{name}.jsonl", trajs)
    make_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    write_report(results, run, title="viewer bench")  # report.json/md/png and report.html
    report_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    page = write_page(run, work / "page.html")  # the same page from the files, as `agentclone view -o` does
    view_s = time.perf_counter() - t0
    size_mb = page.stat().st_size / 1e6
    print(f"{args.episodes} episodes: made in {make_s:.1f}s; write_report (with report.html) {report_s:.1f}s; "
          f"`agentclone view -o` {view_s:.1f}s; page {size_mb:.1f} MB")

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROME
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
                 "--disable-background-networking", "--disable-dev-shm-usage", "--host-resolver-rules=MAP * ~NOTFOUND",
                 "--window-size=1200,800", f"--user-data-dir={work}/profile"):
        options.add_argument(flag)
    service = Service(CHROMEDRIVER, popen_kw={"start_new_session": True})
    driver = webdriver.Chrome(service=service, options=options)
    try:
        runs = [measure(driver, page) for _ in range(args.repeats)]
    finally:
        driver.quit()
        service.stop()
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    keys = list(runs[0])
    median = {k: statistics.median(r[k] for r in runs) for k in keys}
    print(table(f"viewer, {args.episodes} episodes, median of {args.repeats} loads (ms unless named _s)",
                [("measure", "name"), ("median", "value")] + [(f"run {i + 1}", f"r{i}") for i in range(len(runs))],
                [{"name": k, "value": float(median[k]), **{f"r{i}": float(r[k]) for i, r in enumerate(runs)}}
                 for k in keys]))
    write_json(args.json_out, {"episodes": args.episodes, "page_mb": size_mb, "write_report_s": report_s,
                               "view_s": view_s, "median": median, "runs": runs})


if __name__ == "__main__":
    main()
