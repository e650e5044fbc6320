"""The run viewer (``agentclone view``, ``report.html``): the page's data, its safety, and the page itself in
a real headless Chromium.

The browser tests skip (with the install line) where Debian's Chromium and chromedriver are missing;
``AGENTCLONE_REQUIRE_CHROMIUM=1`` (``make test``) turns the skip into a failure, as for MiniWoB++.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from agentclone.curate import CurateOptions, curate_file
from agentclone.data import ExpertLabel, Step, Trajectory, write_trajectories
from agentclone.evaluation import write_report
from agentclone.viewer import collect_run, embed_json, render_html, write_page

REPO = Path(__file__).resolve().parents[1]
CHROME = os.environ.get("MINIWOB_CHROME_BINARY") or "/usr/lib/chromium/chromium"
CHROMEDRIVER = os.environ.get("MINIWOB_CHROMEDRIVER") or "/usr/bin/chromedriver"
MARKER = "agentclone-viewer-test"
INJECTIONS = ['<script>window.__pwned=1</script>', '<img src=x onerror="window.__pwned=1">',
              '</script><script>window.__pwned=1</script><!--']


# -- a synthetic run folder: what a plain run writes, with known outcomes ----------------------------

def episode(policy: str, i: int, success: bool, invalid: bool = False, error: str | None = None,
            observation: str | None = None) -> Trajectory:
    kind = ["easy", "hard"][i % 2]
    steps = [Step(observation=observation if (observation and n == 0) else f"{policy} sees state {n} of task {i}",
                  thought=f"{policy} thinks {n}", action=f"add {n + 1}", reward=1.0 if success and n == 1 else 0.0,
                  invalid=invalid and n == 0, loss=n != 0,
                  selection={"selector": "progress", "picked": n == 1},
                  expert=ExpertLabel(action="add 1", thought="one more"))
             for n in range(2 if policy == "base" else 3)]
    return Trajectory(id=f"test/counter-v0:t{i}#0", env_id="test/counter-v0", task_id=f"t{i}", split="heldout",
                      task_kind=kind, policy="hf", instructions="Reach the target.", steps=steps, success=success,
                      error=error, **{"return": 1.0 if success else 0.0})


def make_run(folder: Path, n: int = 6, injected: str | None = None) -> Path:
    base = [episode("base", i, success=i % 3 == 0, invalid=i == 1) for i in range(n)]
    adapter = [episode("adapter", i, success=i % 2 == 0, error="boom" if i == 5 else None,
                       observation=injected if i == 2 else None) for i in range(n)]
    write_trajectories(folder / "eval" / "base.jsonl", base)
    write_trajectories(folder / "eval" / "adapter.jsonl", adapter)
    write_report({"base": base, "adapter": adapter}, folder, title="viewer test")
    (folder / "timings.json").write_text(json.dumps({"collect": 1.5, "train": 12.25}))
    log = [{"loss": 2.0 - 0.1 * s, "learning_rate": 1e-3 * (1 - s / 10), "num_tokens": 100.0 * s, "elapsed_s": 0.5 * s,
            "step": s} for s in range(1, 9)]
    (folder / "adapter").mkdir(exist_ok=True)
    (folder / "adapter" / "metrics.json").write_text(json.dumps({"log_history": log + [{"train_loss": 1.5, "step": 8}],
                                                                 "train_tokens_per_s": 200.0}))
    return folder


def add_curate_report(folder: Path, trajs: list[Trajectory] | None = None, **changes) -> dict:
    """``curate.json`` in ``folder`` as the recipe's curate stage writes it: ``agentclone curate``'s report on
    ``trajs`` (test_curate's seven trajectories with known defects) with the failed, duplicate and conflicting
    filters; ``changes`` replace top-level fields of the report."""
    folder.mkdir(parents=True, exist_ok=True)
    write_trajectories(folder / "demos.jsonl", defective() if trajs is None else trajs)
    report = curate_file(folder / "demos.jsonl", folder / "curated.jsonl",
                         CurateOptions(drop_failed=True, drop_duplicates=True, drop_conflicting=True))
    report.update(changes)
    (folder / "curate.json").write_text(json.dumps(report, indent=2))
    return report


# -- without a browser -----------------------------------------------------------------------------

def test_embedded_json_cannot_close_its_script_block():
    text = embed_json({"o": "</script><!-- & \u2028"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"o": "</script><!-- & \u2028"}


def test_page_data_of_a_plain_run(tmp_path):
    run = make_run(tmp_path / "run")
    data = collect_run(run)
    index = data["index"]
    assert index["kind"] == "plain" and index["policies"] == ["base", "adapter"]
    report = json.loads((run / "report.json").read_text())
    for row in index["summary"]:
        assert row["source"] == "report.json"
        assert row["success_rate"] == report[row["policy"]]["success_rate"]
        assert row["success_ci95"] == report[row["policy"]]["success_ci95"]
    assert index["report_png"].startswith("data:image/png;base64,")
    assert index["timings"] == {"collect": 1.5, "train": 12.25}
    (curve,) = index["curves"]
    assert [p[0] for p in curve["points"]] == list(range(1, 9))
    assert curve["points"][1][3] == pytest.approx(200.0)  # 100 tokens in 0.5 s
    assert len(index["episodes"]) == len(data["details"]) == 12
    html = render_html(data)
    assert "http://" not in html.split("<script")[0] and "https://" not in html  # nothing to fetch


def test_page_of_a_file_and_a_missing_path(tmp_path):
    run = make_run(tmp_path / "run")
    index = collect_run(run / "eval" / "adapter.jsonl")["index"]
    assert index["policies"] == ["adapter"] and index["summary"][0]["source"] == "episodes"
    with pytest.raises(FileNotFoundError):
        collect_run(tmp_path / "nothing")


def test_page_data_of_curate_reports(tmp_path):
    run = make_run(tmp_path / "run")
    assert collect_run(run)["index"]["curate"] == []  # no curate.json, no data quality
    report = add_curate_report(run)
    (entry,) = collect_run(run)["index"]["curate"]
    assert entry == {"name": "run", "path": "curate.json", "report": report}
    # the report file on its own: a page of its data quality only
    alone = collect_run(run / "curate.json")["index"]
    assert alone["kind"] == "curate" and alone["policies"] == [] and alone["episodes"] == []
    assert alone["curate"][0]["report"] == report
    # a comparison: each variant's own curate.json (the run's too when it has one)
    (run / "comparison.json").write_text(json.dumps({"recipe": "cmp", "rows": [{"variant": "clean"}]}))
    variant = add_curate_report(run / "variants" / "clean", defective()[:3])
    (run / "variants" / "plain").mkdir()
    (run / "variants" / "plain" / "curate.json").write_text('{"not": "a curate report"}')
    index = collect_run(run)["index"]
    assert index["kind"] == "variants"
    assert [(c["name"], c["path"]) for c in index["curate"]] == [("run", "curate.json"),
                                                                 ("variant clean", "variants/clean/curate.json")]
    assert index["curate"][1]["report"] == variant
    # a variant's folder viewed on its own is a plain run with its curate.json
    assert collect_run(run / "variants" / "clean")["index"]["curate"][0]["report"] == variant


def test_every_report_gets_a_page_and_a_page_failure_never_breaks_the_report(tmp_path, monkeypatch, capsys):
    run = make_run(tmp_path / "run")
    assert (run / "report.html").exists() and (run / "report.md").exists()

    def broken(*args, **kwargs):
        raise RuntimeError("no page today")

    monkeypatch.setattr("agentclone.viewer.render_html", broken)
    (run / "report.html").unlink()
    write_report({"base": [episode("base", 0, True)]}, run, title="again")
    assert (run / "report.md").exists() and not (run / "report.html").exists()
    assert "could not write" in capsys.readouterr().err


def test_view_command_writes_a_page_and_serves_one(tmp_path):
    run = make_run(tmp_path / "run")
    exe = str(Path(sys.executable).with_name("agentclone"))
    out = subprocess.run([exe, "view", str(run), "--output", str(tmp_path / "page.html")], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "page.html").read_text().startswith("<!DOCTYPE html>")
    proc = subprocess.Popen([exe, "view", str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, line + proc.stderr.read() if proc.poll() is not None else line
        url = line.split(" at ")[1].split()[0]
        page = urllib.request.urlopen(url, timeout=30).read().decode()
        assert 'id="ac-index"' in page
    finally:
        proc.send_signal(signal.SIGTERM)  # SIGINT is ignored in a server started from a background job
        proc.wait(timeout=30)
    missing = subprocess.run([exe, "view", str(tmp_path / "nothing"), "-o", str(tmp_path / "x.html")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no such file" in missing.stderr


# -- train.report_to: where the trainer also logs ----------------------------------------------------

def test_report_to_is_checked_and_reaches_the_trainer_config(counter_env_registered):
    import importlib.util

    from agentclone.objectives import make_objective
    from agentclone.recipes import RecipeError, validate_recipe
    from agentclone.training import TrainSettings, build_trl_config

    spec = {"env": {"id": "test/counter-v0"}, "collect": {"policy": "expert"}}
    assert validate_recipe(spec).train.report_to == "none"
    with pytest.raises(RecipeError, match=r"train\.report_to: .*'none' or 'tensorboard'.*'wandb'"):
        validate_recipe({**spec, "train": {"report_to": "wandb"}})
    with pytest.raises(RecipeError, match="set by agentclone's own train settings"):
        validate_recipe({**spec, "train": {"trl": {"report_to": "tensorboard"}}})
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(RecipeError, match="pip install tensorboard"):
            validate_recipe({**spec, "train": {"report_to": "tensorboard"}})
    else:
        config = build_trl_config(make_objective("sft"), TrainSettings(report_to="tensorboard"), "/tmp/unused")
        assert config.report_to == ["tensorboard"]
    assert build_trl_config(make_objective("sft"), TrainSettings(), "/tmp/unused").report_to in ("none", [])


def test_report_to_is_no_input_of_the_train_stage(tmp_path, counter_env_registered):
    """Where the trainer logs does not change the adapter: changing it (or adding the key) retrains nothing."""
    from agentclone.recipes import validate_recipe
    from agentclone.stages import fingerprint, train_stage
    from agentclone.training import TrainSettings

    seen = []

    class Runner:  # records the train stage's inputs instead of running it
        enabled = ("train",)

        def run(self, name, kind, output, inputs, run, complete=None):
            seen.append(inputs)

    recipe = validate_recipe({"env": {"id": "test/counter-v0"}, "collect": {"policy": "expert"}})
    # tensorboard may not be installed here: set the value past validation
    for settings in (TrainSettings(), TrainSettings().model_copy(update={"report_to": "tensorboard"})):
        train_stage(Runner(), "train", recipe, settings, tmp_path / "none.jsonl", tmp_path / "adapter")
    assert fingerprint(seen[0]) == fingerprint(seen[1])
    # the same fingerprint as before the key existed, when the settings were these fields
    before = {k: v for k, v in TrainSettings().model_dump().items() if k != "report_to"}
    assert fingerprint(seen[0]) == fingerprint({**seen[0], "train": before})


# -- in the browser --------------------------------------------------------------------------------

def _missing() -> list[str]:
    return [p for p in (CHROME, CHROMEDRIVER) if not os.access(p, os.X_OK)]


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium of this module's own (its profile folder marks its processes), closed after."""
    missing = _missing()
    if missing:
        msg = (f"no Chromium for the viewer tests ({', '.join(missing)} not found); "
               "apt-get install -y chromium chromium-driver")
        if os.environ.get("AGENTCLONE_REQUIRE_CHROMIUM") == "1":
            pytest.fail("AGENTCLONE_REQUIRE_CHROMIUM=1 but " + msg)
        pytest.skip(msg)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    workdir = tempfile.mkdtemp(prefix=f"{MARKER}-{os.getpid()}-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROME
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--host-resolver-rules=MAP * ~NOTFOUND", "--window-size=1200,800",
                 f"--user-data-dir={workdir}/profile"):
        options.add_argument(flag)
    service = Service(CHROMEDRIVER, service_args=[f"--log-path={workdir}/chromedriver.log"],
                      popen_kw={"start_new_session": True})
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        try:
            driver.quit()
        finally:
            service.stop()
            left = subprocess.run(["pgrep", "-f", workdir], capture_output=True, text=True).stdout.split()
            for pid in left:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            shutil.rmtree(workdir, ignore_errors=True)


def open_page(driver, path: Path) -> None:
    driver.get(path.resolve().as_uri())
    wait_for(driver, "return document.body.getAttribute('data-rendered')")


def wait_for(driver, script: str, timeout: float = 10.0):
    end = time.time() + timeout
    while True:
        value = driver.execute_script(script)
        if value or time.time() > end:
            return value
        time.sleep(0.05)


def click_view(driver, name: str) -> None:
    driver.execute_script(f"document.querySelector('nav button[data-view={name}]').click()")
    assert wait_for(driver, f"return document.body.getAttribute('data-rendered') === '{name}'")


def shown(driver) -> int:
    return int(driver.execute_script("return document.getElementById('count').dataset.shown"))


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("viewer") / "run")
    return run, write_page(run, run / "page.html")


