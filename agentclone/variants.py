"""Comparing methods from one recipe: ``variants:`` run on the same data, seeds and held-out tasks.

The recipe's collect stage runs once and the base model is evaluated once; then each variant
builds its own training set from the same demonstrations, trains its own adapter with the same
settings (plus its overrides) and is evaluated on the same held-out episodes. A variant with
``rounds:`` runs rounds instead (agentclone.rounds), starting from an earlier variant's adapter
(``start_from``) with the shared demonstrations as its expert data: e.g. LEAP rounds on top of BC.
Output layout::

    DIR/demos.jsonl, DIR/eval/base.jsonl      shared
    DIR/variants/<name>/train.jsonl           the variant's training set; build.json what the builder did
    DIR/variants/<name>/adapter/              its LoRA adapter
    DIR/variants/<name>/eval/adapter.jsonl    its held-out rollouts
    DIR/variants/<name>/round-<k>/...         a variant with rounds: each round (rounds.md its table)
    DIR/variants/<name>/report.{json,md,png}  base against this variant
    DIR/report.{json,md,png}                  base and every variant
    DIR/comparison.{md,json}                  the table: tokens, success with 95% CI, paired McNemar p

Every stage goes through the stage runner (agentclone.stages), so a rerun skips what is complete
and current and redoes, moving aside, what other inputs made.
"""

from __future__ import annotations

import json
from pathlib import Path

from agentclone.data import Trajectory, atomic_write_text
from agentclone.distributed import is_main
from agentclone.evaluation import mcnemar_exact, paired, summarize, wilson_interval, write_report  # noqa: F401
from agentclone.recipes import Recipe, VariantSpec, variant_curate, variant_train_settings
from agentclone.stages import (
    StageRunner,
    build_stage,
    collect_stage,
    curate_stage,
    eval_stage,
    log,
    read_rollouts,
    train_stage,
)


def variant_eval_path(out: Path, variant: VariantSpec) -> Path:
    """Where a variant's final held-out rollouts are."""
    vdir = out / "variants" / variant.name
    if variant.rounds is not None:
        return vdir / f"round-{variant.rounds.count}" / "eval.jsonl"
    return vdir / "eval" / "adapter.jsonl"


def variant_adapter(out: Path, variant: VariantSpec) -> Path:
    vdir = out / "variants" / variant.name
    if variant.rounds is not None:
        return vdir / f"round-{variant.rounds.count}" / "adapter"
    return vdir / "adapter"


def run_variants(recipe: Recipe, out: Path, runner: StageRunner) -> dict:
    """Collect and evaluate the base once, then build, train and evaluate every variant; write the comparison."""
    demos = out / "demos.jsonl"
    collect_stage(runner, "collect", recipe, recipe.collect, demos, seed=recipe.seed)
    if "base" in recipe.eval.policies:
        eval_stage(runner, "eval base", recipe, None, out / "eval" / "base.jsonl", "base")
    shared_demos = demos if recipe.collect.policy == "expert" else None
    for variant in recipe.variants:
        vdir = out / "variants" / variant.name
        settings = variant_train_settings(recipe, variant)
        if variant.rounds is not None:
            from agentclone.rounds import run_rounds

            start = start_eval = None
            if variant.rounds.start_from:  # an earlier variant's adapter, and its held-out rollouts as round 0
                origin = next(v for v in recipe.variants if v.name == variant.rounds.start_from)
                start, start_eval = variant_adapter(out, origin), variant_eval_path(out, origin)
            run_rounds(recipe, vdir, runner, spec=variant.rounds, builder=variant.builder, train=settings,
                       start_adapter=start, expert_demos=shared_demos, start_eval=start_eval, label=variant.name)
        else:
            record = recipe.model_copy(update={"builder": variant.builder, "train": settings}).model_dump()
            record["variant"] = variant.name
            source = curate_stage(runner, f"{variant.name}: curate", variant_curate(recipe, variant), demos,
                                  vdir / "curated.jsonl")
            build_stage(runner, f"{variant.name}: build", recipe, variant.builder, [source], vdir / "train.jsonl",
                        seed=recipe.seed)
            train_stage(runner, f"{variant.name}: train", recipe, settings, vdir / "train.jsonl", vdir / "adapter",
                        record=record)
            if "adapter" in recipe.eval.policies:
                eval_stage(runner, f"{variant.name}: eval", recipe, vdir / "adapter", vdir / "eval" / "adapter.jsonl",
                           variant.name)
        final = variant_eval_path(out, variant)
        if final.exists():
            results = {"adapter": read_rollouts(final)}
            base = out / "eval" / "base.jsonl"
            if base.exists():
                results = {"base": read_rollouts(base), **results}
            if is_main():  # under accelerate launch the main process writes the reports
                write_report(results, vdir, title=f"{recipe.name} / {variant.name}: held-out evaluation")

    table = comparison_table(recipe, out, runner.timings)
    if table["rows"] and is_main():  # under accelerate launch the main process writes the reports
        atomic_write_text(out / "comparison.json", json.dumps(table, indent=2))
        atomic_write_text(out / "comparison.md", render_comparison(table))
        results = {}
        if (out / "eval" / "base.jsonl").exists():
            results["base"] = read_rollouts(out / "eval" / "base.jsonl")
        for variant in recipe.variants:
            path = variant_eval_path(out, variant)
            if path.exists():
                results[variant.name] = read_rollouts(path)
        if results:
            write_report(results, out, title=f"{recipe.name}: held-out evaluation of every variant")
        log(render_comparison(table))
    return {"comparison": table}


