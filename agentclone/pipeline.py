"""Running a recipe: collect, build, train, evaluate, each stage skipped when its output is complete.

Output directory layout::

    DIR/recipe.yaml          the validated recipe, as run
    DIR/demos.jsonl          collected trajectories (appended as episodes end; resumable)
    DIR/train.jsonl          the training set the trainer plugin built (loss flags per step)
    DIR/adapter/             LoRA adapter, tokenizer, agentclone.json, metrics.json, checkpoints/
    DIR/eval/base.jsonl      held-out rollouts of the base model
    DIR/eval/adapter.jsonl   held-out rollouts with the adapter
    DIR/report.{json,md,png} the evaluation report
    DIR/timings.json         wall time of each stage
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable

import yaml

from agentclone.data import Trajectory, atomic_write_text, read_trajectories, write_trajectories
from agentclone.envs import make_env
from agentclone.evaluation import write_report
from agentclone.policies.base import GenerationSettings, Policy, make_policy
from agentclone.prompting import ActionFormat
from agentclone.recipes import Recipe, RolloutSpec
from agentclone.rollout import RolloutResult, RolloutSettings, plan_episodes, run_rollouts
from agentclone.trainers.base import BuildContext, make_builder
from agentclone.training import data_hash, is_adapter_complete, train_lora


def log(msg: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(msg)


def rollout_settings(spec: RolloutSpec) -> RolloutSettings:
    return RolloutSettings(
        concurrency=spec.concurrency,
        max_prompt_tokens=spec.max_prompt_tokens,
        max_consecutive_invalid=spec.max_consecutive_invalid,
    )


def collect(
    env_id: str,
    env_kwargs: dict,
    policy: Policy,
    split: str,
    episodes: int | None,
    output: Path,
    seed: int = 0,
    settings: RolloutSettings | None = None,
    description: str = "collect",
    shard: tuple[int, int] | None = None,
) -> RolloutResult:
    """Run ``policy`` on ``episodes`` tasks of ``split``; append trajectories to ``output``.

    ``shard=(i, n)`` keeps episodes i, i+n, i+2n, ... of the plan: n workers with the same
    arguments split one collection without overlap, and their files together hold exactly the
    episodes (same ids, seeds and tasks) of one unsharded run.
    """
    probe = make_env(env_id, **env_kwargs)
    try:
        tasks = probe.tasks(split)
        plan = plan_episodes(tasks, episodes, seed=seed)
        if shard is not None:
            index, count = shard
            plan = plan[index::count]
        probe.prepare([e.task for e in plan])  # e.g. compile generated games once, in parallel
    finally:
        probe.close()
    return run_rollouts(
        lambda: make_env(env_id, **env_kwargs),
        policy,
        plan,
        settings=settings,
        output=output,
        env_kwargs=env_kwargs,
        description=description,
    )


def make_collect_policy(recipe: Recipe, fmt: ActionFormat, adapter: str | Path | None = None) -> Policy:
    """The collect stage's policy: the expert as before, or a model (with the recipe's model, the
    collect adapter and sampling settings)."""
    spec = recipe.collect
    if spec.policy == "expert":
        return make_policy(spec.policy, fmt=fmt)
    gen = GenerationSettings(
        max_new_tokens=spec.generation.max_new_tokens, temperature=spec.generation.temperature,
        top_p=spec.generation.top_p, seed=recipe.seed,
    )
    options = dict(spec.backend_options, model=recipe.model, batch_size=spec.generation.batch_size, generation=gen)
    adapter = adapter if adapter is not None else spec.adapter
    if adapter:
        options["adapter"] = str(adapter)
    return make_policy(spec.policy, fmt=fmt, **options)


def fingerprint(inputs: dict) -> str:
    """A short hash of a stage's inputs (pydantic models included)."""
    payload = json.dumps(inputs, sort_keys=True, default=lambda o: o.model_dump() if hasattr(o, "model_dump") else str(o))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _stamp_path(path: Path) -> Path:
    return path.parent / f".{path.name}.inputs"


def stamp_of(path: Path) -> str | None:
    stamp = _stamp_path(path)
    return stamp.read_text() if stamp.exists() else None


def ensure_fresh(path: Path, inputs_hash: str) -> None:
    """Keep ``path`` if it was made from the same inputs (a partial one resumes); else move it aside.

    Nothing is deleted: an output of other inputs becomes ``NAME.stale-TIMESTAMP`` and the stage redoes it.
    """
    old = stamp_of(path)
    if path.exists() and old is not None and old != inputs_hash:
        aside = path.with_name(f"{path.stem}.stale-{time.strftime('%Y%m%d-%H%M%S')}{path.suffix}")
        os.replace(path, aside)
        log(f"   {path.name} was made from other inputs; moved it to {aside.name} and redoing it")
    atomic_write_text(_stamp_path(path), inputs_hash)