def test_summary_numbers_are_report_json(browser, page):
    run, html = page
    open_page(browser, html)
    report = json.loads((run / "report.json").read_text())
    rows = browser.execute_script("""return Array.from(document.querySelectorAll('#summary tr[data-policy]')).map(
        tr => [tr.dataset.policy, Number(tr.querySelector('.rate').dataset.value),
               Number(tr.querySelector('.ci').dataset.lo), Number(tr.querySelector('.ci').dataset.hi),
               tr.querySelector('.rate').textContent])""")
    assert [r[0] for r in rows] == ["base", "adapter"]
    for name, rate, lo, hi, text in rows:
        assert rate == report[name]["success_rate"] and [lo, hi] == report[name]["success_ci95"]
        assert text == f"{100 * report[name]['success_rate']:.1f}%"
    assert browser.execute_script("return document.getElementById('report-png').naturalWidth") > 0
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0  # fetched nothing


def test_filters_narrow_the_task_table(browser, page):
    open_page(browser, page[1])
    click_view(browser, "tasks")
    assert shown(browser) == 6
    browser.find_element("id", "f-failed").click()
    wait_for(browser, "return document.getElementById('count').dataset.shown !== '6'")
    assert shown(browser) == 5  # base solves tasks 0 and 3, the adapter 0, 2 and 4: some policy failed the other 5
    browser.execute_script("var s = document.getElementById('f-policy'); s.value = '1'; s.dispatchEvent(new Event('change'))")
    wait_for(browser, "return document.getElementById('count').dataset.shown === '3'")
    assert shown(browser) == 3  # the adapter failed tasks 1, 3, 5
    browser.execute_script("var s = document.getElementById('f-kind'); s.value = 'hard'; s.dispatchEvent(new Event('change'))")
    wait_for(browser, "return document.getElementById('count').dataset.shown === '3'")
    assert browser.execute_script("return Array.from(document.querySelectorAll('#tasks tr[data-id]')).map(t => t.dataset.id)") == [
        "test/counter-v0:t1#0", "test/counter-v0:t3#0", "test/counter-v0:t5#0"]
    browser.find_element("id", "f-errored").click()
    wait_for(browser, "return document.getElementById('count').dataset.shown === '1'")
    assert shown(browser) == 1
    browser.execute_script("__viewer.state.failed = false; __viewer.state.errored = false; __viewer.state.kind = ''; "
                           "__viewer.state.policy = ''; __viewer.state.invalid = true; __viewer.render()")
    assert shown(browser) == 1  # only base's episode of task 1 has an invalid action


