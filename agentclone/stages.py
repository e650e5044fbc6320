"""The one stage runner, and the four stages a recipe is made of: collect, build, train, evaluate.

A stage is a function with declared inputs and one output (a file or a folder). The runner

- fingerprints the inputs (``fingerprint``) and keeps the fingerprint beside the output
  (``.NAME.inputs``, JSON with ``inputs`` and ``done``);
- skips the stage when its output is complete (``done``) and was made from the same inputs;
- resumes a partial output of the same inputs (collections by episode id, training from
  checkpoints);
- moves aside, never deletes, an output of other inputs (``NAME.stale-TIME``) and redoes it;
- times and logs every stage, and records whether it ran or was skipped.

A downstream stage names the upstream's fingerprint among its inputs (an evaluation names
its adapter's, a round's collection names the policy's adapter's), so a changed setting
redoes exactly the stages that depend on it. A plain run, ``variants:`` and ``rounds:``
(agentclone.pipeline, agentclone.variants, agentclone.rounds) only arrange these stages.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection

from agentclone.data import (
    Trajectory,
    atomic_write_text,
    file_sha256,
    latest_per_id,
    read_trajectories,
    write_trajectories,
)
from agentclone.distributed import is_main, on_every, on_main, rank, together, world_size
from agentclone.envs import make_env
from agentclone.evaluation import write_report
from agentclone.memory import give_back
from agentclone.policies.base import GenerationSettings, Policy, make_policy
from agentclone.prompting import ActionFormat
from agentclone.recipes import CollectSpec, CurateSpec, EvalSpec, FileSourceSpec, Recipe, RolloutSpec, TrainerSpec
from agentclone.rollout import RolloutResult, RolloutSettings, plan_episodes, run_rollouts


def read_rollouts(path: str | Path) -> list[Trajectory]:
    """The episodes of a rollout file, one per episode id: a rerun appends a new record for an episode
    that errored before, and the newest record is the one that counts."""
    return latest_per_id(read_trajectories(path))


def log(msg: str) -> None:
    if not is_main():  # one log for a run of several processes
        return
    from rich.console import Console

    Console(stderr=True).print(msg)


# -- fingerprints and the runner ------------------------------------------------------------
def _payload(inputs: dict) -> str:
    return json.dumps(inputs, sort_keys=True, default=lambda o: o.model_dump() if hasattr(o, "model_dump") else str(o))


def fingerprint(inputs: dict) -> str:
    """A short hash of a stage's inputs (pydantic models included)."""
    return hashlib.sha256(_payload(inputs).encode()).hexdigest()[:16]


