"""The README's method tables from runs of recipes/textcraft_methods.yaml or textcraft_preference.yaml
(one run per training seed).

    python scripts/method_table.py runs/textcraft_methods runs/textcraft_methods_seed1
    python scripts/method_table.py runs/textcraft_preference

Each run directory gives a row for BC, one for each other variant (one per round for variants with
``rounds:``: LEAP, step-DPO, KTO, ETO) and the "BC, same tokens" baseline rounds, all on the same
held-out goals; every row is paired with the BC adapter of its own seed
(goals solved only by this row / only by BC, exact McNemar p). A "both seeds" row per method pools
the paired goals of all seeds (each goal once per seed). Rows whose files are missing are left out
and named on stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from agentclone.evaluation import expert_stats, mcnemar_exact, paired, wilson_interval
from agentclone.stages import read_rollouts


_DISPLAY = {"leap": "LEAP", "dpo": "step-DPO", "kto": "KTO", "eto": "ETO",
            "bc-ema": "BC + weight average (EMA 0.9)"}


def _rows_of(run: Path) -> list[tuple[str, Path, Path]]:
    """(method, held-out rollouts, adapter dir) in table order: BC, then each other variant of the
    recipe in its order (one row per round for variants with ``rounds:``), then the "BC, same tokens"
    baseline rounds."""
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    names = [v["name"] for v in recipe.get("variants") or [] if v["name"] != "bc"]
    rows = [("BC", run / "variants" / "bc" / "eval" / "adapter.jsonl", run / "variants" / "bc" / "adapter")]
    baselines = []
    for name in names:
        vdir, shown = run / "variants" / name, _DISPLAY.get(name, name)
        rounds = sorted(int(p.name.split("-")[1]) for p in vdir.glob("round-*") if p.name.split("-")[1].isdigit())
        if not rounds:
            rows.append((shown, vdir / "eval" / "adapter.jsonl", vdir / "adapter"))
            continue
        rows += [(f"{shown} round {k}", vdir / f"round-{k}" / "eval.jsonl", vdir / f"round-{k}" / "adapter")
                 for k in rounds if k > 0]
        baselines += [(f"BC, same tokens as {shown}, round {k}", vdir / f"round-{k}" / "baseline" / "eval.jsonl",
                       vdir / f"round-{k}" / "baseline" / "adapter")
                      for k in rounds if k > 0 and (vdir / f"round-{k}" / "baseline").exists()]
    return rows + baselines


def _p(p: float) -> str:
    return f"{p:.2f}" if p >= 0.01 else f"{p:.1e}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def main(runs: list[str]) -> str:
    lines = ["| method | training seed | success (95% CI) | vs BC: +/- (exact McNemar p) | invalid actions "
             "| recovery | agreement with expert | training tokens | train s |",
             "|---|---|---|---|---|---|---|---|---|"]
    pooled: dict[str, list[int]] = {}
    for run in map(Path, runs):
        seed = yaml.safe_load((run / "recipe.yaml").read_text())["train"].get("seed", 0)
        bc = read_rollouts(run / "variants" / "bc" / "eval" / "adapter.jsonl")
        for method, eval_path, adapter in _rows_of(run):
            if not eval_path.exists():
                print(f"missing: {eval_path}", file=sys.stderr)
                continue
            trajs = read_rollouts(eval_path)
            wins, n = sum(t.success for t in trajs), len(trajs)
            lo, hi = wilson_interval(wins, n)
            steps = sum(len(t.steps) for t in trajs)
            invalid = sum(t.num_invalid for t in trajs) / steps if steps else 0.0
            ex = expert_stats(trajs)
            rec = (f"{_pct(ex['recovery_rate'])} ({ex['recovered']}/{ex['episodes_off_expert_path']})"
                   if ex else "n/a")
            vs = "—"
            if method != "BC":
                p = paired(trajs, bc)
                vs = f"+{p['only_this']}/-{p['only_reference']} (p={_p(p['p_value'])})"
                acc = pooled.setdefault(method, [0, 0, 0])
                acc[0] += p["only_this"]
                acc[1] += p["only_reference"]
                acc[2] += 1
            metrics = json.loads((adapter / "metrics.json").read_text()) if (adapter / "metrics.json").exists() else {}
            tokens = metrics.get("tokens_trained")
            lines.append(
                f"| {method} | {seed} | {wins}/{n} = {_pct(wins / n)} ({_pct(lo)}–{_pct(hi)}) | {vs} | {_pct(invalid)} "
                f"| {rec} | {_pct(ex.get('expert_agreement'))} | {tokens:,} | {metrics.get('train_wall_s', 'n/a')} |"
                if tokens is not None else
                f"| {method} | {seed} | {wins}/{n} = {_pct(wins / n)} ({_pct(lo)}–{_pct(hi)}) | {vs} | {_pct(invalid)} "
                f"| {rec} | {_pct(ex.get('expert_agreement'))} | n/a | n/a |")
    if len(runs) > 1:
        for method, (only_this, only_bc, seeds) in pooled.items():
            if seeds > 1:
                lines.append(f"| {method} | {seeds} seeds pooled | | +{only_this}/-{only_bc} "
                             f"(p={_p(mcnemar_exact(only_this, only_bc))}) | | | | | |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print(main(sys.argv[1:]))