def test_episode_view_shows_the_steps_of_that_episode_side_by_side(browser, page):
    open_page(browser, page[1])
    click_view(browser, "tasks")
    browser.execute_script("document.querySelector('#tasks tr[data-id=\"test/counter-v0:t4#0\"]').click()")
    assert wait_for(browser, "return document.body.getAttribute('data-rendered') === 'episode'")
    panes = browser.execute_script("""return ['left', 'right'].map(w => {
        const p = document.getElementById('pane-' + w);
        return {policy: p.dataset.policy, episode: p.dataset.episode,
                obs: Array.from(p.querySelectorAll('.step .obs pre')).map(e => e.textContent),
                actions: Array.from(p.querySelectorAll('.step .action pre')).map(e => e.textContent),
                tags: p.querySelector('.step').textContent, selection: p.querySelector('.selection pre').textContent,
                expert: p.querySelector('.expert pre').textContent}; })""")
    left, right = panes
    assert (left["policy"], right["policy"]) == ("base", "adapter")
    assert left["episode"] == right["episode"] == "test/counter-v0:t4#0"  # the same task on both sides
    assert left["obs"] == [f"base sees state {n} of task 4" for n in range(2)]
    assert right["obs"] == [f"adapter sees state {n} of task 4" for n in range(3)]
    assert right["actions"] == ["add 1", "add 2", "add 3"]
    assert "no loss" in left["tags"] and "= expert" in left["tags"]
    assert json.loads(left["selection"]) == {"selector": "progress", "picked": False}
    assert left["expert"].startswith("add 1")