def input_values(inputs: dict) -> dict[str, Any]:
    """A stage's inputs as dotted keys and plain values (kept in its stamp, to say what changed)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = value

    walk("", json.loads(_payload(inputs)))
    return flat


_MISSING = object()


def changed_inputs(old: dict[str, Any], new: dict[str, Any], limit: int = 4) -> str:
    """``key (old -> new)`` for the inputs that differ, the first ``limit`` of them."""
    def show(v: Any) -> str:
        text = "unset" if v is _MISSING else json.dumps(v)
        return text if len(text) <= 40 else text[:37] + "..."

    keys = sorted(k for k in old.keys() | new.keys() if old.get(k, _MISSING) != new.get(k, _MISSING))
    parts = [f"{k} ({show(old.get(k, _MISSING))} -> {show(new.get(k, _MISSING))})" for k in keys[:limit]]
    return ", ".join(parts) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _stamp_path(path: Path) -> Path:
    return path.parent / f".{path.name}.inputs"


def _read_stamp(path: Path) -> dict | None:
    stamp = _stamp_path(path)
    if not stamp.exists():
        return None
    text = stamp.read_text().strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):  # a plain hash: written before stamps said whether the stage finished
        return {"inputs": text, "done": False}
    return data


def stamp_of(path: Path) -> str | None:
    """The fingerprint of the inputs that made ``path`` (None: not made by a stage)."""
    data = _read_stamp(Path(path))
    return data["inputs"] if data else None


def ensure_fresh(path: Path, inputs_hash: str, values: dict[str, Any] | None = None) -> bool:
    """Keep ``path`` if it was made from the same inputs, else move it aside; True when it is complete.

    Nothing is deleted: an output of other inputs becomes ``NAME.stale-TIMESTAMP`` and the stage redoes it.
    ``values`` (``input_values``) are kept in the stamp, so a later change can be named in the log.
    """
    from agentclone.rollout import merge_rank_parts

    path = Path(path)
    merge_rank_parts(path)  # what a killed collection of several processes left in part files: these inputs'
    old = _read_stamp(path)
    if path.exists() and old is not None and old["inputs"] != inputs_hash:
        aside = path.with_name(f"{path.stem}.stale-{time.strftime('%Y%m%d-%H%M%S')}{path.suffix}")
        n = 1
        while aside.exists():
            aside = path.with_name(f"{path.stem}.stale-{time.strftime('%Y%m%d-%H%M%S')}-{n}{path.suffix}")
            n += 1
        os.replace(path, aside)
        what = changed_inputs(old["values"], values) if values is not None and "values" in old else ""
        log(f"   {path.name} was made from other inputs{': ' + what if what else ''}; moved it to "
            f"{aside.name} and redoing it")
        old = None
    done = bool(old and old["inputs"] == inputs_hash and old.get("done") and path.exists())
    if not done:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_stamp(path, inputs_hash, False, values)
    return done


def _write_stamp(path: Path, inputs_hash: str, done: bool, values: dict[str, Any] | None) -> None:
    stamp: dict[str, Any] = {"inputs": inputs_hash, "done": done}
    if values is not None:
        stamp["values"] = values
    atomic_write_text(_stamp_path(Path(path)), json.dumps(stamp))


def mark_done(path: Path, inputs_hash: str, values: dict[str, Any] | None = None) -> None:
    _write_stamp(path, inputs_hash, True, values)


#: stage kinds every process of ``accelerate launch`` runs together: collections and evaluations split
#: their episodes, training is data-parallel; a build runs on the main process while the others wait
SHARED_KINDS = ("collect", "eval", "train")


@dataclass
class StageRunner:
    """Runs stages under one output folder; ``enabled`` are the recipe's ``stages`` kinds."""

    out: Path
    enabled: Collection[str] = ("collect", "build", "train", "eval")
    timings: dict[str, float] = field(default_factory=dict)
    #: what happened to each stage in this run: "ran", "skipped" (complete and current) or "disabled"
    outcomes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "timings.json"
        if path.exists():
            self.timings = json.loads(path.read_text())

    def run(self, name: str, kind: str, output: Path, inputs: dict | Callable[[], dict], fn: Callable[[], Any],
            complete: Callable[[], bool] | None = None) -> str | None:
        """Run stage ``name`` unless its output is complete and current; return its inputs' fingerprint.
        ``inputs`` may be a function, called only when the stage's kind is enabled (its input files may not
        exist otherwise: an eval-only recipe has no demonstrations to hash)."""
        if kind not in self.enabled:
            self.outcomes[name] = "disabled"
            return stamp_of(output)
        given = inputs() if callable(inputs) else inputs
        h, values = fingerprint(given), input_values(given)
        log(f"[bold cyan]== {name}[/]")

        def skip() -> bool:
            done = ensure_fresh(output, h, values)
            # an output of these inputs that proves itself complete (an adapter's manifest) is kept even when
            # the process died between writing it and marking the stage done
            return (done and (complete is None or complete())) or (complete is not None and complete())

        # under accelerate launch: the main process decides and moves files, the others wait for its answer
        if on_main(skip, f"checking {name}'s output"):
            log(f"   {Path(output).name} is complete and its inputs are unchanged; skipping")
            self.outcomes[name] = "skipped"
            return h
        t0 = time.perf_counter()
        if kind in SHARED_KINDS:
            fn()  # a process that fails exits, and accelerate launch stops the others
        else:
            on_main(fn, name)
        self.timings[name] = round(time.perf_counter() - t0, 1)
        self.outcomes[name] = "ran"
        freed = give_back()  # the next stage of this process does not start from this one's peak

        def record() -> None:
            mark_done(output, h, values)
            atomic_write_text(self.out / "timings.json", json.dumps(self.timings, indent=2))
            atomic_write_text(self.out / "stages.json", json.dumps(self.outcomes, indent=2))

        on_main(record, f"recording {name}")
        log(f"   {name} took {self.timings[name]:.0f}s"
            + (f"; {freed / 1e9:.1f} GB of memory given back" if freed >= 1e8 else ""))
        return h


