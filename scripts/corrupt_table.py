"""The README's corrupted-demonstration table from the runs of recipes/textcraft_corrupt.yaml.

    python scripts/corrupt_table.py runs/textcraft_corrupt

Expects the run folders the recipe's header names: ``bc-clean`` and, per corrupted share P (percent),
``bc-corruptP``, ``bc-curatedP`` and ``bc-robustP``. Every row is evaluated on the same held-out goals;
each is paired with BC on clean data (goals solved only by the row / only by clean BC, exact McNemar p),
and curated / robust rows also with BC on the same corrupted data. Missing runs are left out and named
on stderr.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from agentclone.evaluation import expert_stats, paired, wilson_interval
from agentclone.stages import read_rollouts


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _pair(row, ref) -> str:
    if ref is None:
        return ""
    p = paired(row, ref)
    return f"+{p['only_this']} / -{p['only_reference']}, p = {p['p_value']:.2g}" if p else ""


def _data_note(run: Path, share: str) -> str:
    corruption = run / f"bc-corrupt{share}" / "demos.jsonl.corruption.json"
    note = ""
    if corruption.exists():
        c = json.loads(corruption.read_text())
        note = f"{c['corrupted']} of {c['trajectories']} trajectories relabelled ({c['mode']})"
    return note


def _curate_note(run: Path, share: str) -> str:
    report = run / f"bc-curated{share}" / "curate.json"
    if not report.exists():
        return ""
    removed = json.loads(report.read_text()).get("removed", {})
    parts = [f"{r.get('steps_loss_off', 0)} steps lost their loss ({r.get('trajectories_touched', 0)} trajectories)"
             for name, r in removed.items() if name == "conflicting"]
    return "; ".join(parts)


def main(run: Path) -> None:
    def evals(name: str):
        path = run / name / "eval" / "adapter.jsonl"
        if not path.exists():
            print(f"missing: {path}", file=sys.stderr)
            return None
        return read_rollouts(path)

    clean = evals("bc-clean")
    shares = sorted({m.group(1) for p in run.glob("bc-corrupt*") if (m := re.fullmatch(r"bc-corrupt(\d+)", p.name))},
                    key=int)
    rows = [("BC, clean data", "0%", clean, None, "")]
    for share in shares:
        corrupt = evals(f"bc-corrupt{share}")
        rows.append(("BC", f"{share}%", corrupt, None, _data_note(run, share)))
        rows.append(("BC after `curate --drop-conflicting`", f"{share}%", evals(f"bc-curated{share}"), corrupt,
                     _curate_note(run, share)))
        rows.append(("BC, median-of-means loss (3 groups)", f"{share}%", evals(f"bc-robust{share}"), corrupt, ""))
    print("| method | corrupted | held-out success (95% CI) | invalid actions | action divergence | "
          "vs clean BC | vs BC on the same data | notes |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for method, share, trajs, same_data, note in rows:
        if not trajs:  # missing, or an evaluation still running
            continue
        n, k = len(trajs), sum(t.success for t in trajs)
        lo, hi = wilson_interval(k, n)
        steps = [s for t in trajs for s in t.steps]
        invalid = sum(bool(s.invalid) for s in steps) / len(steps) if steps else None
        div = expert_stats(trajs).get("action_divergence")
        vs_clean = _pair(trajs, clean) if trajs is not clean else ""
        print(f"| {method} | {share} | {k}/{n} = {_pct(k / n)} ({_pct(lo)}-{_pct(hi)}) | {_pct(invalid)} | "
              f"{_pct(div)} | {vs_clean} | {_pair(trajs, same_data)} | {note} |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
