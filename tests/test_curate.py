"""Data quality (issue #21): the curate report and filters on trajectory sets with known defects, the
byte-for-byte pass-through, the robust SFT losses, the divergence in the eval report, and the
corruption script on real TextCraft expert demonstrations."""

from __future__ import annotations

import filecmp
import json
import math
import subprocess

import pytest

from agentclone.curate import CurateOptions, curate_file, quality_report, read_records
from agentclone.data import Step, Trajectory, TrajectoryFileError, read_trajectories, write_trajectories

from conftest import REPO, load_script
from test_disagreement import tiny_model  # noqa: F401  (a fixture)


def traj(id, task, pairs, success=True, ret=1.0, kind="k1", invalid=()):
    return Trajectory(id=id, env_id="e/x-v1", task_id=task, task_kind=kind, success=success, return_=ret,
                      steps=[Step(observation=o, thought="t", action=a, invalid=i in invalid)
                             for i, (o, a) in enumerate(pairs)])


def defective() -> list[Trajectory]:
    """Seven trajectories, each defect known:

    - b duplicates a (the actions differ only in case and a trailing period);
    - c conflicts with a and b at state (t1, [o0]): 2 votes "get 1 x" against 1 for "get 2 x";
    - d fails (return 0), loops (the pair (p0, look) twice) and has one invalid step;
    - e and f tie at state (t3, [q0]): no majority, both steps conflict;
    - g is 20 steps long (a length outlier).
    """
    return [
        traj("a", "t1", [("o0", "get 1 x"), ("o1", "craft y")]),
        traj("b", "t1", [("o0", "Get 1 X."), ("o1", "craft y")]),
        traj("c", "t1", [("o0", "get 2 x"), ("o2", "craft y")]),
        traj("d", "t2", [("p0", "look"), ("p0", "look"), ("p1", "done")], success=False, ret=0.0, invalid=(1,)),
        traj("e", "t3", [("q0", "a")], kind="k2"),
        traj("f", "t3", [("q0", "b")], kind="k2"),
        traj("g", "t4", [(f"r{i}", f"step {i}") for i in range(20)]),
    ]


def entropy(*ps):
    return -sum(p * math.log2(p) for p in ps)


def test_the_report_counts_every_known_defect_exactly():
    r = quality_report(defective())
    assert r["episodes"] == 7 and r["steps"] == 2 + 2 + 2 + 3 + 1 + 1 + 20 == r["loss_steps"]
    assert r["duplicates"] == {"trajectories": 1, "steps": 2}
    # repeated states: (t1,[o0]) 3 visits, (t1,[o0,o1]) 2 agreeing visits, (t3,[q0]) 2 disagreeing visits
    assert r["repeated_states"] == 3 and r["conflicting_states"] == 2
    assert r["conflicting_steps"] == 1 + 2  # c's first step, and both tied steps
    assert r["action_entropy_bits"] == pytest.approx((entropy(2 / 3, 1 / 3) + 0.0 + 1.0) / 3)
    assert r["looping"] == {"trajectories": 1, "repeated_pairs": 1}
    assert r["length"] == {"min": 1, "median": 2, "max": 20}
    assert r["return"] == {"min": 0.0, "median": 1.0, "max": 1.0}
    assert r["invalid_action_rate"] == pytest.approx(1 / 31)
    assert r["success_rate"] == pytest.approx(6 / 7)
    assert r["tasks"] == 4 and r["tasks_per_kind"] == {"k1": 3, "k2": 1}


def test_steps_without_loss_take_no_part_in_conflicts():
    trajs = defective()
    trajs[2].steps[0].loss = False  # c's dissenting step teaches nothing
    r = quality_report(trajs)
    assert r["conflicting_states"] == 1 and r["conflicting_steps"] == 2


@pytest.fixture
def defective_file(tmp_path):
    path = tmp_path / "demos.jsonl"
    write_trajectories(path, defective())
    return path