def adapter_fingerprint(adapter: str | Path | None) -> str | None:
    """What identifies an adapter as a stage input: its stage stamp, else its weights' hash."""
    if adapter is None:
        return None
    adapter = Path(adapter)
    stamp = stamp_of(adapter)
    if stamp is not None:
        return stamp
    weights = adapter / "adapter_model.safetensors"
    return file_sha256(weights)[:16] if weights.exists() else str(adapter)


# -- collect --------------------------------------------------------------------------------
def rollout_settings(spec: RolloutSpec, expert_labels: bool = False, expert_beta: float = 0.0) -> RolloutSettings:
    return RolloutSettings(
        concurrency=spec.concurrency,
        max_prompt_tokens=spec.max_prompt_tokens,
        max_consecutive_invalid=spec.max_consecutive_invalid,
        expert_labels=expert_labels,
        expert_beta=expert_beta if expert_labels else 0.0,
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
        # e.g. compile generated games once, in parallel (into a cache: the main process alone)
        on_main(lambda: probe.prepare([e.task for e in plan]))
    finally:
        probe.close()
    if shard is None and together():
        return _collect_split(env_id, env_kwargs, policy, plan, output, settings, description)
    return run_rollouts(
        lambda: make_env(env_id, **env_kwargs),
        policy,
        plan,
        settings=settings,
        output=output,
        env_kwargs=env_kwargs,
        description=description,
    )


def _collect_split(env_id: str, env_kwargs: dict, policy: Policy, plan: list, output: Path,
                   settings: RolloutSettings | None, description: str) -> RolloutResult:
    """One collection across the processes of ``accelerate launch``: each runs its share of the episodes
    not yet in ``output`` into its own part file, then the main process appends the parts to ``output``.
    The episodes (ids, seeds, tasks) are those of a single-process run; a rerun resumes by episode id."""
    from agentclone.rollout import completed_ids, merge_rank_parts, rank_part

    on_main(lambda: merge_rank_parts(output), "merging a killed run's part files")
    done = completed_ids(output)
    todo = [e for e in plan if e.id not in done]
    mine = todo[rank()::world_size()]
    res = on_every(lambda: run_rollouts(lambda: make_env(env_id, **env_kwargs), policy, mine, settings=settings,
                                        output=rank_part(output, rank()), env_kwargs=env_kwargs,
                                        description=f"{description} [process {rank()}]"), description)
    res.skipped += len(plan) - len(todo)
    on_main(lambda: merge_rank_parts(output), f"merging {output}'s part files")
    return res


def make_collect_policy(recipe: Recipe, fmt: ActionFormat, adapter: str | Path | None = None,
                        spec: CollectSpec | None = None) -> Policy:
    """A collection's policy: the expert, or a model (the recipe's model, the adapter, sampling settings)."""
    spec = spec or recipe.collect
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


def source_fingerprint(path: Path) -> str:
    """What identifies a data file or folder's content: its sha256, or a folder's files' names and sha256s."""
    if path.is_file():
        return file_sha256(path)
    files = sorted(p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                           p.relative_to(path).parts))
    return fingerprint({str(p.relative_to(path)): file_sha256(p) for p in files})


