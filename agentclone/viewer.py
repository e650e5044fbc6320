"""A run in the browser: one self-contained HTML page (``agentclone view``, and ``report.html`` beside each report).

The page holds its data as JSON in ``<script type="application/json">`` blocks and draws everything
with its own small script and style sheet (``agentclone/viewer_static/``): no CDN, no network. What
it shows:

* the run summary: success with its 95% CI per policy (``report.json`` when the run has one, else
  computed the same way), ``report.png``, the stage timings;
* the per-task table: every held-out episode id with each policy's outcome, filters (failed only,
  task kind, policy, invalid actions, errored) and pages of 100 rows;
* the episode view: each step's observation, thought, action, reward, invalid flag, loss flag,
  selection reason and expert label; two policies on the same episode side by side;
* ``comparison.json`` (``variants:``) or ``rounds.json`` (``rounds:``) as a table whose rows link to
  their episodes;
* training curves (loss, learning rate, tokens/s) from each adapter's ``metrics.json`` as inline SVG;
* data quality: the ``agentclone curate`` report a run keeps as ``curate.json`` (in the run folder, and
  in each ``variants/NAME/`` folder of a comparison): the numbers before and after curation, what each
  filter removed (and the steps whose loss it turned off), the options. A curate report file
  (``--report R.json``) viewed on its own is a page with this view only.

Lazy by design, so 10,000 episodes open fast: the first render parses only the episode index; the
steps (a second JSON block) are parsed when an episode is first opened, and the task table draws one
page at a time. Everything from trajectories reaches the page through ``textContent``; the JSON
escapes ``<``, ``>`` and ``&`` so no text can close its script block.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from agentclone.data import Trajectory, atomic_write_text, latest_per_id, load_any, read_trajectories

STATIC = Path(__file__).with_name("viewer_static")
_STALE = re.compile(r"\.stale-")


def _read_rollouts(path: Path) -> list[Trajectory]:
    if path.suffix == ".parquet":
        return load_any(path)
    return latest_per_id(read_trajectories(path))


def _json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _round_number(path: Path) -> int:
    try:
        return int(path.name.split("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def _rounds_dirs(root: Path) -> list[Path]:
    return sorted((p for p in root.glob("round-*") if p.is_dir() and _round_number(p) >= 0), key=_round_number)


def _eval_files(folder: Path) -> list[Path]:
    files = [p for p in sorted(folder.glob("*.jsonl")) if not _STALE.search(p.name)]
    order = {"base": 0, "adapter": 1}
    return sorted(files, key=lambda p: (order.get(p.stem, 2), p.stem))


def _metrics_curve(path: Path) -> list[list[float | None]] | None:
    """[step, loss, learning rate, tokens/s] per logged step of a ``metrics.json``; tokens/s needs the
    ``elapsed_s`` stamp agentclone's trainer adds to each log entry (older runs: the run's average)."""
    m = _json_file(path)
    if not isinstance(m, dict):
        return None
    points, prev_tokens, prev_time = [], 0.0, 0.0
    average = m.get("train_tokens_per_s")
    for entry in m.get("log_history") or []:
        if not isinstance(entry, dict) or "loss" not in entry or "step" not in entry:
            continue
        rate = None
        tokens, elapsed = entry.get("num_tokens"), entry.get("elapsed_s")
        if tokens is not None and elapsed is not None and elapsed > prev_time:
            rate = (tokens - prev_tokens) / (elapsed - prev_time)
            prev_tokens, prev_time = tokens, elapsed
        elif average is not None:
            rate = average
        points.append([entry["step"], entry.get("loss"), entry.get("learning_rate"), rate])
    return points or None


def _curate_report(path: Path) -> dict | None:
    """The ``agentclone curate`` report in ``path`` (``curate.json``), or None when there is none or it is
    not one (a report has ``before`` and ``after`` quality reports)."""
    report = _json_file(path) if path.is_file() else None
    if isinstance(report, dict) and isinstance(report.get("before"), dict) and isinstance(report.get("after"), dict):
        return report
    return None


def _curate_reports(root: Path, kind: str) -> list[dict]:
    """The run's curate reports: its own ``curate.json``, and for a comparison each variant's."""
    found = []
    folders = [("run", root)]
    if kind == "variants" and (root / "variants").is_dir():
        folders += [(f"variant {p.name}", p) for p in sorted((root / "variants").iterdir()) if p.is_dir()]
    for name, folder in folders:
        report = _curate_report(folder / "curate.json")
        if report is not None:
            found.append({"name": name, "path": str((folder / "curate.json").relative_to(root)), "report": report})
    return found


def collect_run(target: str | Path, results: dict[str, list[Trajectory]] | None = None) -> dict:
    """Everything the page shows about ``target`` (a run folder, a trajectory file or a curate report).

    ``results`` (policy name -> trajectories) replaces the episodes read from the folder: the report
    hook passes what it has in memory.
    """
    target = Path(target)
    if not target.exists():
        raise FileNotFoundError(2, "No such file or directory", str(target))
    page: dict[str, Any] = {"title": target.name, "source": str(target), "kind": "file", "report": None,
                            "report_png": None, "timings": None, "tables": [], "curves": [], "curate": []}
    policies: dict[str, list[Trajectory]] = {}
    curate = _curate_report(target) if target.suffix == ".json" else None
    if curate is not None:  # `agentclone curate --report R.json`
        page["kind"] = "curate"
        page["title"] = f"{target.parent.name}/{target.name}: data quality"
        page["curate"].append({"name": "report", "path": target.name, "report": curate})
    elif target.is_file():
        policies[target.stem] = _read_rollouts(target)
        page["title"] = f"{target.parent.name}/{target.name}"
    else:
        root = target
        rounds = _json_file(root / "rounds.json")
        comparison = _json_file(root / "comparison.json")
        if isinstance(rounds, dict):
            page["kind"] = "rounds"
            page["title"] = f"{rounds.get('recipe', root.name)}: rounds"
            for rk in _rounds_dirs(root):
                k = _round_number(rk)
                if (rk / "eval.jsonl").exists():
                    policies[f"round {k}"] = _read_rollouts(rk / "eval.jsonl")
                if (rk / "baseline" / "eval.jsonl").exists():
                    policies[f"round {k} baseline"] = _read_rollouts(rk / "baseline" / "eval.jsonl")
                for name, metrics in ((f"round {k}", rk / "adapter" / "metrics.json"),
                                      (f"round {k} baseline", rk / "baseline" / "adapter" / "metrics.json")):
                    curve = _metrics_curve(metrics) if metrics.exists() else None
                    if curve:
                        page["curves"].append({"name": name, "points": curve})
            page["tables"].append(_rounds_table(rounds))
        elif isinstance(comparison, dict):
            page["kind"] = "variants"
            page["title"] = f"{comparison.get('recipe', root.name)}: comparison"
            if (root / "eval" / "base.jsonl").exists():
                policies["base"] = _read_rollouts(root / "eval" / "base.jsonl")
            for row in comparison.get("rows", []):
                name = row.get("variant")
                vdir = root / "variants" / str(name)
                if name == "base" or not vdir.is_dir():
                    continue
                last = _rounds_dirs(vdir)
                final = last[-1] if last else vdir
                evals = final / "eval.jsonl" if last else vdir / "eval" / "adapter.jsonl"
                if evals.exists():
                    policies[name] = _read_rollouts(evals)
                curve = _metrics_curve(final / "adapter" / "metrics.json")
                if curve:
                    page["curves"].append({"name": name, "points": curve})
            page["tables"].append(_comparison_table(comparison))
        else:
            page["kind"] = "plain"
            evals = root / "eval"
            if evals.is_dir() and results is None:  # the report hook has them in memory
                for path in _eval_files(evals):
                    policies[path.stem] = _read_rollouts(path)
            # a variant's own folder: its base is the run's
            base = root.parent.parent / "eval" / "base.jsonl"
            if root.parent.name == "variants" and "base" not in policies and base.exists() and results is None:
                policies = {"base": _read_rollouts(base), **policies}
            if not policies and results is None:
                for path in _eval_files(root):
                    policies[path.stem] = _read_rollouts(path)
            curve = _metrics_curve(root / "adapter" / "metrics.json")
            if curve:
                page["curves"].append({"name": "adapter", "points": curve})
        report = _json_file(root / "report.json")
        if isinstance(report, dict):
            page["report"] = report
            recipe = report.get("run") or {}
            if page["kind"] == "plain":
                page["title"] = root.name + (f" ({recipe['env']})" if isinstance(recipe, dict) and recipe.get("env") else "")
        png = root / "report.png"
        if png.exists():
            page["report_png"] = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")
        timings = _json_file(root / "timings.json")
        if isinstance(timings, dict):
            page["timings"] = timings
        page["curate"] = _curate_reports(root, page["kind"])
    if results is not None:  # in front of (and instead of same-named) episodes found in the folder
        policies = {**results, **{k: v for k, v in policies.items() if k not in results}}
    page["summary"] = _summary(policies, page["report"])
    page["policies"] = list(policies)
    index, details = _episodes(policies)
    page["episodes"] = index
    return {"index": page, "details": details}


def _summary(policies: dict[str, list[Trajectory]], report: dict | None) -> list[dict]:
    """One row per policy: report.json's numbers where it has the policy, else ``summarize``'s."""
    from agentclone.evaluation import summarize

    rows = []
    names = list(policies)
    if report:
        names += [k for k in report if k not in policies and k not in ("improvement", "run")
                  and isinstance(report[k], dict) and "success_rate" in report[k]]
    for name in names:
        from_report = bool(report) and isinstance(report.get(name), dict) and "success_rate" in report[name]
        s = report[name] if from_report else summarize(policies[name])
        rows.append({"policy": name, "source": "report.json" if from_report else "episodes",
                     **{k: s.get(k) for k in ("episodes", "successes", "success_rate", "success_ci95", "mean_return",
                                              "mean_steps", "invalid_action_rate", "errored", "expert_agreement")}})
    return rows


def _episodes(policies: dict[str, list[Trajectory]]) -> tuple[list, list]:
    """The index (one short array per episode) and the details (the steps), in the same order."""
    index, details = [], []
    for p, (name, trajs) in enumerate(policies.items()):
        for t in trajs:
            index.append([t.id, t.task_id, t.task_kind or "", p, int(t.success), len(t.steps), t.num_invalid,
                          int(t.error is not None), round(t.return_, 4)])
            steps = []
            for s in t.steps:
                step: dict[str, Any] = {"o": s.observation, "a": s.action, "r": s.reward}
                if s.thought:
                    step["t"] = s.thought
                if s.invalid:
                    step["i"] = 1
                    if s.raw_output is not None:
                        step["raw"] = s.raw_output
                if not s.loss:
                    step["nl"] = 1
                if s.selection is not None:
                    step["s"] = s.selection
                if s.expert is not None:
                    step["e"] = s.expert.model_dump(exclude_none=True)
                    agree = s.agrees_with_expert
                    if agree is not None:
                        step["ag"] = int(agree)
                if s.info:
                    step["info"] = s.info
                steps.append(step)
            details.append({"instructions": t.instructions, "final": t.final_observation, "error": t.error,
                            "model": t.model, "seed": t.seed, "steps": steps})
    return index, details


def _pct(x: Any) -> str:
    return "-" if x is None else f"{x:.1%}"


def _ci(r: dict) -> str:
    ci = r.get("success_ci95")
    if not ci or r.get("success_rate") is None:
        return "-"
    return f"{r['success_rate']:.1%} ({ci[0]:.1%}–{ci[1]:.1%}), {r.get('successes', '?')}/{r.get('episodes', '?')}"


def _comparison_table(table: dict) -> dict:
    columns = ["variant", "builder", "loss steps", "loss tokens / tokens", "train loss", "success (95% CI)",
               "vs base", "paired vs " + str(table.get("reference")), "invalid actions", "train s"]
    rows = []
    for r in table.get("rows", []):
        p = r.get("paired_vs_reference")
        rows.append({"policy": r.get("variant"), "cells": [
            str(r.get("variant")), str(r.get("builder", "")),
            f"{r['loss_steps']}/{r['steps']}" if "loss_steps" in r else "-",
            f"{r['loss_tokens']}/{r['tokens']}" if "tokens" in r else "-",
            f"{r['train_loss']:.3f}" if isinstance(r.get("train_loss"), (int, float)) else "-",
            _ci(r),
            f"{r['vs_base_points']:+.1f} pts" if "vs_base_points" in r else "-",
            f"+{p['only_this']} / -{p['only_reference']} of {p['episodes']} (p={p['p_value']:.2g})" if p else "-",
            _pct(r.get("invalid_action_rate")),
            f"{r['train_wall_s']:.0f}" if isinstance(r.get("train_wall_s"), (int, float)) else "-",
        ]})
    return {"title": "comparison.json", "columns": columns, "rows": rows}


def _rounds_table(data: dict) -> dict:
    columns = ["round", "chain", "success (95% CI)", "paired vs start", "recovery", "expert agreement",
               "invalid actions", "mean steps", "training tokens"]
    rows = []
    for r in data.get("rounds", []):
        k = r.get("round")
        chain = str(r.get("chain", ""))
        policy = f"round {k} baseline" if "baseline" in chain else f"round {k}"
        pv = r.get("paired_vs_start")
        rows.append({"policy": policy, "cells": [
            str(k), chain, _ci(r),
            f"+{pv['only_this']} / -{pv['only_reference']} (p={pv['p_value']:.2g})" if pv else "-",
            _pct(r.get("recovery_rate")), _pct(r.get("expert_agreement")), _pct(r.get("invalid_action_rate")),
            f"{r['mean_steps']:.1f}" if isinstance(r.get("mean_steps"), (int, float)) else "-",
            str(r.get("train_tokens") or "-"),
        ]})
    return {"title": "rounds.json", "columns": columns, "rows": rows}


def embed_json(obj: Any) -> str:
    """JSON safe inside a ``<script>`` block: ``<``, ``>`` and ``&`` as ``\\u`` escapes, so no
    ``</script>`` or ``<!--`` can appear; U+2028/2029 escaped too."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def render_html(data: dict) -> str:
    css = (STATIC / "viewer.css").read_text(encoding="utf-8")
    js = (STATIC / "viewer.js").read_text(encoding="utf-8")
    title = data["index"].get("title", "agentclone run")
    safe_title = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        # no network: the page may load nothing but itself and data: images
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
        f"<title>{safe_title} · agentclone</title><style>{css}</style></head>\n<body>\n"
        "<header><h1 id=\"title\"></h1><nav id=\"nav\"></nav></header>\n<main id=\"main\"></main>\n"
        f"<script type=\"application/json\" id=\"ac-index\">{embed_json(data['index'])}</script>\n"
        f"<script type=\"application/json\" id=\"ac-details\">{embed_json(data['details'])}</script>\n"
        f"<script>{js}</script>\n</body></html>\n"
    )