@pytest.mark.parametrize("options, reason, ids_gone, steps_gone", [
    (CurateOptions(drop_failed=True), "failed", {"d"}, 3),
    (CurateOptions(max_steps=10), "max_steps", {"g"}, 20),
    (CurateOptions(min_return=0.5), "min_return", {"d"}, 3),
    (CurateOptions(drop_looping=True), "looping", {"d"}, 3),
    (CurateOptions(drop_duplicates=True), "duplicate", {"b"}, 2),
])
def test_each_filter_removes_exactly_its_defect(tmp_path, defective_file, options, reason, ids_gone, steps_gone):
    out = tmp_path / "out.jsonl"
    result = curate_file(defective_file, out, options)
    assert result["removed"] == {reason: {"trajectories": len(ids_gone), "steps": steps_gone}}
    kept = read_trajectories(out)
    assert {t.id for t in kept} == set("abcdefg") - ids_gone
    assert result["after"]["episodes"] == 7 - len(ids_gone)
    # the records no filter changed are the input's lines, byte for byte
    lines = set(defective_file.read_bytes().splitlines())
    assert all(line in lines for line in out.read_bytes().splitlines())


def test_outliers_by_robust_z_score(tmp_path, defective_file):
    result = curate_file(defective_file, tmp_path / "out.jsonl", CurateOptions(outlier_z=3.0))
    # lengths: median 2, MAD 1: g's 20 is 12 robust sds out, d's 3 is 0.7; returns (g gone): median 1, MAD 0,
    # mean absolute deviation 1/6: d's 0 is 4.8 scaled deviations out
    assert result["removed"] == {"length_outlier": {"trajectories": 1, "steps": 20},
                                 "return_outlier": {"trajectories": 1, "steps": 3}}


def test_conflicting_steps_lose_their_loss_and_the_trajectories_stay(tmp_path, defective_file):
    out = tmp_path / "out.jsonl"
    result = curate_file(defective_file, out, CurateOptions(drop_conflicting=True))
    assert result["removed"] == {"conflicting": {"trajectories": 0, "steps": 0, "steps_loss_off": 3,
                                                 "trajectories_touched": 3}}
    kept = {t.id: t for t in read_trajectories(out)}
    assert len(kept) == 7
    assert [s.loss for s in kept["c"].steps] == [False, True]
    assert not kept["e"].steps[0].loss and not kept["f"].steps[0].loss
    assert all(s.loss for t in "abdg" for s in kept[t].steps)
    after = result["after"]
    assert after["conflicting_states"] == 0 and after["conflicting_steps"] == 0
    assert after["loss_steps"] == result["before"]["loss_steps"] - 3
    # untouched records are still the input's lines
    lines = set(defective_file.read_bytes().splitlines())
    written = out.read_bytes().splitlines()
    assert sum(line in lines for line in written) == 4


def test_filters_together_in_order(tmp_path, defective_file):
    opts = CurateOptions(drop_failed=True, max_steps=10, drop_looping=True, drop_duplicates=True,
                         drop_conflicting=True)
    result = curate_file(defective_file, tmp_path / "out.jsonl", opts)
    assert list(result["removed"]) == ["failed", "max_steps", "looping", "duplicate", "conflicting"]
    assert result["removed"]["failed"] == {"trajectories": 1, "steps": 3}
    assert result["removed"]["looping"] == {"trajectories": 0, "steps": 0}  # d was already gone
    assert result["removed"]["duplicate"] == {"trajectories": 1, "steps": 2}
    # without b, (t1, [o0]) is a 1-1 tie: a's and c's first steps both lose their loss, and e's and f's
    assert result["removed"]["conflicting"]["steps_loss_off"] == 4
    assert result["after"]["episodes"] == 4


