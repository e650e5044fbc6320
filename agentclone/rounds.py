"""Rounds (a recipe's ``rounds:``): collect with the current policy, build, train, evaluate, repeat.

Round ``k`` runs the current policy (round ``k-1``'s adapter; for round 1 ``rounds.start_adapter``
or the base model) with ``rounds.collect`` (default: the recipe's ``collect``) on training tasks,
builds training samples with the recipe's builder (``reflection``, ``leap``, ...), trains (continuing
the previous adapter, or from the start policy with ``train_from: start``) and evaluates the new
adapter on held-out tasks. Builders get the expert's demonstrations and the earlier rounds'
rollouts (``BuildContext``), so DAgger's aggregation is a builder option. With a ``baseline``
builder (``bc`` by default) a second chain continues from the same start on expert demonstrations
for the same number of training tokens each round, so "more data" is told apart from the method.

Every stage goes through the stage runner (agentclone.stages): round ``k``'s evaluation names its
adapter's fingerprint and round ``k+1``'s collection names the policy adapter's, so a changed
setting redoes exactly the rounds it affects. Output layout::

    DIR/expert.jsonl                 expert demonstrations (the baseline's data, the builders' demos)
    DIR/round-0/eval.jsonl           held-out rollouts of the start policy
    DIR/round-<k>/demos.jsonl        rollouts of the current policy on training tasks
    DIR/round-<k>/train.jsonl        the builder's training samples; build.json its counts
    DIR/round-<k>/adapter/           the adapter after round k (the next round's policy)
    DIR/round-<k>/eval.jsonl         held-out rollouts of that adapter
    DIR/round-<k>/baseline/          the same for the baseline chain
    DIR/rounds.{json,md}             success, paired comparison, recovery and agreement per round
    DIR/report.html                  the rounds in the browser (agentclone.viewer)
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from agentclone.data import Trajectory, atomic_write_text, write_trajectories
from agentclone.distributed import is_main
from agentclone.evaluation import paired, summarize, wilson_interval
from agentclone.prompting import ActionFormat
from agentclone.recipes import BuilderSpec, Recipe, RoundsSpec
from agentclone.training import is_adapter_complete
from agentclone.stages import (
    StageRunner,
    build_stage,
    collect_stage,
    eval_stage,
    fingerprint,
    log,
    read_rollouts,
    train_stage,
)


def _tokens_per_trajectory(trajs: list[Trajectory], model: str, fmt: ActionFormat, max_length: int) -> dict[str, int]:
    from agentclone.models import load_tokenizer, resolve_model
    from agentclone.training import tokenize_trajectories

    tok = load_tokenizer(resolve_model(model))
    ds = tokenize_trajectories(trajs, tok, fmt, max_length)
    return {row["id"]: len(row["input_ids"]) for row in ds}


def match_tokens(pool: list[Trajectory], target: int, lengths: dict[str, int], seed: int) -> list[Trajectory]:
    """Trajectories drawn from ``pool`` (seeded order, cycling if needed) until they hold ``target`` tokens."""
    pool = [t for t in pool if t.id in lengths]
    if not pool or target <= 0:
        return []
    rng = random.Random(seed)
    out, total, rep = [], 0, 0
    while total < target:
        order = list(pool)
        rng.shuffle(order)
        for t in order:
            if total >= target:
                break
            copy = t if rep == 0 else t.model_copy(update={"id": f"{t.id}#{rep}"})
            out.append(copy)
            total += lengths[t.id]
        rep += 1
    return out


def recovery_stats(trajs: list[Trajectory]) -> dict:
    """Among episodes with at least one bad step (by the expert critic's replay), the share that still succeeded."""
    from agentclone.critics import ReplayMismatch, expert_first_bad_step

    with_bad = recovered = unjudged = 0
    for traj in trajs:
        if traj.error or not traj.steps:
            unjudged += 1
            continue
        try:
            verdict = expert_first_bad_step(traj)
        except ReplayMismatch:
            unjudged += 1
            continue
        if verdict.index is not None:
            with_bad += 1
            recovered += traj.success
    return {"episodes_with_bad_step": with_bad, "recovered": recovered,
            "recovery_rate": recovered / with_bad if with_bad else None, "unjudged": unjudged}


def round_summary(trajs: list[Trajectory], reference: list[Trajectory] | None) -> dict:
    s = summarize(trajs)
    row = {k: s[k] for k in ("episodes", "successes", "success_rate", "success_ci95", "mean_steps",
                             "invalid_action_rate", "errored")}
    if "expert_agreement" in s:  # labels on the agent's own states: agreement and recovery from them
        row.update(expert_agreement=s["expert_agreement"], episodes_off_expert_path=s["episodes_off_expert_path"],
                   recovered=s["recovered"], recovery_rate=s["recovery_rate"])
    else:  # replay with the expert critic
        row.update(recovery_stats(trajs))
    if reference is not None:
        row["paired_vs_start"] = paired(trajs, reference)
    return row


def run_rounds(recipe: Recipe, out: Path, runner: StageRunner, spec: RoundsSpec | None = None,
               builder: BuilderSpec | None = None, train=None, start_adapter: str | Path | None = None,
               expert_demos: Path | None = None, start_eval: Path | None = None, label: str = "") -> dict:
    """Run ``spec`` (default: ``recipe.rounds``) into ``out``; return the rows of rounds.json.

    ``variants:`` passes its own ``spec``/``builder``/``train``, the adapter of the variant it starts
    from with that variant's held-out rollouts (``start_eval``: round 0, not evaluated again), and
    the shared expert demonstrations.
    """
    spec = spec or recipe.rounds
    assert spec is not None
    builder = builder or recipe.builder
    train = train or recipe.train
    collect_spec = spec.collect or recipe.collect
    p = f"{label}: " if label else ""
    start = start_adapter if start_adapter is not None else spec.start_adapter
    if start and not (Path(start) / "adapter_config.json").exists() and "train" in runner.enabled:
        from agentclone.errors import UserError

        raise UserError(f"rounds.start_adapter: no LoRA adapter at {start} (adapter_config.json missing); "
                        "train it first (e.g. `make demo` for runs/quickstart/adapter)")
    out.mkdir(parents=True, exist_ok=True)
    # the start policy's held-out rollouts: round 0, and the reference of every paired comparison
    if start_eval is None:
        start_eval = out / "round-0" / "eval.jsonl"
        eval_stage(runner, f"{p}round-0 eval", recipe, start, start_eval, "start")

    from agentclone.builders.base import make_builder

    needs_demos = spec.baseline is not None or make_builder(builder.name, builder.options).uses_expert_demos
    if expert_demos is None and needs_demos:
        expert_demos = out / "expert.jsonl"
        expert_spec = recipe.collect.model_copy(update={"policy": "expert", "expert_labels": False, "expert_beta": 0.0})
        collect_stage(runner, f"{p}expert demos", recipe, expert_spec, expert_demos, seed=recipe.seed, episodes=None)

    reference = read_rollouts(start_eval) if start_eval.exists() else None
    rows: list[dict] = []
    if reference is not None:
        rows.append({"round": 0, "chain": "start", "adapter": str(start) if start else None,
                     **round_summary(reference, None)})
    current, baseline_current = start, start
    demo_files: list[Path] = []
    for k in range(1, spec.count + 1):
        rk = out / f"round-{k}"
        demos, train_file, adapter = rk / "demos.jsonl", rk / "train.jsonl", rk / "adapter"
        collect_stage(runner, f"{p}round-{k} collect", recipe, collect_spec, demos, seed=recipe.seed + k,
                      episodes=spec.collect_episodes, adapter=current)
        build_stage(runner, f"{p}round-{k} build", recipe, builder, [demos], train_file, seed=recipe.seed + k,
                    expert_demos=expert_demos if expert_demos and expert_demos.exists() else None,
                    earlier=list(demo_files))
        demo_files.append(demos)
        init = current if spec.train_from == "previous" else start
        train_stage(runner, f"{p}round-{k} train", recipe, train, train_file, adapter, init_adapter=init)
        if not is_adapter_complete(adapter):
            log(f"   round {k}: no adapter (the train stage is not among the recipe's stages); stopping here")
            break
        eval_stage(runner, f"{p}round-{k} eval", recipe, adapter, rk / "eval.jsonl", f"round {k}")
        if (rk / "eval.jsonl").exists():
            row = {"round": k, "chain": builder.name, "adapter": str(adapter), **_train_numbers(adapter),
                   **_build_numbers(rk / "build.json"), **round_summary(read_rollouts(rk / "eval.jsonl"), reference)}
            rows.append(row)

        if spec.baseline is not None and expert_demos is not None and (adapter / "metrics.json").exists():
            bdir = rk / "baseline"
            bdata = bdir / "train.jsonl"
            _baseline_data(runner, f"{p}round-{k} baseline build", recipe, spec.baseline, expert_demos, adapter,
                           bdata, train.max_length, seed=recipe.seed + k)
            binit = baseline_current if spec.train_from == "previous" else start
            # the baseline is behaviour cloning: SFT with the same optimiser settings, whatever the method's objective
            btrain = train if train.objective == "sft" else train.model_copy(update={"objective": "sft", "trl": {}})
            train_stage(runner, f"{p}round-{k} baseline train", recipe, btrain, bdata, bdir / "adapter", init_adapter=binit)
            eval_stage(runner, f"{p}round-{k} baseline eval", recipe, bdir / "adapter", bdir / "eval.jsonl",
                       f"round {k} baseline")
            if (bdir / "eval.jsonl").exists():
                rows.append({"round": k, "chain": f"{spec.baseline.name} (baseline)", "adapter": str(bdir / "adapter"),
                             **_train_numbers(bdir / "adapter"),
                             **round_summary(read_rollouts(bdir / "eval.jsonl"), reference)})
            baseline_current = bdir / "adapter"
        current = adapter
        write_rounds_report(out, recipe, rows, label)
    write_rounds_report(out, recipe, rows, label)
    return {"rounds": rows, "final_adapter": str(current) if current else None}


def _baseline_data(runner: StageRunner, name: str, recipe: Recipe, baseline: BuilderSpec, expert_demos: Path,
                   method_adapter: Path, output: Path, max_length: int, seed: int) -> None:
    """The baseline's training set: its builder on expert demonstrations, as many tokens per epoch as the
    method trained on (from the method adapter's metrics, whatever its sample kind)."""
    from agentclone.builders.base import BuildContext, make_builder
    from agentclone.data import file_sha256

    fmt = ActionFormat(recipe.format)
    target = json.loads((method_adapter / "metrics.json").read_text())["tokens_per_epoch"]
    inputs = {"baseline": baseline, "demos": file_sha256(expert_demos), "tokens": target,
              "seed": seed, "model": recipe.model, "format": recipe.format, "max_length": max_length}

    def run() -> None:
        bbuilder = make_builder(baseline.name, baseline.options)
        pool = bbuilder.build(read_rollouts(expert_demos), BuildContext(seed=seed, model=recipe.model,
                                                                        format=recipe.format))
        lengths = _tokens_per_trajectory(pool, recipe.model, fmt, max_length)
        write_trajectories(output, match_tokens(pool, target, lengths, seed=seed))

    runner.run(name, "build", output, inputs, run)


def _train_numbers(adapter: Path) -> dict:
    f = adapter / "metrics.json"
    if not f.exists():
        return {}
    m = json.loads(f.read_text())
    return {"train_tokens": m.get("tokens_trained"), "train_wall_s": m.get("train_wall_s")}


def _build_numbers(build_json: Path) -> dict:
    if not build_json.exists():
        return {}
    meta = json.loads(build_json.read_text())
    return {"samples": meta["stats"]["trajectories_out"], "build": meta.get("report", {})}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def write_rounds_report(out: Path, recipe: Recipe, rows: list[dict], label: str = "") -> None:
    if not is_main():  # under accelerate launch the main process writes it; no process reads it back
        return
    atomic_write_text(out / "rounds.json", json.dumps({"recipe": recipe.name, "env": recipe.env.id,
                                                       "env_kwargs": recipe.env.kwargs, "rounds": rows},
                                                      indent=2, default=str))
    title = f"{recipe.name}{' / ' + label if label else ''}: rounds"
    lines = [
        f"# {title}",
        "",
        "Held-out success after each round (95% Wilson CI); paired against the start policy on the same "
        "episodes (+solved only by this / -solved only by the start, exact McNemar p); recovery: among "
        "episodes where the agent left the expert's path, the share that still succeeded; agreement: the "
        "share of the agent's own states where it did what the expert would have (needs eval.expert_labels).",
        "",
        "| round | chain | success (95% CI) | paired vs start | recovery | expert agreement | invalid actions "
        "| mean steps | training tokens | train s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lo, hi = r.get("success_ci95") or wilson_interval(r["successes"], r["episodes"])
        pv = r.get("paired_vs_start")
        pair = f"+{pv['only_this']} / -{pv['only_reference']} (p={pv['p_value']:.2g})" if pv else "-"
        if "episodes_off_expert_path" in r:
            rec = f"{_pct(r['recovery_rate'])} ({r['recovered']}/{r['episodes_off_expert_path']})"
        else:
            rec = f"{_pct(r.get('recovery_rate'))} ({r.get('recovered')}/{r.get('episodes_with_bad_step')})"
        lines.append(
            f"| {r['round']} | {r['chain']} | {_pct(r['success_rate'])} ({lo:.0%}–{hi:.0%}), {r['successes']}/{r['episodes']} "
            f"| {pair} | {rec} | {_pct(r.get('expert_agreement'))} | {_pct(r['invalid_action_rate'])} "
            f"| {r['mean_steps']:.1f} | {r.get('train_tokens') or '-'} | {r.get('train_wall_s') or '-'} |"
        )
    atomic_write_text(out / "rounds.md", "\n".join(lines) + "\n")
    from agentclone.viewer import write_report_html  # report.html beside rounds.md; a failure only warns

    write_report_html(out)


__all__ = ["run_rounds", "match_tokens", "recovery_stats", "round_summary", "write_rounds_report", "fingerprint"]
