"""Recipes: one YAML file describing collect, build, train and evaluate.

Validated with pydantic: an unknown key or a wrong type is one error naming the
file, the YAML path and the allowed keys. YAML is read with the safe loader and
a recipe can only name registered plugins, never import paths.

``defaults: [name, ...]`` merges presets from ``configs/<name>.yaml`` beneath the
recipe (the recipe wins), so shared model / LoRA / generation settings live once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentclone.curate import CurateOptions as CurateSpec  # a recipe's curate: section is curate's options
from agentclone.training import TrainSettings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _renamed_trainer_key(data: Any, where: str) -> Any:
    """``trainer:`` was the old name of ``builder:`` (it names a data builder, not the optimiser)."""
    if isinstance(data, dict) and "trainer" in data:
        import warnings

        if "builder" in data:
            raise ValueError(f"{where}: both 'builder' and its old name 'trainer' are set; keep 'builder'")
        warnings.warn(f"{where}: the key 'trainer:' is now 'builder:' (a data builder); rename it", FutureWarning,
                      stacklevel=2)
        data = dict(data)
        data["builder"] = data.pop("trainer")
    return data


class EnvSpec(_Strict):
    id: str = Field(description="registered environment id, e.g. textcraft/craft-v1")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword overrides for the environment")


class GenerationSpec(_Strict):
    max_new_tokens: int = Field(64, description="tokens per answer at most")
    temperature: float = Field(0.0, description="0 = greedy")
    top_p: float = Field(1.0)
    batch_size: int = Field(32, description="sequences per generate call")


class RolloutSpec(_Strict):
    concurrency: int = Field(16, description="episodes run at once (one batched policy call per step)")
    max_prompt_tokens: int = Field(1536, description="history budget; oldest turns are dropped beyond it")
    max_consecutive_invalid: int | None = Field(None, description="end an episode after this many invalid actions in a row")


class FileSourceSpec(_Strict):
    """Demonstrations read from a file instead of collected: ``agentclone import``'s reading and rules."""

    path: str = Field(..., description="a trajectory file or folder: JSON, JSON Lines, Parquet, a dataset folder")
    format: str = Field("agentclone", description="its format: agentclone (agentclone's own trajectories), agentgym, "
                        "sharegpt, openai, llamafactory, or a plugin's")
    split: str = Field("train", description="the split to read from a dataset folder")
    successful: bool = Field(False, description="mark the imported trajectories successful (the formats other than "
                             "agentclone do not say; the bc builder keeps only successful ones)")
    loss: Literal["all", "last"] = Field("all", description="assistant turns without a loss flag in the file: all, "
                                         "or only each conversation's last")


class CollectSpec(_Strict):
    from_file: FileSourceSpec | None = Field(
        None, description="read the demonstrations from this file instead of collecting them (imported as "
        "`agentclone import` does, with env_id = env.id); the other collect keys then do not apply",
    )
    policy: str = Field("expert", description="policy backend: expert, hf, ...")
    split: Literal["train", "heldout"] = "train"
    episodes: int | None = Field(None, description="episodes to run; None = every task of the split once")
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    adapter: str | None = Field(None, description="model policies: a LoRA adapter to collect with")
    generation: GenerationSpec = Field(
        default_factory=GenerationSpec, description="model policies: sampling (temperature > 0 for varied rollouts)"
    )
    backend_options: dict[str, Any] = Field(default_factory=dict, description="model policies: the backend's own options")
    expert_labels: bool = Field(
        False, description="model policies: ask the environment's expert at every state the policy visits what it "
        "would do, and store it with the step (LEAP / DAgger and preference pairs need it)",
    )
    expert_beta: float = Field(
        0.0, ge=0.0, le=1.0,
        description="with expert_labels: the expert takes each step with this probability (DAgger's beta mixing)",
    )

    @model_validator(mode="before")
    @classmethod
    def _removed_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and "only_successful" in data:
            raise ValueError("collect.only_successful was removed (it never filtered anything); the builder "
                             "decides what to train on: builder.options.only_successful")
        return data

    @model_validator(mode="after")
    def _file_or_collection(self) -> "CollectSpec":
        if self.from_file is not None:
            clash = sorted(self.model_fields_set - {"from_file"})
            if clash:
                raise ValueError(f"from_file reads the demonstrations instead of collecting them; remove "
                                 f"{', '.join(clash)} (they only apply to a collection)")
        return self


class BuilderSpec(_Strict):
    name: str = Field("bc", description="registered data builder: bc, critical, reflection, leap, ...")
    options: dict[str, Any] = Field(default_factory=dict, description="the builder's own options")


