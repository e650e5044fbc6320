"""ScienceWorld's score per task type from evaluation trajectories, as the papers report it.

    python -m agentclone_scienceworld.scores runs/scienceworld_eval_openai/eval/base.jsonl [more.jsonl ...]

Per task type (and over all episodes): episodes, success %, mean final score and mean highest score (0-100).
Final: the score at the episode's end, a failed task's -100 counted as 0 (what the plugin's rewards sum to,
x 100). Highest: the best score any step reached, which ETO's evaluation code keeps. Each valid step stores the
simulator's score in ``info["score"]``; an episode without one (every step invalid) scores its start, 0 when
unknown.
"""

from __future__ import annotations

import sys
from collections import defaultdict

from agentclone.data import Trajectory, read_trajectories


def episode_scores(traj: Trajectory) -> tuple[int, int]:
    """(final, highest) score of one episode, each clipped at 0."""
    scores = [s.info["score"] for s in traj.steps if "score" in s.info] or [0]
    return max(scores[-1], 0), max(max(scores), 0)


def score_table(trajs: list[Trajectory]) -> list[dict]:
    """One row per task type (sorted) and a last row ``all``: episodes, success %, mean final, mean highest."""
    groups: dict[str, list[Trajectory]] = defaultdict(list)
    for t in trajs:
        groups[t.task_kind or t.task_id].append(t)
    rows = []
    for kind, members in [*sorted(groups.items()), ("all", trajs)]:
        if not members:
            continue
        scores = [episode_scores(t) for t in members]
        n = len(members)
        rows.append({"task_type": kind, "episodes": n, "success": 100 * sum(t.success for t in members) / n,
                     "final": sum(f for f, _ in scores) / n, "highest": sum(h for _, h in scores) / n})
    return rows


def main(paths: list[str]) -> str:
    trajs = [t for p in paths for t in read_trajectories(p)]
    lines = [f"{'task type':<48} {'episodes':>8} {'success %':>9} {'final':>6} {'highest':>7}"]
    lines += [f"{r['task_type']:<48} {r['episodes']:>8} {r['success']:>9.1f} {r['final']:>6.1f} {r['highest']:>7.1f}"
              for r in score_table(trajs)]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    print(main(sys.argv[1:]))
