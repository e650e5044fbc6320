"""Comparing trainers from one recipe: ``variants:`` run on the same data, seeds and held-out tasks.

The recipe's collect stage runs once and the base model is evaluated once; then
each variant builds its own training set from the same demonstrations, trains
its own adapter with the same settings (plus its overrides), and is evaluated
on the same held-out episodes. Output layout::

    DIR/demos.jsonl, DIR/eval/base.jsonl      shared
    DIR/variants/<name>/train.jsonl           the variant's training set (loss flags, selections)
    DIR/variants/<name>/build.json            what the builder did (selector counters, ...)
    DIR/variants/<name>/adapter/              its LoRA adapter
    DIR/variants/<name>/eval/adapter.jsonl    its held-out rollouts
    DIR/variants/<name>/report.{json,md,png}  base against this variant
    DIR/report.{json,md,png}                  base and every variant
    DIR/comparison.{md,json}                  the table: loss tokens, tokens, success with 95% CI

Every stage of every variant is skipped on a rerun when its output is complete
and still matches its inputs (demonstrations, trainer options, train settings,
eval settings); an output of other inputs is moved aside (``NAME.stale-TIME``)
and redone, so a table never mixes an old adapter's rollouts with a new one's.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable

from agentclone.data import Trajectory, atomic_write_text, file_sha256, read_trajectories, write_trajectories
from agentclone.evaluation import summarize, wilson_interval, write_report
from agentclone.prompting import ActionFormat
from agentclone.recipes import Recipe, VariantSpec, variant_train_settings
from agentclone.trainers.base import BuildContext, make_builder
from agentclone.training import data_hash, is_adapter_complete, train_lora


def _log(msg: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(msg)


def run_variants(recipe: Recipe, out: Path, fmt: ActionFormat, timings: dict, timings_path: Path) -> dict:
    """Evaluate the base once, then build, train and evaluate every variant; write the comparison."""
    from agentclone.pipeline import ensure_fresh, evaluate, fingerprint

    demos = out / "demos.jsonl"

    def stage(name: str, kind: str, fn: Callable[[], None]) -> None:
        if kind not in recipe.stages:
            return
        _log(f"[bold cyan]== {name}[/]")
        t0 = time.perf_counter()
        fn()
        timings[name] = round(time.perf_counter() - t0, 1)
        atomic_write_text(timings_path, json.dumps(timings, indent=2))
        _log(f"   {name} took {timings[name]:.0f}s")

    if "base" in recipe.eval.policies:
        only_base = recipe.model_copy(update={"eval": recipe.eval.model_copy(update={"policies": ["base"]})})

        def eval_base() -> None:
            ensure_fresh(out / "eval", fingerprint({"env": recipe.env, "eval": only_base.eval, "seed": recipe.seed,
                                                    "format": recipe.format, "model": recipe.model}))
            evaluate(only_base, None, out, fmt)

        stage("eval base", "eval", eval_base)

    for variant in recipe.variants:
        vdir = out / "variants" / variant.name
        stage(f"{variant.name}: build", "build", lambda v=variant, d=vdir: build_variant(recipe, v, demos, d, fmt))
        stage(f"{variant.name}: train", "train", lambda v=variant, d=vdir: train_variant(recipe, v, d, fmt))
        if "adapter" in recipe.eval.policies:
            stage(f"{variant.name}: eval", "eval", lambda v=variant, d=vdir: eval_variant(recipe, v, out, d, fmt))

    table = comparison_table(recipe, out, timings)
    if table["rows"]:
        atomic_write_text(out / "comparison.json", json.dumps(table, indent=2))
        atomic_write_text(out / "comparison.md", render_comparison(table))
        results = {}
        if (out / "eval" / "base.jsonl").exists():
            results["base"] = read_trajectories(out / "eval" / "base.jsonl")
        for variant in recipe.variants:
            path = out / "variants" / variant.name / "eval" / "adapter.jsonl"
            if path.exists():
                results[variant.name] = read_trajectories(path)
        if results:
            write_report(results, out, title=f"{recipe.name}: held-out evaluation of every variant")
        _log(render_comparison(table))
    return {"timings": timings, "comparison": table}


def build_variant(recipe: Recipe, variant: VariantSpec, demos: Path, vdir: Path, fmt: ActionFormat) -> None:
    train_file, meta_file = vdir / "train.jsonl", vdir / "build.json"
    key = {"trainer": variant.trainer.model_dump(), "demos_sha256": file_sha256(demos), "format": fmt.name,
           "seed": recipe.seed, "model": recipe.model}
    if train_file.exists() and meta_file.exists():
        meta = json.loads(meta_file.read_text())
        if meta.get("key") == key:
            _log(f"   {train_file} matches the demonstrations and trainer options; skipping")
            return
    builder = make_builder(variant.trainer.name, variant.trainer.options)
    context = BuildContext(seed=recipe.seed, model=recipe.model, extras={"format": fmt.name})
    built = builder.build(read_trajectories(demos), context)
    write_trajectories(train_file, built)
    s = builder.stats
    meta = {
        "key": key,
        "stats": {"trajectories_in": s.trajectories_in, "trajectories_out": s.trajectories_out, "steps": s.steps,
                  "loss_steps": s.loss_steps, "dropped": s.dropped},
        "report": getattr(builder, "report", {}),
    }
    atomic_write_text(meta_file, json.dumps(meta, indent=2, default=str))
    _log(
        f"   {variant.trainer.name}: {s.trajectories_out}/{s.trajectories_in} trajectories, "
        f"loss on {s.loss_steps}/{s.steps} steps; dropped {s.dropped or 'none'}"
    )
    if meta["report"].get("selector_stats"):
        _log(f"   selector: {json.dumps(meta['report']['selector_stats'])}")


def train_variant(recipe: Recipe, variant: VariantSpec, vdir: Path, fmt: ActionFormat) -> None:
    from agentclone.pipeline import ensure_fresh, fingerprint

    adapter = vdir / "adapter"
    settings = variant_train_settings(recipe, variant)
    trajs = read_trajectories(vdir / "train.jsonl")
    # checkpoints of the same inputs are resumed; an adapter of other inputs is moved aside
    ensure_fresh(adapter, fingerprint({"data": data_hash(trajs), "train": settings, "model": recipe.model,
                                       "format": recipe.format}))
    if is_adapter_complete(adapter):
        _log(f"   adapter in {adapter} matches the data and settings; skipping")
        return
    record = recipe.model_copy(update={"trainer": variant.trainer, "train": settings}).model_dump()
    record["variant"] = variant.name
    metrics = train_lora(trajs, recipe.model, adapter, settings, fmt, recipe=record)
    _log(
        f"   trained {metrics['global_step']} steps, loss {metrics['train_loss']:.3f}, "
        f"{metrics['loss_tokens_per_epoch']}/{metrics['tokens_per_epoch']} loss tokens per epoch"
    )


def eval_variant(recipe: Recipe, variant: VariantSpec, out: Path, vdir: Path, fmt: ActionFormat) -> None:
    from agentclone.pipeline import ensure_fresh, evaluate, fingerprint, stamp_of

    only_adapter = recipe.model_copy(update={"eval": recipe.eval.model_copy(update={"policies": ["adapter"]})})
    # rollouts of an older adapter (or other eval settings) are moved aside, never mixed in
    ensure_fresh(vdir / "eval", fingerprint({"env": recipe.env, "eval": only_adapter.eval, "seed": recipe.seed,
                                             "format": recipe.format, "model": recipe.model,
                                             "adapter": stamp_of(vdir / "adapter")}))
    evaluate(only_adapter, vdir / "adapter", vdir, fmt)
    results = {"adapter": read_trajectories(vdir / "eval" / "adapter.jsonl")}
    base = out / "eval" / "base.jsonl"
    if base.exists():
        results = {"base": read_trajectories(base), **results}
    write_report(results, vdir, title=f"{recipe.name} / {variant.name}: held-out evaluation")


def _paired(a: list[Trajectory], b: list[Trajectory]) -> dict | None:
    """Episodes (by id) solved by ``a`` only and by ``b`` only: the comparison that matters with few tasks."""
    wins_b = {t.id: t.success for t in b}
    shared = [t for t in a if t.id in wins_b]
    if not shared:
        return None
    only_this = sum(t.success and not wins_b[t.id] for t in shared)
    only_reference = sum(wins_b[t.id] and not t.success for t in shared)
    return {"episodes": len(shared), "only_this": only_this, "only_reference": only_reference,
            "p_value": mcnemar_exact(only_this, only_reference)}


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar test: how likely a split at least this uneven is if neither side is better."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def comparison_table(recipe: Recipe, out: Path, timings: dict) -> dict:
    """One row per variant (and the base): loss steps and tokens, held-out success with a 95% CI."""
    rows = []
    base_path = out / "eval" / "base.jsonl"
    base = read_trajectories(base_path) if base_path.exists() else None
    reference_name = recipe.variants[0].name if recipe.variants else None
    reference: list[Trajectory] | None = None
    if base is not None:
        s = summarize(base)
        rows.append({"variant": "base", "trainer": "(no training)", "episodes": s["episodes"],
                     "successes": s["successes"], "success_rate": s["success_rate"],
                     "success_ci95": s["success_ci95"], "invalid_action_rate": s["invalid_action_rate"],
                     "mean_steps": s["mean_steps"]})
    for variant in recipe.variants:
        vdir = out / "variants" / variant.name
        row: dict = {"variant": variant.name, "trainer": _describe_trainer(variant)}
        build = vdir / "build.json"
        if build.exists():
            meta = json.loads(build.read_text())
            row["loss_steps"] = meta["stats"]["loss_steps"]
            row["steps"] = meta["stats"]["steps"]
            report = meta.get("report") or {}
            if report.get("selector_stats"):
                row["selector_stats"] = report["selector_stats"]
            if report.get("selected_by"):
                row["selected_by"] = report["selected_by"]
        metrics_file = vdir / "adapter" / "metrics.json"
        if metrics_file.exists():
            m = json.loads(metrics_file.read_text())
            row.update(loss_tokens=m["loss_tokens_per_epoch"], tokens=m["tokens_per_epoch"], epochs=m["epochs"],
                       train_loss=m["train_loss"], optimizer_steps=m["global_step"], train_wall_s=m["train_wall_s"])
        evals = vdir / "eval" / "adapter.jsonl"
        if evals.exists():
            trajs = read_trajectories(evals)
            s = summarize(trajs)
            row.update(episodes=s["episodes"], successes=s["successes"], success_rate=s["success_rate"],
                       success_ci95=list(wilson_interval(s["successes"], s["episodes"])),
                       invalid_action_rate=s["invalid_action_rate"], mean_steps=s["mean_steps"])
            if base is not None:
                row["vs_base_points"] = round(100 * (s["success_rate"] - summarize(base)["success_rate"]), 2)
            if variant.name == reference_name:
                reference = trajs
            elif reference is not None:
                row["paired_vs_reference"] = _paired(trajs, reference)
        row["wall_s"] = {k.split(": ", 1)[1]: v for k, v in timings.items() if k.startswith(f"{variant.name}: ")}
        rows.append(row)
    return {"recipe": recipe.name, "reference": reference_name, "env": recipe.env.id, "env_kwargs": recipe.env.kwargs,
            "model": recipe.model, "eval_split": recipe.eval.split, "rows": rows}


def _describe_trainer(variant: VariantSpec) -> str:
    opts = variant.trainer.options
    if variant.trainer.name == "critical":
        sel = opts.get("selector", "disagreement")
        return f"critical/{sel}" + (f" @{opts['budget']:g}" if "budget" in opts and sel != "all" else "")
    return variant.trainer.name


def render_comparison(table: dict) -> str:
    ref = table.get("reference")
    lines = [
        f"# {table['recipe']}: comparison on {table['eval_split']} tasks",
        "",
        f"{table['env']} {json.dumps(table['env_kwargs'])}, model {table['model']}. Loss tokens and tokens are "
        "per epoch; every variant trains on the same trajectories for the same optimizer steps.",
        "",
        "| variant | trainer | loss steps | loss tokens / tokens | train loss | success (95% CI) | vs base "
        f"| paired vs {ref} (+only this / -only {ref}, exact McNemar p) | invalid actions | train s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table["rows"]:
        steps = f"{r['loss_steps']}/{r['steps']}" if "loss_steps" in r else "-"
        tokens = f"{r['loss_tokens']}/{r['tokens']} ({r['loss_tokens'] / r['tokens']:.0%})" if "tokens" in r else "-"
        loss = f"{r['train_loss']:.3f}" if "train_loss" in r else "-"
        if "success_rate" in r:
            lo, hi = r["success_ci95"]
            success = f"{r['success_rate']:.1%} ({lo:.1%}–{hi:.1%}), {r['successes']}/{r['episodes']}"
            invalid = f"{r['invalid_action_rate']:.1%}"
        else:
            success = invalid = "-"
        vs = f"{r['vs_base_points']:+.1f} pts" if "vs_base_points" in r else "-"
        p = r.get("paired_vs_reference")
        paired = f"+{p['only_this']} / -{p['only_reference']} of {p['episodes']} (p={p['p_value']:.2g})" if p else "-"
        train_s = f"{r['train_wall_s']:.0f}" if "train_wall_s" in r else "-"
        lines.append(f"| {r['variant']} | {r['trainer']} | {steps} | {tokens} | {loss} | {success} | {vs} | {paired} "
                     f"| {invalid} | {train_s} |")
    notes = [r for r in table["rows"] if r.get("selector_stats")]
    if notes:
        lines += ["", "Selector counters:", ""]
        for r in notes:
            lines.append(f"- {r['variant']}: {json.dumps(r['selector_stats'])}; picked by {json.dumps(r.get('selected_by', {}))}")
    return "\n".join(lines) + "\n"