def test_text_from_trajectories_is_never_markup(browser, tmp_path):
    run = make_run(tmp_path / "run", injected="".join(INJECTIONS))
    html = write_page(run, tmp_path / "page.html")
    assert "</script><script>window.__pwned" not in html.read_text()
    open_page(browser, html)
    browser.execute_script("__viewer.openEpisode('test/counter-v0:t2#0')")
    assert wait_for(browser, "return document.body.getAttribute('data-rendered') === 'episode'")
    time.sleep(0.3)  # an injected image's onerror would have fired by now
    assert browser.execute_script("return typeof window.__pwned") == "undefined"
    text = browser.execute_script("return document.getElementById('pane-right').innerText")
    for snippet in INJECTIONS:
        assert snippet in text
    assert browser.execute_script("return document.querySelectorAll('main img, main script').length") == 0


def test_variants_and_rounds_tables_link_to_their_episodes(browser, tmp_path):
    run = make_run(tmp_path / "run")
    (run / "variants" / "all" / "eval").mkdir(parents=True)
    shutil.copy(run / "eval" / "adapter.jsonl", run / "variants" / "all" / "eval" / "adapter.jsonl")
    shutil.move(run / "eval" / "adapter.jsonl", tmp_path / "unused.jsonl")
    (run / "comparison.json").write_text(json.dumps({"recipe": "cmp", "reference": "all", "rows": [
        {"variant": "base", "builder": "(no training)", "episodes": 6, "successes": 2, "success_rate": 1 / 3,
         "success_ci95": [0.1, 0.7]},
        {"variant": "all", "builder": "critical/all", "episodes": 6, "successes": 3, "success_rate": 0.5,
         "success_ci95": [0.2, 0.8], "loss_steps": 4, "steps": 6, "train_loss": 1.25}]}))
    html = write_page(run, tmp_path / "variants.html")
    open_page(browser, html)
    click_view(browser, "table")
    cells = browser.execute_script("return Array.from(document.querySelectorAll('.runtable tr[data-policy]')).map("
                                   "tr => [tr.dataset.policy, tr.children[4].textContent])")
    assert cells == [["base", "-"], ["all", "1.250"]]
    browser.execute_script("document.querySelector('.runtable tr[data-policy=all]').click()")
    assert wait_for(browser, "return document.body.getAttribute('data-rendered') === 'tasks'")
    assert browser.execute_script("return document.getElementById('f-policy').selectedOptions[0].textContent") == "all"