def import_stage(runner: StageRunner, name: str, recipe: Recipe, source: FileSourceSpec, output: Path) -> str | None:
    """The demonstrations of ``source`` (a file in any registered format) as agentclone trajectories in ``output``;
    redone when the file's content changes."""
    from agentclone.formats import ImportOptions, import_file, make_format

    path = Path(source.path)
    inputs = {"from_file": source, "content": source_fingerprint(path), "env": recipe.env.id,
              "format": recipe.format}

    def run() -> None:
        opts = ImportOptions(env_id=recipe.env.id, success=source.successful, loss=source.loss,
                             fmt=ActionFormat(recipe.format))
        stats = import_file(make_format(source.format), path, output, opts, split=source.split)
        log(f"   imported {stats.records} trajectories ({stats.steps} steps, loss on {stats.loss_steps}) from "
            f"{path} ({source.format}) into {output}")

    # one file to write: under accelerate launch the main process imports it while the others wait
    return runner.run(name, "collect", output, inputs, lambda: on_main(run, f"importing {path}"))


def collect_stage(runner: StageRunner, name: str, recipe: Recipe, spec: CollectSpec, output: Path, seed: int,
                  episodes: int | None = None, adapter: str | Path | None = None) -> str | None:
    """Collect ``spec``'s rollouts on training tasks into ``output`` (resumed by episode id), or import them
    from ``spec.from_file``."""
    if spec.from_file is not None:
        return import_stage(runner, name, recipe, spec.from_file, output)
    fmt = ActionFormat(recipe.format)
    inputs: dict[str, Any] = {"env": recipe.env, "collect": spec, "seed": seed, "format": recipe.format,
                              "episodes": episodes if episodes is not None else spec.episodes}
    if spec.policy != "expert":
        inputs["model"] = recipe.model
        inputs["adapter"] = adapter_fingerprint(adapter if adapter is not None else spec.adapter)

    def run() -> None:
        policy = make_collect_policy(recipe, fmt, adapter=adapter, spec=spec)
        try:
            res = collect(recipe.env.id, recipe.env.kwargs, policy, spec.split,
                          episodes if episodes is not None else spec.episodes, output, seed=seed,
                          settings=rollout_settings(spec.rollout, spec.expert_labels and spec.policy != "expert",
                                                    spec.expert_beta),
                          description=name)
        finally:
            policy.close()
        trajs = read_rollouts(output)
        log(f"   {len(trajs)} episodes in {output} ({res.skipped} already there), "
            f"{sum(t.success for t in trajs)} successful, {sum(bool(t.error) for t in trajs)} errored")

    return runner.run(name, "collect", output, inputs, run)


# -- curate ---------------------------------------------------------------------------------
def curate_stage(runner: StageRunner, name: str, spec: CurateSpec | None, source: Path, output: Path) -> Path:
    """``source`` curated with ``spec``'s filters into ``output``, its report in ``curate.json`` beside it;
    the file the build should read (``source`` itself when there is nothing to curate). A part of the build
    stage kind: ``stages: [build, ...]`` curates too."""
    if spec is None:
        return source
    from agentclone.curate import curate_file

    inputs = {"curate": spec, "source": file_sha256(source) if source.exists() else None}

    def run() -> None:
        result = curate_file(source, output, spec)
        atomic_write_text(output.parent / "curate.json", json.dumps(result, indent=2, default=str))
        removed = "; ".join(f"{reason}: {', '.join(f'{v} {k}' for k, v in counts.items())}"
                            for reason, counts in result["removed"].items()) or "nothing (no filter on)"
        log(f"   {result['before']['episodes']} trajectories -> {result['after']['episodes']}; removed {removed}")

    runner.run(name, "build", output, inputs, run)  # a build kind: the runner runs it on the main process alone
    return output


