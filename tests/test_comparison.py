"""Recipes with ``variants:``: validation, and a whole comparison run with a tiny random model."""

import json

import pytest

from agentclone.recipes import RecipeError, load_recipe

from conftest import REPO
from test_disagreement import tiny_model  # noqa: F401  (a fixture)


def write(tmp_path, text, name="r.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_critical_recipe_validates_with_its_variants():
    r = load_recipe(REPO / "recipes" / "textcraft_critical.yaml")
    assert [v.name for v in r.variants] == ["all", "random", "disagreement", "progress", "llm-judge"]
    assert {v.builder.name for v in r.variants} == {"critical"}
    budgets = {v.builder.options.get("budget") for v in r.variants if v.name != "all"}
    assert budgets == {0.3}  # the same budget for every selector
    assert r.env.kwargs["max_depth"] == 1 and r.env.kwargs["heldout_fraction"] == 0.35


def test_exact_mcnemar_p_value():
    from agentclone.variants import mcnemar_exact

    assert mcnemar_exact(0, 10) == pytest.approx(2 / 1024)
    assert mcnemar_exact(2, 16) == pytest.approx(2 * (1 + 18 + 153) / 2**18)
    assert mcnemar_exact(3, 6) == mcnemar_exact(6, 3) == pytest.approx(0.5078125)
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(4, 4) == 1.0


def test_deep_recipe_differs_only_in_the_goals_and_eval_size():
    shallow = load_recipe(REPO / "recipes" / "textcraft_critical.yaml")
    deep = load_recipe(REPO / "recipes" / "textcraft_critical_deep.yaml")
    assert deep.env.kwargs["max_depth"] == 2 and deep.variants == shallow.variants and deep.train == shallow.train


def test_recipe_without_variants_has_none():
    assert load_recipe(REPO / "recipes" / "quickstart.yaml").variants == []


BASE = "env: {id: test/counter-v0}\n"


@pytest.mark.parametrize(
    "variants, message",
    [
        ("- {name: a, builder: {name: bc}}\n- {name: a, builder: {name: bc}}\n", r"variants\.1\.name: variant 'a' appears twice"),
        ("- {name: a, builder: {name: magic}}\n", r"variants\.0\.builder \(a\): unknown builder 'magic'"),
        ("- {name: a, builder: {name: critical, options: {selector: oracle}}}\n", r"unknown step selector 'oracle'.*progress"),
        ("- {name: a, builder: {name: critical, options: {budget: 2}}}\n", r"variants\.0\.builder \(a\): builder 'critical': option 'budget'"),
        ("- {name: a, builder: {name: critical, options: {selector: progress, selector_options: {prefer: middle}}}}\n",
         r"step selector 'progress': option 'prefer'"),
        ("- {name: a, builder: {name: bc}, train: {epochs: many}}\n", r"variants\.0\.train\.epochs \(a\)"),
        ("- {name: a, builder: {name: bc}, train: {lerning_rate: 1}}\n", r"variants\.0\.train\.lerning_rate"),
        ("- {name: ../x, builder: {name: bc}}\n", r"variants\.0\.name"),
    ],
)
def test_bad_variants_are_clear_errors(tmp_path, counter_env_registered, variants, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(write(tmp_path, BASE + "variants:\n" + "".join("  " + line + "\n" for line in variants.splitlines())))


@pytest.mark.slow
def test_variants_run_once_per_shared_stage_and_write_the_comparison(tmp_path, counter_env_registered, tiny_model):
    from agentclone.pipeline import run_recipe
    from agentclone.recipes import validate_recipe

    recipe = validate_recipe({
        "name": "cmp",
        "env": {"id": "test/counter-v0", "kwargs": {"targets": 6, "max_steps": 4}},
        "model": tiny_model,
        "collect": {"policy": "expert", "episodes": 6},
        "train": {"max_steps": 2, "batch_size": 2, "max_length": 256, "save_steps": 50, "logging_steps": 1},
        "eval": {"episodes": 3, "generation": {"max_new_tokens": 8, "batch_size": 3},
                 "rollout": {"concurrency": 3, "max_consecutive_invalid": 1}},
        "variants": [
            {"name": "all", "builder": {"name": "critical", "options": {"selector": "all"}}},
            {"name": "progress", "builder": {"name": "critical", "options": {"selector": "progress", "budget": 0.3}}},
            {"name": "random-lr", "builder": {"name": "critical", "options": {"selector": "random"}},
             "train": {"learning_rate": 0.01}},
        ],
    })
    out = tmp_path / "run"
    result = run_recipe(recipe, out)
    for name in ("all", "progress", "random-lr"):
        vdir = out / "variants" / name
        assert (vdir / "adapter" / "adapter_config.json").exists()
        assert len((vdir / "eval" / "adapter.jsonl").read_text().splitlines()) == 3
        assert json.loads((vdir / "report.json").read_text()).keys() >= {"base", "adapter"}
    assert len((out / "eval" / "base.jsonl").read_text().splitlines()) == 3  # the base ran once, not per variant
    assert not (out / "train.jsonl").exists() and not (out / "adapter").exists()

    table = json.loads((out / "comparison.json").read_text())
    rows = {r["variant"]: r for r in table["rows"]}
    assert list(rows) == ["base", "all", "progress", "random-lr"]
    assert rows["all"]["loss_steps"] == rows["all"]["steps"]
    assert rows["progress"]["loss_steps"] < rows["progress"]["steps"]
    assert rows["progress"]["loss_tokens"] < rows["all"]["loss_tokens"]
    assert rows["progress"]["tokens"] == rows["all"]["tokens"]  # the same trajectories as context
    for r in rows.values():
        lo, hi = r["success_ci95"]
        assert lo <= r["success_rate"] <= hi and r["episodes"] == 3
    meta = json.loads((out / "variants" / "random-lr" / "adapter" / "agentclone.json").read_text())
    assert meta["settings"]["learning_rate"] == 0.01 and meta["recipe"]["variant"] == "random-lr"
    md = (out / "comparison.md").read_text()
    assert "| progress | critical/progress @0.3 |" in md and "95% CI" in md
    assert "random-lr" in json.loads((out / "report.json").read_text())
    assert "all: train" in result["timings"]

    # a rerun finds every stage complete: nothing is built, trained or rolled out again
    before = {p: p.stat().st_mtime for p in out.rglob("*.jsonl")}
    adapters = {p: p.stat().st_mtime for p in out.rglob("adapter_model.safetensors")}
    run_recipe(recipe, out)
    assert {p: p.stat().st_mtime for p in out.rglob("*.jsonl")} == before
    assert {p: p.stat().st_mtime for p in out.rglob("adapter_model.safetensors")} == adapters

    # another learning rate for one variant: only that variant retrains and is evaluated again
    changed = recipe.model_copy(deep=True)
    changed.variants[2].train["learning_rate"] = 0.02
    run_recipe(changed, out)
    rdir = out / "variants" / "random-lr"
    assert json.loads((rdir / "adapter" / "agentclone.json").read_text())["settings"]["learning_rate"] == 0.02
    assert list(rdir.glob("adapter.stale-*")) and list((rdir / "eval").glob("adapter.stale-*.jsonl"))
    for p, t in adapters.items():
        assert (p.stat().st_mtime == t) == ("random-lr" not in str(p))
    assert len((rdir / "eval" / "adapter.jsonl").read_text().splitlines()) == 3