def comparison_table(recipe: Recipe, out: Path, timings: dict) -> dict:
    """One row per variant (and the base): loss steps and tokens, held-out success with a 95% CI."""
    rows = []
    base_path = out / "eval" / "base.jsonl"
    base = read_rollouts(base_path) if base_path.exists() else None
    reference_name = recipe.variants[0].name if recipe.variants else None
    reference: list[Trajectory] | None = None
    if base is not None:
        s = summarize(base)
        rows.append({"variant": "base", "builder": "(no training)", "episodes": s["episodes"],
                     "successes": s["successes"], "success_rate": s["success_rate"],
                     "success_ci95": s["success_ci95"], "invalid_action_rate": s["invalid_action_rate"],
                     "mean_steps": s["mean_steps"]})
    for variant in recipe.variants:
        vdir = out / "variants" / variant.name
        row: dict = {"variant": variant.name, "builder": _describe_builder(variant)}
        last = vdir / f"round-{variant.rounds.count}" if variant.rounds is not None else vdir
        build = last / "build.json"
        if build.exists():
            meta = json.loads(build.read_text())
            row["loss_steps"] = meta["stats"]["loss_steps"]
            row["steps"] = meta["stats"]["steps"]
            report = meta.get("report") or {}
            if report.get("selector_stats"):
                row["selector_stats"] = report["selector_stats"]
            if report.get("selected_by"):
                row["selected_by"] = report["selected_by"]
        metrics_file = variant_adapter(out, variant) / "metrics.json"
        if metrics_file.exists():
            m = json.loads(metrics_file.read_text())
            row.update(loss_tokens=m["loss_tokens_per_epoch"], tokens=m["tokens_per_epoch"], epochs=m["epochs"],
                       train_loss=m["train_loss"], optimizer_steps=m["global_step"], train_wall_s=m["train_wall_s"])
        evals = variant_eval_path(out, variant)
        if evals.exists():
            trajs = read_rollouts(evals)
            s = summarize(trajs)
            row.update(episodes=s["episodes"], successes=s["successes"], success_rate=s["success_rate"],
                       success_ci95=list(wilson_interval(s["successes"], s["episodes"])),
                       invalid_action_rate=s["invalid_action_rate"], mean_steps=s["mean_steps"])
            for key in ("expert_agreement", "recovery_rate", "recovered", "episodes_off_expert_path"):
                if key in s:
                    row[key] = s[key]
            if base is not None:
                row["vs_base_points"] = round(100 * (s["success_rate"] - summarize(base)["success_rate"]), 2)
            if variant.name == reference_name:
                reference = trajs
            elif reference is not None:
                row["paired_vs_reference"] = paired(trajs, reference)
        row["wall_s"] = {k.split(": ", 1)[1]: v for k, v in timings.items() if k.startswith(f"{variant.name}: ")}
        rows.append(row)
    return {"recipe": recipe.name, "reference": reference_name, "env": recipe.env.id, "env_kwargs": recipe.env.kwargs,
            "model": recipe.model, "eval_split": recipe.eval.split, "rows": rows}


def _describe_builder(variant: VariantSpec) -> str:
    opts = variant.builder.options
    if variant.builder.name == "critical":
        sel = opts.get("selector", "disagreement")
        return f"critical/{sel}" + (f" @{opts['budget']:g}" if "budget" in opts and sel != "all" else "")
    if variant.rounds is not None:
        start = f" from {variant.rounds.start_from}" if variant.rounds.start_from else ""
        return f"{variant.builder.name} x{variant.rounds.count} rounds{start}"
    return variant.builder.name


def render_comparison(table: dict) -> str:
    ref = table.get("reference")
    lines = [
        f"# {table['recipe']}: comparison on {table['eval_split']} tasks",
        "",
        f"{table['env']} {json.dumps(table['env_kwargs'])}, model {table['model']}. Loss tokens and tokens are "
        "per epoch; every variant trains on the same trajectories for the same optimizer steps.",
        "",
        "| variant | builder | loss steps | loss tokens / tokens | train loss | success (95% CI) | vs base "
        f"| paired vs {ref} (+only this / -only {ref}, exact McNemar p) | invalid actions | recovery | expert agreement "
        "| train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
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
        pair = f"+{p['only_this']} / -{p['only_reference']} of {p['episodes']} (p={p['p_value']:.2g})" if p else "-"
        train_s = f"{r['train_wall_s']:.0f}" if "train_wall_s" in r else "-"
        rec = (f"{r['recovery_rate']:.0%} ({r['recovered']}/{r['episodes_off_expert_path']})"
               if r.get("recovery_rate") is not None else "-")
        agree = f"{r['expert_agreement']:.1%}" if "expert_agreement" in r else "-"
        lines.append(f"| {r['variant']} | {r['builder']} | {steps} | {tokens} | {loss} | {success} | {vs} | {pair} "
                     f"| {invalid} | {rec} | {agree} | {train_s} |")
    notes = [r for r in table["rows"] if r.get("selector_stats")]
    if notes:
        lines += ["", "Selector counters:", ""]
        for r in notes:
            lines.append(f"- {r['variant']}: {json.dumps(r['selector_stats'])}; picked by {json.dumps(r.get('selected_by', {}))}")
    return "\n".join(lines) + "\n"