# -- build ----------------------------------------------------------------------------------
def build_stage(runner: StageRunner, name: str, recipe: Recipe, builder_spec: TrainerSpec, sources: list[Path],
                output: Path, seed: int, expert_demos: Path | None = None,
                earlier: list[Path] | None = None) -> str | None:
    """Build ``output`` (training samples) from ``sources`` with a builder; ``build.json`` beside it."""
    from agentclone.builders.base import BuildContext, make_builder

    earlier = earlier or []

    def inputs() -> dict:
        return {"builder": builder_spec, "sources": [file_sha256(p) for p in sources],
                "expert_demos": file_sha256(expert_demos) if expert_demos else None,
                "earlier": [file_sha256(p) for p in earlier], "seed": seed, "model": recipe.model,
                "format": recipe.format}

    def run() -> None:
        builder = make_builder(builder_spec.name, builder_spec.options)
        trajs: list[Trajectory] = [t for p in sources for t in read_rollouts(p)]
        context = BuildContext(
            seed=seed, model=recipe.model, format=recipe.format,
            expert_demos=read_rollouts(expert_demos) if expert_demos else None,
            earlier_rollouts=[read_rollouts(p) for p in earlier],
        )
        try:
            built = builder.build(trajs, context)
        finally:
            if hasattr(builder, "close"):
                builder.close()
        s = builder.stats
        meta = {"builder": builder_spec.name, "sample_kind": builder.sample_kind,
                "stats": {"trajectories_in": s.trajectories_in, "trajectories_out": s.trajectories_out,
                          "steps": s.steps, "loss_steps": s.loss_steps, "dropped": s.dropped},
                "report": getattr(builder, "report", {}) or getattr(builder, "counts", {})}
        if not built:
            from agentclone.errors import UserError

            raise UserError(f"{name}: the {builder_spec.name} builder made no training samples from "
                            f"{', '.join(map(str, sources))} (dropped: {s.dropped or 'nothing'})")
        write_trajectories(output, built)
        atomic_write_text(output.parent / "build.json", json.dumps(meta, indent=2, default=str))
        log(f"   {builder_spec.name}: {s.trajectories_out} samples from {s.trajectories_in} trajectories, "
            f"loss on {s.loss_steps}/{s.steps} steps; dropped {s.dropped or 'none'}")
        if meta["report"]:
            log(f"   {json.dumps(meta['report'], default=str)}")

    return runner.run(name, "build", output, inputs, run)


# -- train ----------------------------------------------------------------------------------
def train_stage(runner: StageRunner, name: str, recipe: Recipe, settings, data: Path, adapter: Path,
                init_adapter: str | Path | None = None, record: dict | None = None) -> str | None:
    """Train a LoRA adapter on ``data`` (resumes from checkpoints of the same inputs)."""
    from agentclone.training import data_hash, is_adapter_complete, train_lora

    from agentclone.objectives import make_objective

    objective = make_objective(settings.objective)

    def inputs() -> dict:
        trajs = objective.read_samples(data) if data.exists() else []
        # where the trainer logs (report_to) does not change the adapter: not an input
        return {"data": data_hash(trajs), "train": settings.model_dump(exclude={"report_to"}), "model": recipe.model,
                "format": recipe.format,
                "init_adapter": adapter_fingerprint(init_adapter)}

    def run() -> None:
        trajs = objective.read_samples(data)
        metrics = train_lora(trajs, recipe.model, adapter, settings, ActionFormat(recipe.format),
                             recipe=record or recipe.model_dump(), init_adapter=init_adapter)
        log(f"   trained {metrics['global_step']} steps, {metrics['tokens_trained']} tokens, "
            f"loss {metrics['train_loss']:.3f}, {metrics['train_tokens_per_s']} tokens/s")

    if "train" not in runner.enabled:
        runner.outcomes[name] = "disabled"
        return stamp_of(adapter)
    return runner.run(name, "train", adapter, inputs(), run, complete=lambda: is_adapter_complete(adapter))


