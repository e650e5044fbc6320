"""Iterative self-training: rounds of collect, build, train and evaluate (a recipe's ``rounds:``).

Round ``k`` runs the current policy (round ``k-1``'s adapter; for round 1 ``rounds.start_adapter``
or the base model) with the recipe's ``collect`` settings (a model backend, sampling) on training
tasks, builds a training set with the recipe's trainer (e.g. ``reflection``), continues training
the current adapter on it, and evaluates the new adapter on held-out tasks. With a ``baseline``
trainer (``bc`` by default) a second chain continues from the same start on expert
demonstrations, for the same number of training tokens each round, so the comparison is fair.

Output layout::

    DIR/expert.jsonl                 expert demonstrations (the baseline's data)
    DIR/round-0/eval.jsonl           held-out rollouts of the start policy
    DIR/round-<k>/demos.jsonl        rollouts of the current policy on training tasks
    DIR/round-<k>/train.jsonl        the trainer's training set; build.json its counts
    DIR/round-<k>/adapter/           the adapter after round k (the next round's policy)
    DIR/round-<k>/eval.jsonl         held-out rollouts of that adapter
    DIR/round-<k>/baseline/          the same for the baseline chain
    DIR/rounds.{json,md}             success rate and recovery rate per round

Every stage is skipped when its output is complete, so an interrupted run resumes.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path
from typing import Callable

from agentclone.data import Trajectory, atomic_write_text, read_trajectories, write_trajectories
from agentclone.prompting import ActionFormat
from agentclone.recipes import Recipe


def recovery_stats(trajs: list[Trajectory]) -> dict:
    """Among episodes with at least one bad step (by the expert critic), the share that still succeeded."""
    from agentclone.trainers.reflection import ReplayMismatch, expert_first_bad_step

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
    return {
        "episodes_with_bad_step": with_bad,
        "recovered": recovered,
        "recovery_rate": recovered / with_bad if with_bad else None,
        "unjudged": unjudged,
    }


def summarize(trajs: list[Trajectory]) -> dict:
    n = len(trajs)
    steps = sum(len(t.steps) for t in trajs)
    return {
        "episodes": n,
        "successes": sum(t.success for t in trajs),
        "success_rate": sum(t.success for t in trajs) / n if n else 0.0,
        "mean_steps": steps / n if n else 0.0,
        "invalid_action_rate": sum(t.num_invalid for t in trajs) / steps if steps else 0.0,
        **recovery_stats(trajs),
    }


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


def run_rounds(recipe: Recipe, out: Path, fmt: ActionFormat, timings: dict, timings_path: Path) -> dict:
    from agentclone.pipeline import collect, log, make_collect_policy, rollout_settings
    from agentclone.policies.base import GenerationSettings, make_policy
    from agentclone.trainers.base import BuildContext, make_builder
    from agentclone.training import data_hash, is_adapter_complete, train_lora

    spec = recipe.rounds
    assert spec is not None
    env_id, env_kwargs = recipe.env.id, recipe.env.kwargs

    def timed(name: str, fn: Callable[[], None]) -> None:
        log(f"[bold cyan]== {name}[/]")
        t0 = time.perf_counter()
        fn()
        timings[name] = round(time.perf_counter() - t0, 1)
        atomic_write_text(timings_path, json.dumps(timings, indent=2))

    def evaluate(adapter: str | Path | None, path: Path, label: str) -> list[Trajectory]:
        ev = recipe.eval
        gen = GenerationSettings(max_new_tokens=ev.generation.max_new_tokens, temperature=ev.generation.temperature,
                                 top_p=ev.generation.top_p, seed=recipe.seed)
        options = dict(ev.backend_options, model=recipe.model, batch_size=ev.generation.batch_size, generation=gen)
        if adapter:
            options["adapter"] = str(adapter)
        policy = make_policy(ev.backend, fmt=fmt, **options)
        try:  # the same held-out episodes and seeds in every round
            collect(env_id, env_kwargs, policy, ev.split, ev.episodes, path, seed=recipe.seed + 1000,
                    settings=rollout_settings(ev.rollout), description=f"eval {label}")
        finally:
            policy.close()
        return read_trajectories(path)

    def train(trajs: list[Trajectory], adapter_dir: Path, init: str | Path | None) -> dict:
        if is_adapter_complete(adapter_dir):
            meta = json.loads((adapter_dir / "agentclone.json").read_text())
            same_start = meta.get("init_adapter") == (str(init) if init is not None else None)
            if meta.get("data_hash") == data_hash(trajs) and meta.get("settings") == recipe.train.model_dump() and same_start:
                log(f"   adapter in {adapter_dir} matches the data and settings; skipping")
                return json.loads((adapter_dir / "metrics.json").read_text())
            shutil.rmtree(adapter_dir)
        metrics = train_lora(trajs, recipe.model, adapter_dir, recipe.train, fmt, recipe=recipe.model_dump(),
                             init_adapter=init)
        log(f"   trained {metrics['global_step']} steps, {metrics['tokens_trained']} tokens, loss {metrics['train_loss']:.3f}")
        return metrics

    rows: list[dict] = []
    start = spec.start_adapter
    if start and not (Path(start) / "adapter_config.json").exists():
        raise FileNotFoundError(f"rounds.start_adapter: no LoRA adapter at {start} (adapter_config.json missing)")
    r0 = out / "round-0"
    r0.mkdir(parents=True, exist_ok=True)
    start_eval: list[Trajectory] = []

    def do_start_eval() -> None:
        start_eval.extend(evaluate(start, r0 / "eval.jsonl", "start"))

    timed("round-0 eval", do_start_eval)
    rows.append({"round": 0, "chain": "start", "adapter": start, **summarize(start_eval)})

    expert_demos = out / "expert.jsonl"
    if spec.baseline is not None:
        def do_expert() -> None:
            policy = make_policy("expert", fmt=fmt)
            collect(env_id, env_kwargs, policy, recipe.collect.split, None, expert_demos, seed=recipe.seed,
                    settings=rollout_settings(recipe.collect.rollout), description="expert demos")

        timed("expert demos", do_expert)

    current, baseline_current = start, start
    for k in range(1, spec.count + 1):
        rk = out / f"round-{k}"
        rk.mkdir(parents=True, exist_ok=True)
        demos = rk / "demos.jsonl"

        def do_collect(demos: Path = demos, k: int = k) -> None:
            policy = make_collect_policy(recipe, fmt, adapter=current)
            try:  # a fresh sample each round: the seed moves on
                collect(env_id, env_kwargs, policy, recipe.collect.split, spec.collect_episodes, demos,
                        seed=recipe.seed + k, settings=rollout_settings(recipe.collect.rollout),
                        description=f"round {k} collect")
            finally:
                policy.close()

        timed(f"round-{k} collect", do_collect)
        rollouts = read_trajectories(demos)
        log(f"   {len(rollouts)} rollouts, {sum(t.success for t in rollouts)} successful")

        builder = make_builder(recipe.trainer.name, recipe.trainer.options)
        built = builder.build(rollouts, BuildContext(seed=recipe.seed + k, model=recipe.model))
        if hasattr(builder, "close"):
            builder.close()
        write_trajectories(rk / "train.jsonl", built)
        s = builder.stats
        build_info = {"trajectories_in": s.trajectories_in, "trajectories_out": s.trajectories_out,
                      "steps": s.steps, "loss_steps": s.loss_steps, "dropped": s.dropped,
                      **getattr(builder, "counts", {})}
        atomic_write_text(rk / "build.json", json.dumps(build_info, indent=2))
        log(f"   {recipe.trainer.name}: {build_info}")
        if not built:
            raise RuntimeError(f"round {k}: the {recipe.trainer.name} trainer built no training samples; see {rk / 'build.json'}")

        metrics: dict = {}

        def do_train(rk: Path = rk, built: list = built) -> None:
            nonlocal metrics
            metrics = train(built, rk / "adapter", current)

        timed(f"round-{k} train", do_train)
        ev = evaluate(rk / "adapter", rk / "eval.jsonl", f"round {k}")
        rows.append({"round": k, "chain": recipe.trainer.name, "adapter": str(rk / "adapter"),
                     "train_tokens": metrics.get("tokens_trained"), "build": build_info, **summarize(ev)})

        if spec.baseline is not None:
            bdir = rk / "baseline"
            bdir.mkdir(parents=True, exist_ok=True)
            bbuilder = make_builder(spec.baseline.name, spec.baseline.options)
            pool = bbuilder.build(read_trajectories(expert_demos), BuildContext(seed=recipe.seed + k, model=recipe.model))
            lengths = _tokens_per_trajectory(pool, recipe.model, fmt, recipe.train.max_length)
            target = sum(_tokens_per_trajectory(built, recipe.model, fmt, recipe.train.max_length).values())
            bset = match_tokens(pool, target, lengths, seed=recipe.seed + k)
            write_trajectories(bdir / "train.jsonl", bset)
            bmetrics: dict = {}

            def do_btrain(bdir: Path = bdir, bset: list = bset) -> None:
                nonlocal bmetrics
                bmetrics = train(bset, bdir / "adapter", baseline_current)

            timed(f"round-{k} baseline train", do_btrain)
            bev = evaluate(bdir / "adapter", bdir / "eval.jsonl", f"round {k} baseline")
            rows.append({"round": k, "chain": f"{spec.baseline.name} (baseline)", "adapter": str(bdir / "adapter"),
                         "train_tokens": bmetrics.get("tokens_trained"), **summarize(bev)})
            baseline_current = bdir / "adapter"
        current = rk / "adapter"
        write_rounds_report(out, recipe, rows)
    write_rounds_report(out, recipe, rows)
    return {"timings": timings, "rounds": rows}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def write_rounds_report(out: Path, recipe: Recipe, rows: list[dict]) -> None:
    atomic_write_text(out / "rounds.json", json.dumps({"recipe": recipe.name, "env": recipe.env.id,
                                                       "env_kwargs": recipe.env.kwargs, "rounds": rows},
                                                      indent=2, default=str))
    lines = [
        f"# {recipe.name}: rounds of self-training",
        "",
        "Success rate on held-out tasks after each round; recovery rate: among held-out episodes with at "
        "least one bad step (by the expert critic), the share that still succeeded.",
        "",
        "| round | chain | success | recovery | episodes with a bad step | invalid actions | mean steps | training tokens |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rec = f"{_pct(r['recovery_rate'])} ({r['recovered']}/{r['episodes_with_bad_step']})"
        lines.append(
            f"| {r['round']} | {r['chain']} | {_pct(r['success_rate'])} ({r['successes']}/{r['episodes']}) | {rec} | "
            f"{r['episodes_with_bad_step']} | {_pct(r['invalid_action_rate'])} | {r['mean_steps']:.1f} | "
            f"{r.get('train_tokens') or '-'} |"
        )
    atomic_write_text(out / "rounds.md", "\n".join(lines) + "\n")