TrainerSpec = BuilderSpec  # the old name


class EvalSpec(_Strict):
    split: Literal["train", "heldout"] = "heldout"
    episodes: int | None = Field(None, description="episodes per policy; None = every held-out task once")
    policies: list[Literal["base", "adapter"]] = Field(default_factory=lambda: ["base", "adapter"])
    backend: str = Field("hf", description="policy backend for evaluation")
    backend_options: dict[str, Any] = Field(
        default_factory=dict, description="the backend's own options, e.g. base_url for openai, engine for vllm"
    )
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    expert_labels: bool = Field(
        False, description="label every state the evaluated policy visits with the expert's action: the report "
        "gives the agreement with the expert on the agent's own states",
    )


class RoundsSpec(_Strict):
    count: int = Field(2, ge=1, description="rounds of collect (current policy), build, train, evaluate")
    start_adapter: str | None = Field(None, description="the round-1 policy, e.g. a behaviour-cloning adapter; None: the base model")
    start_from: str | None = Field(
        None, description="in variants: start from the adapter of this (earlier, non-round) variant instead of start_adapter"
    )
    collect_episodes: int | None = Field(None, description="training-task rollouts of the current policy per round; None: every task once")
    collect: CollectSpec | None = Field(
        None, description="how each round collects (a model policy, sampling, expert_labels); None: the recipe's collect"
    )
    train_from: Literal["previous", "start"] = Field(
        "previous", description="each round continues the previous round's adapter, or retrains from the start policy"
    )
    baseline: BuilderSpec | None = Field(
        default_factory=lambda: BuilderSpec(name="bc"),
        description="continue this builder on expert demonstrations for the same training tokens each round (None: no baseline)",
    )


class VariantSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="variant name, also its folder DIR/variants/<name>")
    builder: BuilderSpec = Field(description="the data builder of this variant")
    train: dict[str, Any] = Field(default_factory=dict, description="overrides of the recipe's train settings")
    rounds: RoundsSpec | None = Field(None, description="run this variant in rounds (e.g. LEAP after a BC variant)")
    curate: CurateSpec | None = Field(None, description="curate the demonstrations for this variant (None: the recipe's "
                                      "curate; {} for none)")

    @model_validator(mode="before")
    @classmethod
    def _old_key(cls, data: Any) -> Any:
        return _renamed_trainer_key(data, "variants")


class Recipe(_Strict):
    name: str = "recipe"
    description: str = ""
    seed: int = 0
    defaults: list[str] = Field(default_factory=list, description="presets from configs/ merged beneath")
    env: EnvSpec
    model: str = Field("smollm2-135m", description="model alias, local directory or hub id")
    format: Literal["thought-action", "action"] = Field("thought-action", description="how the agent answers")
    collect: CollectSpec = Field(default_factory=CollectSpec)
    curate: CurateSpec | None = Field(
        None, description="filter the demonstrations before the build (agentclone curate's filters); the report is "
        "curate.json beside the curated file",
    )
    builder: BuilderSpec = Field(default_factory=BuilderSpec, description="the data builder: trajectories -> training samples")
    train: TrainSettings = Field(default_factory=TrainSettings)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    stages: list[Literal["collect", "build", "train", "eval"]] = Field(
        default_factory=lambda: ["collect", "build", "train", "eval"]
    )
    variants: list[VariantSpec] = Field(
        default_factory=list,
        description="a comparison: collect and evaluate the base once, then build, train and evaluate each "
        "variant on the same data and seeds (the recipe's builder is not used)",
    )
    rounds: RoundsSpec | None = Field(
        None, description="iterative training (agentclone.rounds): each round's adapter is the next round's policy"
    )

    @model_validator(mode="before")
    @classmethod
    def _old_key(cls, data: Any) -> Any:
        return _renamed_trainer_key(data, "recipe")


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file, the YAML path and the fix."""


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Walk the models along ``loc`` to list the keys allowed at the failing place."""
    current: Any = model
    for part in loc[:-1]:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            return []
        current = field.annotation
        # unwrap Optional / default_factory models
        args = getattr(current, "__args__", None)
        if args:
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            current = models[0] if models else current
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def find_config(name: str, recipe_path: Path) -> Path:
    if "/" in name and ".." in Path(name).parts:
        raise RecipeError(f"{recipe_path}: defaults: {name!r} must not leave the configs folder")
    candidates = [
        recipe_path.parent.parent / "configs" / f"{name}.yaml",
        recipe_path.parent / "configs" / f"{name}.yaml",
        Path.cwd() / "configs" / f"{name}.yaml",
    ]
    for c in candidates:
        if c.exists():
            return c
    raise RecipeError(f"{recipe_path}: defaults: no preset {name!r} (looked for configs/{name}.yaml)")


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"recipe not found: {path}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise RecipeError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not valid UTF-8 text") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of keys (env, model, train, ...), got {type(data).__name__}")
    return data


