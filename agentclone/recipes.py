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
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentclone.training import TrainSettings


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


class CollectSpec(_Strict):
    policy: str = Field("expert", description="policy backend: expert, hf, ...")
    split: Literal["train", "heldout"] = "train"
    episodes: int | None = Field(None, description="episodes to run; None = every task of the split once")
    only_successful: bool = Field(False, description="keep only successful episodes in the output file")
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    adapter: str | None = Field(None, description="model policies: a LoRA adapter to collect with")
    generation: GenerationSpec = Field(
        default_factory=GenerationSpec, description="model policies: sampling (temperature > 0 for varied rollouts)"
    )
    backend_options: dict[str, Any] = Field(default_factory=dict, description="model policies: the backend's own options")


class TrainerSpec(_Strict):
    name: str = Field("bc", description="registered trainer (data builder): bc, ...")
    options: dict[str, Any] = Field(default_factory=dict, description="the trainer's own options")


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


class VariantSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="variant name, also its folder DIR/variants/<name>")
    trainer: TrainerSpec = Field(description="the trainer (data builder) of this variant")
    train: dict[str, Any] = Field(default_factory=dict, description="overrides of the recipe's train settings")


class RoundsSpec(_Strict):
    count: int = Field(2, ge=1, description="rounds of collect (current policy, sampling), build, train, evaluate")
    start_adapter: str | None = Field(None, description="the round-1 policy, e.g. a behaviour-cloning adapter; None: the base model")
    collect_episodes: int | None = Field(None, description="training-task rollouts of the current policy per round; None: every task once")
    baseline: TrainerSpec | None = Field(
        default_factory=lambda: TrainerSpec(name="bc"),
        description="continue this trainer on expert demonstrations for the same training tokens each round (None: no baseline)",
    )


class Recipe(_Strict):
    name: str = "recipe"
    description: str = ""
    seed: int = 0
    defaults: list[str] = Field(default_factory=list, description="presets from configs/ merged beneath")
    env: EnvSpec
    model: str = Field("smollm2-135m", description="model alias, local directory or hub id")
    format: Literal["thought-action", "action"] = Field("thought-action", description="how the agent answers")
    collect: CollectSpec = Field(default_factory=CollectSpec)
    trainer: TrainerSpec = Field(default_factory=TrainerSpec)
    train: TrainSettings = Field(default_factory=TrainSettings)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    stages: list[Literal["collect", "build", "train", "eval"]] = Field(
        default_factory=lambda: ["collect", "build", "train", "eval"]
    )
    variants: list[VariantSpec] = Field(
        default_factory=list,
        description="a comparison: collect and evaluate the base once, then build, train and evaluate each "
        "variant on the same data and seeds (the recipe's trainer is not used)",
    )
    rounds: RoundsSpec | None = Field(
        None, description="iterative self-training (agentclone.iterate): each round's adapter is the next round's policy"
    )


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
        raise RecipeError(f"{source}: {dotted}: {err['msg']} (got {err.get('input')!r}){more}") from None
    _check_plugins(recipe, source)
    _check_variants(recipe, source)
    return recipe


def variant_train_settings(recipe: Recipe, variant: VariantSpec) -> TrainSettings:
    """The recipe's train settings with the variant's overrides merged on top."""
    return TrainSettings.model_validate(_merge(recipe.train.model_dump(), variant.train))


def _check_variants(recipe: Recipe, source: str) -> None:
    """Each variant: a unique name, a registered trainer with valid options, valid train overrides."""
    from agentclone.trainers.base import make_builder

    seen: set[str] = set()
    for i, variant in enumerate(recipe.variants):
        where = f"{source}: variants.{i}"
        if variant.name in seen:
            raise RecipeError(f"{where}.name: variant {variant.name!r} appears twice; names must be unique")
        seen.add(variant.name)
        try:
            make_builder(variant.trainer.name, variant.trainer.options)
        except (KeyError, ValueError) as exc:
            raise RecipeError(f"{where}.trainer ({variant.name}): {str(exc).strip(chr(34) + chr(39))}") from None
        try:
            variant_train_settings(recipe, variant)
        except ValidationError as exc:
            err = exc.errors()[0]
            dotted = ".".join(str(p) for p in err["loc"])
            raise RecipeError(f"{where}.train.{dotted} ({variant.name}): {err['msg']} (got {err.get('input')!r})") from None


def _check_plugins(recipe: Recipe, source: str) -> None:
    from agentclone.plugins import get_registry

    reg = get_registry()
    if recipe.env.id not in reg.environments:
        raise RecipeError(
            f"{source}: env.id: unknown environment {recipe.env.id!r}; registered: "
            f"{', '.join(sorted(reg.environments)) or 'none (install an environment plugin)'}"
        )
    if recipe.trainer.name not in reg.trainers:
        raise RecipeError(
            f"{source}: trainer.name: unknown trainer {recipe.trainer.name!r}; registered: {', '.join(sorted(reg.trainers))}"
        )
    for where, backend in (("collect.policy", recipe.collect.policy), ("eval.backend", recipe.eval.backend)):
        if backend not in reg.policy_backends:
            raise RecipeError(
                f"{source}: {where}: unknown policy backend {backend!r}; registered: {', '.join(sorted(reg.policy_backends))}"
            )