def test_training_curves_are_drawn(browser, page):
    open_page(browser, page[1])
    click_view(browser, "training")
    metrics = browser.execute_script("return Array.from(document.querySelectorAll('#charts svg')).map(s => "
                                     "[s.dataset.metric, s.querySelectorAll('circle').length])")
    assert metrics == [["loss", 8], ["learning rate", 8], ["tokens/s", 8]]


def quality_cells(driver, section: str = "run") -> dict:
    """A data quality section: {row key: [before, after]} of its before / after table, its filters' rows (and
    their order: the browser's driver sorts an object's keys), its options."""
    return driver.execute_script("""const s = document.querySelector('section.curate[data-name="' + arguments[0] + '"]');
        if (!s) return null;
        const rows = {};
        s.querySelectorAll('table.quality tr[data-key]').forEach(tr => {
            rows[tr.dataset.key] = [tr.querySelector('.before').textContent, tr.querySelector('.after').textContent]; });
        const removed = {};
        s.querySelectorAll('table.removed tr[data-reason]').forEach(tr => {
            const cells = removed[tr.dataset.reason] = {};
            tr.querySelectorAll('td[data-field]').forEach(td => { cells[td.dataset.field] = td.textContent; }); });
        const options = {};
        s.querySelectorAll('table.options tr[data-option]').forEach(tr => {
            options[tr.dataset.option] = tr.children[1].textContent; });
        const order = Array.from(s.querySelectorAll('table.removed tr[data-reason]')).map(tr => tr.dataset.reason);
        return {rows: rows, removed: removed, order: order, options: options};""", section)