def load_recipe(path: str | Path, overrides: dict | None = None) -> Recipe:
    path = Path(path)
    data = _read_yaml(path)
    defaults = data.get("defaults", [])
    if not isinstance(defaults, list) or not all(isinstance(d, str) for d in defaults):
        raise RecipeError(f"{path}: defaults: expected a list of preset names from configs/")
    merged: dict = {}
    for name in defaults:
        merged = _merge(merged, _read_yaml(find_config(name, path)))
    merged = _merge(merged, data)
    if overrides:
        merged = _merge(merged, overrides)
    return validate_recipe(merged, str(path))


def validate_recipe(data: dict, source: str = "<recipe>") -> Recipe:
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        more = f" ({exc.error_count() - 1} more problem(s) after this one)" if exc.error_count() > 1 else ""
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(Recipe, loc)
            raise RecipeError(
                f"{source}: {dotted}: unknown key; allowed keys here: {', '.join(allowed)}{more}"
            ) from None
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "value_error":
            raise RecipeError(f"{source}: {dotted}: {msg}{more}") from None
        raise RecipeError(f"{source}: {dotted}: {msg} (got {err.get('input')!r}){more}") from None
    _check_plugins(recipe, source)
    _check_builder(recipe.builder, recipe.train, f"{source}: builder", f"{source}: train")
    _check_curate(recipe, source)
    _check_variants(recipe, source)
    _check_rounds(recipe, source)
    return recipe


def _check_builder(spec: BuilderSpec, train: TrainSettings, where: str, train_where: str) -> None:
    """The builder exists and takes its options; the objective exists, takes the builder's samples and
    its TRL config accepts the train settings."""
    from agentclone.builders.base import make_builder
    from agentclone.errors import UserError
    from agentclone.objectives import make_objective
    from agentclone.training import check_train_settings

    try:
        builder = make_builder(spec.name, spec.options)
    except (KeyError, ValueError, UserError) as exc:
        raise RecipeError(f"{where}: {str(exc).strip(chr(34) + chr(39))}") from None
    try:
        objective = make_objective(train.objective)
        check_train_settings(train)
    except UserError as exc:
        raise RecipeError(f"{train_where}: {exc}") from None
    if builder.sample_kind not in objective.accepts:
        raise RecipeError(
            f"{where}: the {spec.name} builder makes {builder.sample_kind} samples, but the objective "
            f"{objective.name!r} (train.objective) trains on {', '.join(objective.accepts)}"
        )


def variant_curate(recipe: Recipe, variant: VariantSpec) -> CurateSpec | None:
    return variant.curate if variant.curate is not None else recipe.curate


def _check_curate(recipe: Recipe, source: str) -> None:
    """Curation applies to plain runs and variants without rounds, and its loss flags must reach training."""
    if recipe.curate is not None and recipe.rounds is not None:
        raise RecipeError(f"{source}: curate applies to the demonstrations of a plain run or of variants; rounds "
                          f"train on their own rollouts (remove curate, or curate the file first with agentclone curate)")
    pairs = [("", recipe.curate, recipe.builder)] if not recipe.variants else [
        (f"variants.{i}.", variant_curate(recipe, v), v.builder) for i, v in enumerate(recipe.variants)
        if v.rounds is None]
    for where, curate, builder in pairs:
        if curate is not None and curate.drop_conflicting and builder.name == "bc" \
                and not builder.options.get("keep_loss_off"):
            raise RecipeError(f"{source}: {where}builder.options.keep_loss_off: curate.drop_conflicting turns off the "
                              f"loss of conflicting steps, which the bc builder turns back on unless "
                              f"keep_loss_off: true")
    for i, v in enumerate(recipe.variants):
        if v.rounds is not None and v.curate is not None:
            raise RecipeError(f"{source}: variants.{i}.curate: a variant with rounds trains on its own rollouts; "
                              f"curate applies to variants without rounds")