# -- evaluate -------------------------------------------------------------------------------
def eval_settings(spec: EvalSpec) -> RolloutSettings:
    return rollout_settings(spec.rollout, spec.expert_labels)


def evaluate_policy(recipe: Recipe, adapter: str | Path | None, output: Path, label: str,
                    spec: EvalSpec | None = None) -> list[Trajectory]:
    """Held-out rollouts of the base model (``adapter=None``) or an adapter; the same episodes and seeds
    every time (seed + 1000)."""
    spec = spec or recipe.eval
    fmt = ActionFormat(recipe.format)
    gen = GenerationSettings(max_new_tokens=spec.generation.max_new_tokens, temperature=spec.generation.temperature,
                             top_p=spec.generation.top_p, seed=recipe.seed)
    options = dict(spec.backend_options, model=recipe.model, batch_size=spec.generation.batch_size, generation=gen)
    if adapter is not None:
        if not (Path(adapter) / "adapter_config.json").exists():
            from agentclone.errors import UserError

            raise UserError(f"no adapter to evaluate in {adapter} (adapter_config.json missing); run the train "
                            "stage first, or pass --adapter DIR")
        options["adapter"] = str(adapter)
    policy = make_policy(spec.backend, fmt=fmt, **options)
    try:
        collect(recipe.env.id, recipe.env.kwargs, policy, spec.split, spec.episodes, output,
                seed=recipe.seed + 1000, settings=eval_settings(spec), description=f"eval {label}")
    finally:
        policy.close()
    return read_rollouts(output)


def eval_stage(runner: StageRunner, name: str, recipe: Recipe, adapter: str | Path | None, output: Path,
               label: str) -> str | None:
    """Evaluate one policy into ``output`` (a JSONL file); redone when the adapter or eval settings change."""
    inputs = {"env": recipe.env, "eval": recipe.eval.model_copy(update={"policies": []}), "seed": recipe.seed,
              "format": recipe.format, "model": recipe.model, "adapter": adapter_fingerprint(adapter)}
    return runner.run(name, "eval", output, inputs, lambda: evaluate_policy(recipe, adapter, output, label))


def evaluate(recipe: Recipe, adapter: Path | None, out: Path, fmt: ActionFormat | None = None) -> dict:
    """Run base and adapter on held-out tasks with the same episodes and seeds; write the report in ``out``.

    (``agentclone eval``: no fingerprints, rollouts resume by episode id.)
    """
    results: dict[str, list[Trajectory]] = {}
    run_info: dict = {"env": recipe.env.id, "env_kwargs": recipe.env.kwargs, "model": recipe.model}
    if "adapter" in recipe.eval.policies and (adapter is None or not (Path(adapter) / "adapter_config.json").exists()):
        from agentclone.errors import UserError

        raise UserError(f"no adapter to evaluate in {adapter} (adapter_config.json missing); run the train "
                        "stage first, or pass --adapter DIR")
    for name in recipe.eval.policies:
        t0 = time.perf_counter()
        results[name] = evaluate_policy(recipe, adapter if name == "adapter" else None,
                                        Path(out) / "eval" / f"{name}.jsonl", name)
        run_info[f"{name}_wall_s"] = round(time.perf_counter() - t0, 1)
    return report(recipe, results, Path(out), run_info)


def report(recipe: Recipe, results: dict[str, list[Trajectory]], out: Path, extra: dict | None = None) -> dict:
    rep = on_main(lambda: write_report(results, out, title=f"{recipe.name}: held-out evaluation", extra=extra or {
        "env": recipe.env.id, "env_kwargs": recipe.env.kwargs, "model": recipe.model}), "writing the report")
    for name in results:
        r = rep[name]
        log(f"   {name}: success {r['success_rate']:.1%} of {r['episodes']} (invalid actions {r['invalid_action_rate']:.1%})")
    return rep