def test_data_quality_shows_the_curate_report(browser, tmp_path):
    run = make_run(tmp_path / "run")
    report = add_curate_report(run)
    html = write_page(run, tmp_path / "page.html")
    open_page(browser, html)
    line = browser.execute_script("return document.querySelector('.curate-line').textContent")
    assert "7 → 5 trajectories" in line and "31 → 22 steps with loss" in line  # in the summary too
    click_view(browser, "quality")
    q = quality_cells(browser)
    rows = q["rows"]
    # test_curate's seven: d failed (3 steps), b duplicates a (2 steps); with b gone, a and c tie at their first
    # state and e and f at theirs, so those 4 steps lose their loss
    assert rows["episodes"] == ["7", "5"] and rows["steps"] == ["31", "26"]
    assert rows["loss_steps"] == ["31", "22"]
    assert rows["duplicates"] == ["1 (2)", "0 (0)"]
    assert rows["conflicting_steps"] == ["3", "0"]
    assert rows["looping"] == ["1 (1)", "0 (0)"]
    assert rows["length"] == ["1 / 2 / 20", "1 / 2 / 20"]
    assert rows["success_rate"] == [f"{100 * 6 / 7:.1f}%", "100.0%"]
    assert rows["tasks_per_kind.k1"] == ["3", "2"] and rows["tasks_per_kind.k2"] == ["1", "1"]
    assert q["removed"] == {
        "failed": {"trajectories": "1", "steps": "3", "steps_loss_off": "-", "trajectories_touched": "-"},
        "duplicate": {"trajectories": "1", "steps": "2", "steps_loss_off": "-", "trajectories_touched": "-"},
        "conflicting": {"trajectories": "0", "steps": "0", "steps_loss_off": "4", "trajectories_touched": "4"}}
    assert q["order"] == list(report["removed"]) == ["failed", "duplicate", "conflicting"]  # the order they ran in
    assert q["options"]["drop_duplicates"] == "on" and q["options"]["max_steps"] == "off"
    assert q["options"]["drop_looping"] == "off"


def test_no_curate_report_no_data_quality(browser, page):
    open_page(browser, page[1])
    assert browser.execute_script("return document.querySelector('nav button[data-view=quality]')") is None
    assert browser.execute_script("return document.querySelectorAll('.curate-line, section.curate').length") == 0
    assert "Data quality" not in browser.execute_script("return document.body.innerText")