def run_recipe(recipe: Recipe, out_dir: str | Path, recipe_text: str | None = None) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "recipe.yaml", recipe_text or yaml.safe_dump(recipe.model_dump(), sort_keys=False))
    fmt = ActionFormat(recipe.format)
    timings: dict[str, float] = {}
    timings_path = out / "timings.json"
    if timings_path.exists():
        timings = json.loads(timings_path.read_text())

    def stage(name: str, fn: Callable[[], None]) -> None:
        if name not in recipe.stages:
            return
        log(f"[bold cyan]== {name}[/]")
        t0 = time.perf_counter()
        fn()
        timings[name] = round(time.perf_counter() - t0, 1)
        atomic_write_text(timings_path, json.dumps(timings, indent=2))
        log(f"   {name} took {timings[name]:.0f}s")

    demos = out / "demos.jsonl"
    train_file = out / "train.jsonl"
    adapter = out / "adapter"

    def do_collect() -> None:
        inputs = {"env": recipe.env, "collect": recipe.collect, "seed": recipe.seed, "format": recipe.format}
        if recipe.collect.policy != "expert":
            inputs["model"] = recipe.model
        ensure_fresh(demos, fingerprint(inputs))
        policy = make_collect_policy(recipe, fmt)
        res = collect(
            recipe.env.id, recipe.env.kwargs, policy, recipe.collect.split, recipe.collect.episodes, demos,
            seed=recipe.seed, settings=rollout_settings(recipe.collect.rollout),
        )
        all_trajs = read_trajectories(demos)
        ok = sum(t.success for t in all_trajs)
        log(f"   {len(all_trajs)} episodes in {demos} ({res.skipped} already there), {ok} successful")

    def do_build() -> None:
        builder = make_builder(recipe.trainer.name, recipe.trainer.options)
        built = builder.build(read_trajectories(demos), BuildContext(seed=recipe.seed, model=recipe.model))
        write_trajectories(train_file, built)
        s = builder.stats
        log(
            f"   {recipe.trainer.name}: {s.trajectories_out}/{s.trajectories_in} trajectories, "
            f"loss on {s.loss_steps}/{s.steps} steps; dropped {s.dropped or 'none'}"
        )

    def do_train() -> None:
        trajs = read_trajectories(train_file)
        # checkpoints of the same inputs are resumed; an adapter of other inputs is moved aside
        ensure_fresh(adapter, fingerprint({"data": data_hash(trajs), "train": recipe.train, "model": recipe.model,
                                           "format": recipe.format}))
        if is_adapter_complete(adapter):
            log(f"   adapter in {adapter} matches the data and settings; skipping")
            return
        metrics = train_lora(trajs, recipe.model, adapter, recipe.train, fmt, recipe=recipe.model_dump())
        log(
            f"   trained {metrics['global_step']} steps, loss {metrics['train_loss']:.3f}, "
            f"{metrics['train_tokens_per_s']} tokens/s"
        )

    report: dict = {}

    def do_eval() -> None:
        nonlocal report
        ensure_fresh(out / "eval", fingerprint({
            "env": recipe.env, "eval": recipe.eval, "seed": recipe.seed, "format": recipe.format,
            "model": recipe.model, "adapter": stamp_of(adapter),
        }))
        report = evaluate(recipe, adapter if "adapter" in recipe.eval.policies else None, out, fmt)

    if recipe.rounds is not None:  # iterative self-training: agentclone.iterate
        from agentclone.iterate import run_rounds

        return run_rounds(recipe, out, fmt, timings, timings_path)
    stage("collect", do_collect)
    if recipe.variants:  # a comparison of trainers on the same data and seeds: agentclone.comparison
        from agentclone.comparison import run_variants

        return run_variants(recipe, out, fmt, timings, timings_path)
    stage("build", do_build)
    stage("train", do_train)
    stage("eval", do_eval)
    return {"timings": timings, "report": report}


def evaluate(recipe: Recipe, adapter: Path | None, out: Path, fmt: ActionFormat) -> dict:
    """Run base and adapter on held-out tasks with the same episodes and seeds; write the report."""
    spec = recipe.eval
    gen = GenerationSettings(
        max_new_tokens=spec.generation.max_new_tokens,
        temperature=spec.generation.temperature,
        top_p=spec.generation.top_p,
        seed=recipe.seed,
    )
    results: dict[str, list[Trajectory]] = {}
    eval_dir = out / "eval"
    run_info: dict = {"env": recipe.env.id, "env_kwargs": recipe.env.kwargs, "model": recipe.model}
    for name in spec.policies:
        options = dict(spec.backend_options, model=recipe.model, batch_size=spec.generation.batch_size, generation=gen)
        if name == "adapter":
            if adapter is None or not (adapter / "adapter_config.json").exists():
                raise FileNotFoundError(f"no adapter to evaluate in {adapter}; run the train stage first")
            options["adapter"] = str(adapter)
        policy = make_policy(spec.backend, fmt=fmt, **options)
        try:
            t0 = time.perf_counter()
            collect(
                recipe.env.id, recipe.env.kwargs, policy, spec.split, spec.episodes, eval_dir / f"{name}.jsonl",
                seed=recipe.seed + 1000, settings=rollout_settings(spec.rollout), description=f"eval {name}",
            )
            run_info[f"{name}_wall_s"] = round(time.perf_counter() - t0, 1)
        finally:
            policy.close()
        results[name] = read_trajectories(eval_dir / f"{name}.jsonl")
    report = write_report(results, out, title=f"{recipe.name}: held-out evaluation", extra=run_info)
    for name in spec.policies:
        r = report[name]
        log(f"   {name}: success {r['success_rate']:.1%} of {r['episodes']} (invalid actions {r['invalid_action_rate']:.1%})")
    return report