def test_no_filter_copies_the_input_byte_for_byte(tmp_path):
    # a file as another tool might write it: other key order, spaces, a blank line, no final newline
    records = [json.loads(t.to_json_line()) for t in defective()]
    text = "\n".join(json.dumps(dict(reversed(list(r.items()))), indent=None, separators=(", ", " : "))
                     for r in records[:4])
    text += "\n\n" + "\n".join(json.dumps(r) for r in records[4:])
    src = tmp_path / "in.jsonl"
    src.write_text(text, encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = curate_file(src, out)
    assert filecmp.cmp(src, out, shallow=False)
    assert result["removed"] == {} and result["after"] == result["before"]
    assert result["before"]["episodes"] == 7


def test_a_filter_that_removes_nothing_leaves_a_clean_file_byte_for_byte(tmp_path):
    clean = [t for t in defective() if t.id in "aceg"]  # no failure, no duplicate, no loop
    src = tmp_path / "clean.jsonl"
    write_trajectories(src, clean)
    out = tmp_path / "out.jsonl"
    result = curate_file(src, out, CurateOptions(drop_failed=True, drop_duplicates=True, drop_looping=True))
    assert filecmp.cmp(src, out, shallow=False)
    assert all(r["trajectories"] == 0 for r in result["removed"].values())


@pytest.mark.parametrize("bad, where", [
    (b'{"id": "x"\n', ":2: not valid JSON"),
    (b'{"id": "x", "env_id": "e", "task_id": "t", "stepz": []}\n', ":2: field 'stepz'"),
    (b'{"id": "x", "env_id": "e", "task', ":2: not valid JSON"),  # a torn last line is an error here
])
def test_a_malformed_line_is_one_error_and_no_output(tmp_path, defective_file, bad, where):
    lines = defective_file.read_bytes().splitlines(keepends=True)
    src = tmp_path / "bad.jsonl"
    src.write_bytes(lines[0] + bad + (b"".join(lines[1:]) if bad.endswith(b"\n") else b""))
    out_dir = tmp_path / "out"
    with pytest.raises(TrajectoryFileError, match=where):
        curate_file(src, out_dir / "out.jsonl", CurateOptions(drop_failed=True))
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_the_command_writes_the_report_and_fails_in_one_line(tmp_path, defective_file, cli):
    out, report = tmp_path / "out.jsonl", tmp_path / "report.json"
    run = cli
    code, io = run("curate", defective_file, "--output", out, "--report", report, "--drop-duplicates",
                   "--drop-failed")
    assert code == 0, io.err
    data = json.loads(report.read_text())
    assert data["removed"] == {"failed": {"trajectories": 1, "steps": 3},
                               "duplicate": {"trajectories": 1, "steps": 2}}
    assert data["before"]["conflicting_states"] == 2 and data["after"]["episodes"] == 5
    assert "conflicting states" in io.out and "duplicate: removed 1 trajectories (2 steps)" in io.err
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    code, io = run("curate", bad, "--output", tmp_path / "o2.jsonl")
    assert code == 2 and io.err.strip() == f"error: {bad}:1: not valid JSON (Expecting value at column 1)"
    assert not (tmp_path / "o2.jsonl").exists()
    # a filter out of range (the same check as a recipe's curate: section) is one line, before anything is read
    code, io = run("curate", defective_file, "--output", tmp_path / "o3.jsonl", "--max-steps", "0", "--outlier-z", "0")
    assert code == 2 and io.err.strip() == ("error: --max-steps: input should be greater than or equal to 1; "
                                            "--outlier-z: input should be greater than 0")
    assert not (tmp_path / "o3.jsonl").exists()


def test_read_records_keeps_each_lines_bytes(defective_file):
    records = read_records(defective_file)
    assert b"".join(r.raw for r in records) == defective_file.read_bytes()


# -- the eval report's action divergence ---------------------------------------------------------

def test_the_report_shows_action_divergence_next_to_success_when_labels_are_present():
    from agentclone.data import ExpertLabel
    from agentclone.evaluation import render_markdown, summarize

    labelled = [traj("a", "t1", [("o0", "get 1 x"), ("o1", "craft y")]),
                traj("b", "t2", [("p0", "look")], success=False)]
    labelled[0].steps[0].expert = ExpertLabel(action="Get 1 X")  # agrees
    labelled[0].steps[1].expert = ExpertLabel(action="craft z")  # differs
    labelled[1].steps[0].expert = ExpertLabel(action="get 2 x")  # differs
    report = {"adapter": summarize(labelled), "base": summarize([traj("c", "t1", [("o0", "x")])])}
    assert report["adapter"]["expert_agreement"] == pytest.approx(1 / 3)
    assert report["adapter"]["action_divergence"] == pytest.approx(2 / 3)
    assert "action_divergence" not in report["base"]
    md = render_markdown(report, "t")
    assert "| adapter | 50.0% | 33.3% | 66.7% | 3 |" in md
    section = md.split("action divergence")[1].split("##")[0]
    assert "| base |" not in section  # no labels, no row


# -- robust SFT losses ---------------------------------------------------------------------------

def test_robust_aggregates_ignore_one_huge_sample():
    import torch

    from agentclone.objectives.robust import robust_aggregate

    for huge in (100.0, 1e6):
        x = torch.tensor([1.0, 2.0, 1.0, 2.0, 1.0, huge], requires_grad=True)
        capped = robust_aggregate(x, "loss_cap", loss_cap=5.0)
        (grad,) = torch.autograd.grad(capped, x)
        assert capped.item() == pytest.approx((7 + 5) / 6) and grad.tolist() == pytest.approx([1 / 6] * 5 + [0.0])
        # groups [1, 2], [1, 2], [1, huge]: means 1.5, 1.5, (1 + huge) / 2; the median is 1.5
        mom = robust_aggregate(x, "median_of_means", groups=3)
        (grad,) = torch.autograd.grad(mom, x)
        assert mom.item() == pytest.approx(1.5) and grad[-1] == 0 and float(grad.abs().sum()) <= 1.0
        plain = robust_aggregate(x, "none")
        (grad,) = torch.autograd.grad(plain, x)
        assert plain.item() > huge / 6 - 1  # the mean follows the corrupted sample
    even = robust_aggregate(torch.tensor([1.0, 3.0, 5.0, 100.0]), "median_of_means", groups=4)
    assert float(even) == 4.0  # the mean of the two middle group means
    few = robust_aggregate(torch.tensor([1.0, 9.0]), "median_of_means", groups=3)
    assert float(few) == 5.0  # fewer samples than groups: one group per sample


@pytest.mark.parametrize("trl, message", [
    ({"robust": "trimmed"}, "robust: 'trimmed' is not one of none, loss_cap, median_of_means"),
    ({"robust": "loss_cap"}, "robust: loss_cap needs loss_cap: a positive number"),
    ({"robust": "loss_cap", "loss_cap": -1.0}, "robust: loss_cap needs loss_cap: a positive number"),
    ({"loss_cap": 3.0}, "loss_cap is only used with robust: loss_cap"),
    ({"robust": "median_of_means", "mom_groups": 2}, "mom_groups must be an integer of at least 3"),
    ({"robust": "median_of_means", "mom_groups": 8},
     "robust: median_of_means needs a batch_size of at least mom_groups \\(4 < 8\\)"),
    ({"robust": "loss_cap", "loss_cap": 3.0, "packing": True}, "robust: loss_cap needs padded batches"),
    ({"robust": "loss_cap", "loss_cap": 3.0, "loss_type": "dft"}, "robust: loss_cap works on the nll loss"),
])
def test_robust_options_are_checked_when_the_config_is_built(tmp_path, trl, message):
    from agentclone.errors import UserError
    from agentclone.objectives.sft import SFT
    from agentclone.training import TrainSettings, build_trl_config

    with pytest.raises(UserError, match=r"train.trl: SFTConfig refused the settings: " + message):
        build_trl_config(SFT(), TrainSettings(batch_size=4, trl=trl), str(tmp_path))


def test_robust_options_in_a_recipe(counter_env_registered):
    from agentclone.recipes import RecipeError, validate_recipe

    recipe = validate_recipe({"env": {"id": "test/counter-v0"},
                              "train": {"trl": {"robust": "median_of_means", "mom_groups": 3}}})
    assert recipe.train.trl == {"robust": "median_of_means", "mom_groups": 3}
    with pytest.raises(RecipeError, match=r"train: train.trl: SFTConfig refused the settings: robust: loss_cap needs"):
        validate_recipe({"env": {"id": "test/counter-v0"}, "train": {"trl": {"robust": "loss_cap"}}})
    # padding_free is a train setting of its own: refused with a robust loss too
    with pytest.raises(RecipeError, match=r"needs padded batches"):
        validate_recipe({"env": {"id": "test/counter-v0"},
                         "train": {"padding_free": True, "trl": {"robust": "loss_cap", "loss_cap": 2.0}}})


def _robust_samples(n=4):
    return [Trajectory(id=f"e:t{i}#0", env_id="e/x-v1", task_id=f"t{i}", instructions="Count.", success=True,
                       steps=[Step(observation=f"Value {j}. Target {i + 3}.", thought=f"{j} more" * (1 + i),
                                   action=f"add {j + 1}") for j in range(2)]) for i in range(n)]


def test_the_trainer_loss_ignores_a_capped_sample(tmp_path, tiny_model):
    """The per-sample losses under the loss mask, computed the slow way from the logits: with the cap between
    the two highest, the robust loss and its gradient are those of the other samples alone."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    from agentclone.models import load_tokenizer
    from agentclone.objectives.sft import SFT
    from agentclone.prompting import ActionFormat
    from agentclone.training import TrainSettings, build_trl_config

    tok = load_tokenizer(tiny_model)
    dataset = SFT().dataset(_robust_samples(), tok, ActionFormat(), 512)

    def trainer_for(trl):
        settings = TrainSettings(batch_size=4, max_steps=1, group_by_length=False, trl=trl)
        args = build_trl_config(SFT(), settings, str(tmp_path / "ckpt"), progress=False)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(tiny_model)
        lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
        trainer = SFT().trainer(model, args, dataset, tok, lora)
        trainer.model.train()
        batch = trainer._prepare_inputs(trainer.data_collator([dataset[i] for i in range(4)]))
        return trainer, batch

    def grads(model):
        return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    trainer, batch = trainer_for({"robust": "none"})
    from agentclone.objectives.robust import RobustSFTTrainer

    assert type(trainer) is not RobustSFTTrainer  # the default is TRL's own trainer
    labels = batch["labels"][:, 1:]
    with torch.no_grad():
        logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    logp = torch.log_softmax(logits.float(), -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    mask = labels != -100
    manual = -(logp * mask).sum(1) / mask.sum(1)
    top = int(manual.argmax())
    cap = float((manual.max() + manual.sort().values[-2]) / 2)

    trainer, batch = trainer_for({"robust": "loss_cap", "loss_cap": cap})
    assert isinstance(trainer, RobustSFTTrainer)
    loss = trainer.compute_loss(trainer.model, dict(batch))
    others = [i for i in range(4) if i != top]
    assert loss.item() == pytest.approx(float((manual[others].sum() + cap) / 4), rel=1e-4)
    loss.backward()
    robust_grads = grads(trainer.model)
    trainer.model.zero_grad()
    # the same model, the plain loss of the three other samples over 4: the same gradient
    out = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    lp = torch.log_softmax(out.float(), -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    per = -(lp * mask).sum(1) / mask.sum(1)
    (per[others].sum() / 4).backward()
    for name, g in grads(trainer.model).items():
        assert torch.allclose(robust_grads[name], g, atol=1e-6, rtol=1e-4), name
    assert any(float(g.abs().sum()) > 0 for g in robust_grads.values())

    trainer, batch = trainer_for({"robust": "median_of_means", "mom_groups": 4})
    loss = trainer.compute_loss(trainer.model, dict(batch))
    middle = manual.sort().values[1:3].mean()
    assert loss.item() == pytest.approx(float(middle), rel=1e-4)


@pytest.mark.parametrize("trl", [{"robust": "loss_cap", "loss_cap": 50.0}, {"robust": "median_of_means"}])
def test_training_runs_end_to_end_with_each_robust_option(tmp_path, tiny_model, trl):
    from agentclone.training import TrainSettings, is_adapter_complete, train_lora

    settings = TrainSettings(max_steps=2, batch_size=3, gradient_accumulation=2, save_steps=100, logging_steps=1,
                             learning_rate=0.01, group_by_length=False, trl=trl)
    metrics = train_lora(_robust_samples(6), tiny_model, tmp_path / "adapter", settings, progress=False)
    assert metrics["global_step"] == 2 and is_adapter_complete(tmp_path / "adapter")
    logged = [h for h in metrics["log_history"] if "loss" in h]
    assert logged and all(math.isfinite(h["loss"]) and h["loss"] > 0 for h in logged)
    assert all("per_sample_loss_mean" in h for h in logged)
    if trl["robust"] == "loss_cap":  # a cap far above every loss: nothing capped, the loss is the per-sample mean
        assert all(h["capped_fraction"] == 0.0 for h in logged)
        assert logged[0]["loss"] == pytest.approx(logged[0]["per_sample_loss_mean"], rel=1e-3)
    meta = json.loads((tmp_path / "adapter" / "agentclone.json").read_text())
    assert meta["settings"]["trl"] == trl


# -- the corruption script on real TextCraft expert demonstrations -------------------------------

TEXTCRAFT = {"max_depth": 1, "num_distractors": 3, "max_steps": 10}


@pytest.fixture(scope="module")
def textcraft_demos(tmp_path_factory):
    """Ten expert episodes on TextCraft training goals, each goal twice (5 goals)."""
    from agentclone.pipeline import collect
    from agentclone.policies.base import make_policy

    path = tmp_path_factory.mktemp("tc") / "demos.jsonl"
    runs = []
    for name in ("first.jsonl", "again.jsonl"):  # the same seed: the same 5 goals in the same order
        collect("textcraft/craft-v1", TEXTCRAFT, make_policy("expert"), "train", 5, path.with_name(name), seed=0)
        runs.append(read_trajectories(path.with_name(name)))
    write_trajectories(path, runs[0] + [t.model_copy(update={"id": t.id + "-again"}) for t in runs[1]])
    trajs = read_trajectories(path)
    assert len(trajs) == 10 and all(t.success for t in trajs) and len({t.task_id for t in trajs}) == 5
    return path


def _script():
    return load_script("corrupt_demos")


def test_random_valid_corruption_replaces_every_action_with_another_valid_one(tmp_path, textcraft_demos):
    from agentclone.data import normalize_action
    from agentclone.envs import make_env

    script = _script()
    demos = read_trajectories(textcraft_demos)
    out = tmp_path / "bad.jsonl"
    assert script.main([str(textcraft_demos), "--fraction", "0.2", "--mode", "random-valid", "--seed", "0",
                        "--output", str(out)]) == 0
    bad = read_trajectories(out)
    info = json.loads(out.with_name("bad.jsonl.corruption.json").read_text())
    assert info["corrupted"] == 2 and len(info["corrupted_ids"]) == 2
    env = make_env("textcraft/craft-v1", **TEXTCRAFT)
    tasks = {t.id: t for t in env.tasks("train")}
    changed = 0
    for clean, dirty in zip(demos, bad):
        assert [s.observation for s in clean.steps] == [s.observation for s in dirty.steps]
        assert (clean.success, clean.return_) == (dirty.success, dirty.return_)
        if dirty.id not in info["corrupted_ids"]:
            assert dirty == clean
            continue
        env.reset(tasks[dirty.task_id])
        for k, (c, d) in enumerate(zip(clean.steps, dirty.steps)):
            assert normalize_action(d.action) != normalize_action(c.action) and d.thought is None
            # the corrupted action is valid from the demonstration's state: replay the clean prefix, try it
            env.reset(tasks[dirty.task_id])
            for s in clean.steps[:k]:
                env.step(s.action)
            assert not env.step(d.action)[4].get("invalid"), d.action
            changed += 1
    assert changed == info["steps_changed"] > 0
    # the same seed gives the same file
    again = tmp_path / "again.jsonl"
    script.main([str(textcraft_demos), "--fraction", "0.2", "--seed", "0", "--output", str(again)])
    assert [t.steps for t in read_trajectories(again)] == [t.steps for t in bad]


def test_other_goal_corruption_and_curate_find_it_as_conflicts(tmp_path, textcraft_demos):
    script = _script()
    demos = read_trajectories(textcraft_demos)
    bad, info = script.corrupt(demos, 0.2, "other-goal", seed=1)
    assert info["corrupted"] == 2 and info["steps_changed"] > 0
    for clean, dirty in zip(demos, bad):
        if dirty.id in info["corrupted_ids"]:
            assert [s.action for s in dirty.steps] != [s.action for s in clean.steps]
            assert [s.observation for s in dirty.steps] == [s.observation for s in clean.steps]
    # every goal was demonstrated twice: the clean demos are duplicates, each corrupted one ties with its twin
    path = tmp_path / "bad.jsonl"
    write_trajectories(path, bad)
    report = curate_file(path, tmp_path / "curated.jsonl", CurateOptions(drop_conflicting=True))
    assert quality_report(demos)["conflicting_states"] == 0
    assert report["before"]["conflicting_states"] >= 2 and report["after"]["conflicting_states"] == 0
    assert report["before"]["success_rate"] == 1.0  # success says nothing about the corruption
    with pytest.raises(ValueError, match="mode must be one of"):
        script.corrupt(demos, 0.2, "shuffle")


def test_bc_keeps_the_loss_curate_turned_off_when_asked(tmp_path, defective_file):
    from agentclone.building import BuildContext
    from agentclone.builders.base import make_builder

    out = tmp_path / "curated.jsonl"
    curate_file(defective_file, out, CurateOptions(drop_conflicting=True))
    curated = read_trajectories(out)
    kept = make_builder("bc", {"only_successful": True, "keep_loss_off": True}).build(curated, BuildContext())
    assert sum(s.loss for t in kept for s in t.steps) == 28 - 3  # d failed (3 steps); 3 conflicting steps off
    plain = make_builder("bc", {"only_successful": True}).build(curated, BuildContext())
    assert sum(s.loss for t in plain for s in t.steps) == 28  # by default bc puts loss on every step


def test_the_experiment_recipe_builds_from_a_curated_file_put_in_place(tmp_path, textcraft_demos, smollm2_path):
    """recipes/textcraft_corrupt.yaml's route: a run folder's demos.jsonl put there by hand, collect switched
    off; the bc builder keeps the loss that curate turned off."""
    from agentclone.pipeline import run_recipe
    from agentclone.recipes import load_recipe

    bad, info = _script().corrupt(read_trajectories(textcraft_demos), 0.2, "random-valid", seed=0)
    write_trajectories(tmp_path / "bad.jsonl", bad)
    run = tmp_path / "bc-curated"
    report = curate_file(tmp_path / "bad.jsonl", run / "demos.jsonl", CurateOptions(drop_conflicting=True))
    off = report["removed"]["conflicting"]["steps_loss_off"]
    assert off == 2 * info["steps_changed"]  # each corrupted step ties with its clean twin: both lose their loss
    recipe = load_recipe(REPO / "recipes" / "textcraft_corrupt.yaml", {"stages": ["build"]})
    result = run_recipe(recipe, run)
    assert result["stages"] == {"collect": "disabled", "build": "ran", "train": "disabled", "eval adapter": "disabled"}
    stats = json.loads((run / "build.json").read_text())["stats"]
    assert stats["trajectories_out"] == 10 and stats["loss_steps"] == stats["steps"] - off