def write_page(target: str | Path, output: str | Path, results: dict[str, list[Trajectory]] | None = None) -> Path:
    output = Path(output)
    atomic_write_text(output, render_html(collect_run(target, results)))
    return output


def write_report_html(out_dir: str | Path, results: dict[str, list[Trajectory]] | None = None) -> Path | None:
    """``report.html`` in ``out_dir`` (the hook of every report); a failure is a warning, never an error."""
    try:
        return write_page(out_dir, Path(out_dir) / "report.html", results)
    except Exception as exc:  # the run's results matter more than its page
        print(f"warning: could not write {Path(out_dir) / 'report.html'}: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return None


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def serve(target: str | Path, port: int = 0, host: str = "127.0.0.1", on_ready=None) -> None:
    """Serve the page of ``target`` on ``host:port`` (0: a free port) until interrupted."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body = render_html(collect_run(target)).encode("utf-8")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path.split("?", 1)[0] not in ("/", "/index.html"):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    if threading.current_thread() is threading.main_thread():
        # `kill` stops it like Ctrl-C (a shell starts background jobs with SIGINT ignored, so Ctrl-C's
        # signal may not reach a served page started with `&`)
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        if on_ready is not None:
            on_ready(f"http://{host}:{server.server_address[1]}/")
        server.serve_forever()
    finally:
        server.server_close()
