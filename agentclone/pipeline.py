"""Running a recipe: a plain run, ``variants:`` or ``rounds:``, all made of the same stages.

The stages and their runner live in ``agentclone.stages``; ``agentclone.variants`` and
``agentclone.rounds`` arrange them for comparisons and iterations. A plain run's output::

    DIR/recipe.yaml          the validated recipe, as run
    DIR/demos.jsonl          collected trajectories (appended as episodes end; resumable)
    DIR/train.jsonl          the training samples the builder made; DIR/build.json its counts
    DIR/adapter/             LoRA adapter, tokenizer, agentclone.json (manifest), metrics.json, checkpoints/
    DIR/eval/base.jsonl      held-out rollouts of the base model
    DIR/eval/adapter.jsonl   held-out rollouts with the adapter
    DIR/report.{json,md,png} the evaluation report
    DIR/timings.json         wall time of each stage; DIR/stages.json which stages ran this time

Every output sits beside ``.NAME.inputs``, the fingerprint of what made it: a rerun skips what is
complete and current, resumes what is partial, and moves aside what other inputs made.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from agentclone.data import atomic_write_text
from agentclone.distributed import on_main
from agentclone.recipes import Recipe
from agentclone.stages import (  # noqa: F401  (the names callers import from here)
    StageRunner,
    build_stage,
    collect,
    collect_stage,
    curate_stage,
    ensure_fresh,
    eval_stage,
    evaluate,
    fingerprint,
    log,
    make_collect_policy,
    read_rollouts,
    report,
    rollout_settings,
    stamp_of,
    train_stage,
)


def run_recipe(recipe: Recipe, out_dir: str | Path, recipe_text: str | None = None) -> dict:
    """Run ``recipe`` into ``out_dir``; return timings, which stages ran, and the report or table."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    on_main(lambda: atomic_write_text(out / "recipe.yaml",
                                      recipe_text or yaml.safe_dump(recipe.model_dump(), sort_keys=False)))
    runner = StageRunner(out, recipe.stages)
    if recipe.variants:
        from agentclone.variants import run_variants

        result = run_variants(recipe, out, runner)
    elif recipe.rounds is not None:
        from agentclone.rounds import run_rounds

        result = run_rounds(recipe, out, runner)
    else:
        result = {"report": run_single(recipe, out, runner)}
    on_main(lambda: atomic_write_text(out / "stages.json", json.dumps(runner.outcomes, indent=2)))
    return {"timings": runner.timings, "stages": runner.outcomes, **result}


def run_single(recipe: Recipe, out: Path, runner: StageRunner) -> dict:
    """collect -> build -> train -> evaluate base and adapter."""
    demos, train_file, adapter = out / "demos.jsonl", out / "train.jsonl", out / "adapter"
    collect_stage(runner, "collect", recipe, recipe.collect, demos, seed=recipe.seed)
    demos = curate_stage(runner, "curate", recipe.curate, demos, out / "curated.jsonl")
    build_stage(runner, "build", recipe, recipe.builder, [demos], train_file, seed=recipe.seed)
    train_stage(runner, "train", recipe, recipe.train, train_file, adapter)
    results = {}
    for name in recipe.eval.policies:
        path = out / "eval" / f"{name}.jsonl"
        eval_stage(runner, f"eval {name}", recipe, adapter if name == "adapter" else None, path, name)
        if path.exists():
            results[name] = read_rollouts(path)
    if "eval" in recipe.stages and results:
        return report(recipe, results, out)
    return {}