def _check_rounds(recipe: Recipe, source: str) -> None:
    names = [v.name for v in recipe.variants]
    for i, variant in enumerate(recipe.variants):
        r = variant.rounds
        if r is not None and r.start_from is not None:
            earlier = [v.name for v in recipe.variants[:i] if v.rounds is None]
            if r.start_from not in earlier:
                raise RecipeError(f"{source}: variants.{i}.rounds.start_from: {r.start_from!r} is not an earlier "
                                  f"variant without rounds (earlier: {', '.join(earlier) or 'none'})")
    if recipe.rounds is not None and recipe.rounds.start_from is not None:
        raise RecipeError(f"{source}: rounds.start_from names a variant ({recipe.rounds.start_from!r}); it only "
                          f"applies inside variants ({', '.join(names) or 'none here'}); use rounds.start_adapter")
    for where, spec in [("rounds", recipe.rounds)] + [(f"variants.{i}.rounds", v.rounds)
                                                      for i, v in enumerate(recipe.variants)]:
        if spec is None:
            continue
        collect = spec.collect or recipe.collect
        if collect.from_file is not None:
            raise RecipeError(f"{source}: {where}.collect: rounds collect with the policy of each round, so they need "
                              f"their own collect (a model policy); collect.from_file only gives the demonstrations")
        if collect.expert_beta > 0 and not collect.expert_labels:
            raise RecipeError(f"{source}: {where}.collect.expert_beta needs expert_labels: true")


def variant_train_settings(recipe: Recipe, variant: VariantSpec) -> TrainSettings:
    """The recipe's train settings with the variant's overrides merged on top."""
    return TrainSettings.model_validate(_merge(recipe.train.model_dump(), variant.train))


def _check_variants(recipe: Recipe, source: str) -> None:
    """Each variant: a unique name, a registered builder with valid options, valid train overrides."""
    seen: set[str] = set()
    for i, variant in enumerate(recipe.variants):
        where = f"{source}: variants.{i}"
        if variant.name in seen:
            raise RecipeError(f"{where}.name: variant {variant.name!r} appears twice; names must be unique")
        seen.add(variant.name)
        try:
            settings = variant_train_settings(recipe, variant)
        except ValidationError as exc:
            err = exc.errors()[0]
            dotted = ".".join(str(p) for p in err["loc"])
            raise RecipeError(f"{where}.train.{dotted} ({variant.name}): {err['msg']} (got {err.get('input')!r})") from None
        _check_builder(variant.builder, settings, f"{where}.builder ({variant.name})", f"{where}.train ({variant.name})")


def _check_plugins(recipe: Recipe, source: str) -> None:
    from agentclone.plugins import get_registry

    reg = get_registry()
    if recipe.env.id not in reg.environments:
        raise RecipeError(
            f"{source}: env.id: unknown environment {recipe.env.id!r}; registered: "
            f"{', '.join(sorted(reg.environments)) or 'none (install an environment plugin)'}"
        )
    try:
        from agentclone.envs import check_env_options
    except ImportError:  # pragma: no cover
        check_env_options = None
    if check_env_options is not None:
        from agentclone.errors import UserError

        try:
            check_env_options(recipe.env.id, recipe.env.kwargs)
        except UserError as exc:
            raise RecipeError(f"{source}: env.kwargs: {exc}") from None
    from agentclone.models import ModelNotFoundError, check_model

    try:
        check_model(recipe.model)
    except ModelNotFoundError as exc:
        raise RecipeError(f"{source}: model: {exc}") from None
    data_file = recipe.collect.from_file
    if data_file is not None:
        if not Path(data_file.path).exists():
            raise RecipeError(f"{source}: collect.from_file.path: no such file or folder: {data_file.path}")
        if data_file.format not in reg.formats:
            raise RecipeError(f"{source}: collect.from_file.format: unknown trajectory format {data_file.format!r}; "
                              f"registered: {', '.join(sorted(reg.formats))}")
    specs = [("collect", "policy", recipe.collect), ("eval", "backend", recipe.eval)]
    specs += [(f"{w}.collect", "policy", r.collect) for w, r in
              [("rounds", recipe.rounds)] + [(f"variants.{i}.rounds", v.rounds) for i, v in enumerate(recipe.variants)]
              if r is not None and r.collect is not None]
    from agentclone.errors import UserError
    from agentclone.plugins import check_options

    for where, field, spec in specs:
        backend = getattr(spec, field)
        if backend not in reg.policy_backends:
            raise RecipeError(
                f"{source}: {where}.{field}: unknown policy backend {backend!r}; "
                f"registered: {', '.join(sorted(reg.policy_backends))}"
            )
        if backend == "expert":  # no model, no options (agentclone.stages.make_collect_policy)
            continue
        try:  # the options a stage will create the policy with (agentclone.stages), before any stage runs
            check_options("policy_backend", backend, dict(spec.backend_options, model=recipe.model,
                                                           batch_size=spec.generation.batch_size))
        except UserError as exc:
            raise RecipeError(f"{source}: {where}.backend_options: {exc}") from None
