"""Evaluation reports: success rate with a 95% interval, return, steps, invalid actions, per task kind."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

from agentclone.data import Trajectory, atomic_write_bytes, atomic_write_text


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion (well behaved at 0% and 100%)."""
    if n == 0:
        return (0.0, 0.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar test: how likely a split at least this uneven is if neither side is better."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired(a: list[Trajectory], b: list[Trajectory]) -> dict | None:
    """Episodes (by id) solved by ``a`` only and by ``b`` only, with the exact McNemar p."""
    wins_b = {t.id: t.success for t in b}
    shared = [t for t in a if t.id in wins_b]
    if not shared:
        return None
    only_this = sum(t.success and not wins_b[t.id] for t in shared)
    only_reference = sum(wins_b[t.id] and not t.success for t in shared)
    return {"episodes": len(shared), "only_this": only_this, "only_reference": only_reference,
            "p_value": mcnemar_exact(only_this, only_reference)}


def expert_stats(trajs: list[Trajectory]) -> dict:
    """With expert labels on the agent's own states: how often the agent did what the expert would have,
    and the recovery rate (among episodes where the agent left the expert's path, the share that still
    succeeded). Empty when no step carries a label."""
    labelled = agree = 0
    left = recovered = 0
    for t in trajs:
        judged = [s.agrees_with_expert for s in t.steps if s.agrees_with_expert is not None]
        labelled += len(judged)
        agree += sum(judged)
        if False in judged:
            left += 1
            recovered += t.success
    if not labelled:
        return {}
    return {"expert_agreement": agree / labelled, "action_divergence": 1 - agree / labelled,
            "labelled_states": labelled,
            "episodes_off_expert_path": left, "recovered": recovered,
            "recovery_rate": recovered / left if left else None}


def summarize(trajs: list[Trajectory]) -> dict:
    """The numbers a report shows for one policy."""
    n = len(trajs)
    wins = sum(t.success for t in trajs)
    steps = sum(len(t.steps) for t in trajs)
    invalid = sum(t.num_invalid for t in trajs)
    lo, hi = wilson_interval(wins, n)
    by_kind: dict[str, list[Trajectory]] = defaultdict(list)
    for t in trajs:
        by_kind[t.task_kind or "all"].append(t)
    return {
        "episodes": n,
        "successes": wins,
        "success_rate": wins / n if n else 0.0,
        "success_ci95": [lo, hi],
        "mean_return": sum(t.return_ for t in trajs) / n if n else 0.0,
        "mean_steps": steps / n if n else 0.0,
        "invalid_action_rate": invalid / steps if steps else 0.0,
        "errored": sum(t.error is not None for t in trajs),
        **expert_stats(trajs),
        "by_kind": {
            kind: {
                "episodes": len(ts),
                "success_rate": sum(t.success for t in ts) / len(ts),
                "mean_steps": sum(len(t.steps) for t in ts) / len(ts),
            }
            for kind, ts in sorted(by_kind.items())
        },
    }


def write_report(results: dict[str, list[Trajectory]], out_dir: str | Path, title: str = "agentclone evaluation",
                 extra: dict | None = None) -> dict:
    """Write ``report.json``, ``report.md``, ``report.png`` and ``report.html`` (``agentclone.viewer``) for each
    named policy's trajectories."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {name: summarize(trajs) for name, trajs in results.items()}
    if "base" in report and "adapter" in report:
        report["improvement"] = {
            "success_rate_points": round(100 * (report["adapter"]["success_rate"] - report["base"]["success_rate"]), 2)
        }
    if extra:
        report["run"] = extra
    atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2))
    atomic_write_text(out_dir / "report.md", render_markdown(report, title))
    plot_report(report, out_dir / "report.png", title)
    from agentclone.viewer import write_report_html  # report.html: the run in the browser; a failure only warns

    write_report_html(out_dir, results)
    return report


def render_markdown(report: dict, title: str) -> str:
    names = [k for k in report if k not in ("improvement", "run")]
    lines = [f"# {title}", ""]
    lines.append("| policy | episodes | success rate (95% CI) | mean return | mean steps | invalid actions | errored |")
    lines.append("|---|---|---|---|---|---|---|")
    for name in names:
        r = report[name]
        lo, hi = r["success_ci95"]
        lines.append(
            f"| {name} | {r['episodes']} | {r['success_rate']:.1%} ({lo:.1%}–{hi:.1%}) | {r['mean_return']:.2f} "
            f"| {r['mean_steps']:.1f} | {r['invalid_action_rate']:.1%} | {r['errored']} |"
        )
    if "improvement" in report:
        lines += ["", f"Adapter minus base: **{report['improvement']['success_rate_points']:+.1f} points** of success rate."]
    labelled = [name for name in names if "expert_agreement" in report[name]]
    if labelled:  # expert labels on the agent's own states: divergence = 1 - agreement
        lines += ["", "## Agreement with the expert on the agent's own states", "",
                  "| policy | success rate | expert agreement | action divergence | labelled states |",
                  "|---|---|---|---|---|"]
        for name in labelled:
            r = report[name]
            lines.append(f"| {name} | {r['success_rate']:.1%} | {r['expert_agreement']:.1%} "
                         f"| {r['action_divergence']:.1%} | {r['labelled_states']} |")
    kinds = sorted({k for name in names for k in report[name]["by_kind"]})
    if len(kinds) > 1 or (kinds and kinds != ["all"]):
        lines += ["", "## By task kind", "", "| kind | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for kind in kinds:
            cells = []
            for name in names:
                k = report[name]["by_kind"].get(kind)
                cells.append(f"{k['success_rate']:.0%} of {k['episodes']}" if k else "-")
            lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    if "run" in report:
        lines += ["", "## Run", "", "```json", json.dumps(report["run"], indent=2), "```"]
    return "\n".join(lines) + "\n"


def plot_report(report: dict, path: str | Path, title: str) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [k for k in report if k not in ("improvement", "run")]
    kinds = sorted({k for name in names for k in report[name]["by_kind"]})
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [1, 2]})
    rates = [report[n]["success_rate"] for n in names]
    errs = [
        [r - report[n]["success_ci95"][0] for n, r in zip(names, rates)],
        [report[n]["success_ci95"][1] - r for n, r in zip(names, rates)],
    ]
    axes[0].bar(names, rates, yerr=errs, capsize=6, color=["#999999", "#2a7ab9", "#e07b39", "#55a868"][: len(names)])
    axes[0].set_ylim(0, 1)
    axes[0].set_ylabel("success rate (95% CI)")
    axes[0].set_title("held-out success")
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        vals = [report[name]["by_kind"].get(k, {}).get("success_rate", 0.0) for k in kinds]
        axes[1].bar([j + i * width for j in range(len(kinds))], vals, width=width, label=name)
    axes[1].set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(kinds))])
    axes[1].set_xticklabels(kinds, rotation=30, ha="right")
    axes[1].set_ylim(0, 1)
    axes[1].set_title("by task kind")
    axes[1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def next_action_accuracy(policy, trajs: list[Trajectory], max_prompt_tokens: int = 1536) -> dict:
    """Teacher-forced accuracy: at each recorded step, does ``policy`` choose the recorded action?

    Every step of every trajectory is one prompt (the true history up to it),
    all answered in one batched call. Cheap to compute and a direct measure of
    imitation, next to the closed-loop success rate.
    """
    from agentclone.policies.base import PolicyRequest
    from agentclone.prompting import ParseError, build_prompt

    requests, targets = [], []
    for t in trajs:
        for i, step in enumerate(t.steps):
            msgs = build_prompt(t.instructions, t.steps[:i], step.observation, policy.fmt, policy.count_tokens,
                                max_prompt_tokens)
            requests.append(PolicyRequest(messages=msgs, episode_id=t.id))
            targets.append(step.action)
    answers = policy.act(requests)
    correct = parsed = 0
    for answer, target in zip(answers, targets):
        try:
            _, action = policy.fmt.parse(answer)
        except ParseError:
            continue
        parsed += 1
        correct += " ".join(action.lower().split()) == " ".join(target.lower().split())
    n = len(targets)
    return {"steps": n, "accuracy": correct / n if n else 0.0, "parse_rate": parsed / n if n else 0.0}
