"""scripts/method_table.py: the README's method tables read from a comparison run's folders."""

import json

import yaml

from agentclone.data import Step, Trajectory, write_trajectories

from conftest import load_script


def _script():
    return load_script("method_table")


def _episodes(path, successes):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_trajectories(path, [
        Trajectory(id=f"g{i}#0", env_id="e", task_id=f"g{i}", split="heldout", success=ok,
                   steps=[Step(observation="o", action="a", invalid=not ok), Step(observation="o", action="b")])
        for i, ok in enumerate(successes)])


def _adapter(path, tokens):
    path.mkdir(parents=True, exist_ok=True)
    (path / "metrics.json").write_text(json.dumps({"tokens_trained": tokens, "train_wall_s": 12.5}))


def _run(tmp_path, name, seed, bc, dpo_rounds):
    run = tmp_path / name
    run.mkdir()
    (run / "recipe.yaml").write_text(yaml.safe_dump({
        "train": {"seed": seed},
        "variants": [{"name": "bc"}, {"name": "dpo"}, {"name": "bc-ema"}]}))
    _episodes(run / "variants" / "bc" / "eval" / "adapter.jsonl", bc)
    _adapter(run / "variants" / "bc" / "adapter", 1000)
    for k, successes in enumerate(dpo_rounds, start=1):
        _episodes(run / "variants" / "dpo" / f"round-{k}" / "eval.jsonl", successes)
        _adapter(run / "variants" / "dpo" / f"round-{k}" / "adapter", 300 * k)
    return run


def test_rows_per_variant_and_round_paired_with_bc_and_pooled_over_seeds(tmp_path, capsys):
    table = _script()
    #          goal:  0     1     2      3      4
    bc0 = [True, True, False, False, True]
    run0 = _run(tmp_path, "seed0", 0, bc0, [[True, True, True, True, False], [False] * 5])
    run1 = _run(tmp_path, "seed1", 1, [True, False, False, False, False], [[True, True, True, False, False]])
    text = table.main([str(run0), str(run1)])
    rows = {line.split(" | ")[0].lstrip("| ") + f" @{line.split(' | ')[1]}": line for line in text.splitlines()[2:]}
    # BC: 3/5 with a Wilson interval, no pairing with itself, its own training tokens
    assert "3/5 = 60.0%" in rows["BC @0"] and "| — |" in rows["BC @0"] and "1,000 | 12.5" in rows["BC @0"]
    # step-DPO round 1 of seed 0: solves goals 2 and 3 that BC missed, misses goal 4 that BC solved
    assert "4/5 = 80.0%" in rows["step-DPO round 1 @0"] and "+2/-1 (p=1.00)" in rows["step-DPO round 1 @0"]
    assert "0/5 = 0.0%" in rows["step-DPO round 2 @0"] and "+0/-3 (p=0.25)" in rows["step-DPO round 2 @0"]
    assert "+2/-0 (p=0.50)" in rows["step-DPO round 1 @1"]
    # pooled over both seeds: +4/-1; round 2 exists in one seed only, so it has no pooled row
    assert "+4/-1 (p=0.38)" in rows["step-DPO round 1 @2 seeds pooled"]
    assert not any(k.startswith("step-DPO round 2 @2") for k in rows)
    # invalid actions: one invalid step in every failed episode, over two steps each
    assert "| 20.0% |" in rows["BC @0"]
    # the EMA variant's evaluation is missing: left out and named on stderr
    assert not any(k.startswith("BC + weight average") for k in rows)
    assert "bc-ema" in capsys.readouterr().err