def test_a_curate_report_file_alone_and_one_per_variant(browser, tmp_path):
    run = make_run(tmp_path / "run")
    add_curate_report(run)
    html = write_page(run / "curate.json", tmp_path / "alone.html")
    open_page(browser, html)
    assert browser.execute_script("return document.body.getAttribute('data-rendered')") == "quality"
    assert browser.execute_script("return Array.from(document.querySelectorAll('nav button')).map(b => b.dataset.view)") == [
        "quality"]
    assert quality_cells(browser, "report")["rows"]["episodes"] == ["7", "5"]
    # a comparison: one section per variant that curated, one without a filter
    shutil.move(run / "curate.json", tmp_path / "unused.json")
    (run / "comparison.json").write_text(json.dumps({"recipe": "cmp", "rows": [{"variant": "base"}, {"variant": "clean"}]}))
    add_curate_report(run / "variants" / "clean")
    raw = run / "variants" / "raw"
    raw.mkdir(parents=True)
    write_trajectories(raw / "demos.jsonl", defective())
    (raw / "curate.json").write_text(json.dumps(curate_file(raw / "demos.jsonl", raw / "curated.jsonl")))
    open_page(browser, write_page(run, tmp_path / "variants.html"))
    click_view(browser, "quality")
    assert browser.execute_script("return Array.from(document.querySelectorAll('section.curate')).map(s => s.dataset.name)") == [
        "variant clean", "variant raw"]
    assert quality_cells(browser, "variant clean")["rows"]["episodes"] == ["7", "5"]
    unfiltered = quality_cells(browser, "variant raw")
    assert unfiltered["rows"]["episodes"] == ["7", "7"] and unfiltered["removed"] == {}
    assert browser.execute_script("return document.querySelector('section.curate[data-name=\"variant raw\"] .removed-none')"
                                  ".textContent").startswith("No filter ran")


def test_text_from_a_curate_report_is_never_markup(browser, tmp_path):
    from test_curate import traj

    run = make_run(tmp_path / "run")
    injected = "".join(INJECTIONS)
    trajs = defective() + [traj("h", "t9", [("s0", "x")], kind=injected)]  # a task kind from the data
    add_curate_report(run, trajs, input=injected, output=injected)
    html = write_page(run, tmp_path / "page.html")
    assert "</script><script>window.__pwned" not in html.read_text()
    open_page(browser, html)
    click_view(browser, "quality")
    time.sleep(0.3)  # an injected image's onerror would have fired by now
    assert browser.execute_script("return typeof window.__pwned") == "undefined"
    assert browser.execute_script("return document.querySelectorAll('main img, main script').length") == 0
    text = browser.execute_script("return document.querySelector('section.curate').innerText")
    assert text.count(injected) == 3  # input, output, and the task kind's row
    assert quality_cells(browser)["rows"]["tasks_per_kind." + injected] == ["1", "1"]


@pytest.mark.slow
def test_a_real_run_writes_its_page(tmp_path, counter_env_registered, tiny_model, browser):
    from agentclone.pipeline import run_recipe
    from agentclone.recipes import validate_recipe

    recipe = validate_recipe({
        "env": {"id": "test/counter-v0", "kwargs": {"targets": 4, "max_steps": 3}}, "model": tiny_model,
        "collect": {"policy": "expert"}, "train": {"max_steps": 2, "batch_size": 2, "save_steps": 100, "logging_steps": 1},
        "eval": {"episodes": 2, "generation": {"max_new_tokens": 6, "batch_size": 8},
                 "rollout": {"concurrency": 4, "max_consecutive_invalid": 1}},
    })
    out = tmp_path / "run"
    run_recipe(recipe, out)
    assert (out / "report.html").exists()
    open_page(browser, out / "report.html")
    report = json.loads((out / "report.json").read_text())
    rates = browser.execute_script("return Array.from(document.querySelectorAll('#summary .rate')).map(e => Number(e.dataset.value))")
    assert rates == [report["base"]["success_rate"], report["adapter"]["success_rate"]]
    click_view(browser, "training")
    assert browser.execute_script("return document.querySelectorAll('#charts svg').length") >= 2


from test_curate import defective  # noqa: E402
from test_disagreement import tiny_model  # noqa: E402,F401  (a fixture)
