"""`accelerate launch --num_processes 2` on the CPU (gloo) runs `agentclone train` and `agentclone run` like one
process.

Each test starts two processes of the real CLI on a tiny random model (no GPU visible) and compares them
with one process running the same code in this one.
"""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import yaml

from agentclone.data import Step, Trajectory, read_trajectories, write_trajectories
from agentclone.pipeline import run_recipe
from agentclone.recipes import load_recipe
from agentclone.training import TrainSettings, train_lora

from conftest import REPO
from test_disagreement import tiny_model  # noqa: F401  (a fixture)

ENV = {"id": "textcraft/craft-v1", "kwargs": {"max_depth": 1, "num_distractors": 1, "max_steps": 3}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(processes: int, *args: str, cwd) -> subprocess.CompletedProcess:
    """``accelerate launch --multi_gpu --num_processes N -m agentclone.cli ARGS`` with this checkout's code, on
    the CPU: no GPU visible, so each process is a CPU process and they talk through gloo. (``--cpu`` would
    start one process: accelerate starts several CPU processes only through mpirun.)"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    # AGENTCLONE_LOAD_PLUGINS (conftest: textcraft only) is inherited by every process
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *(["--multi_gpu"] if processes > 1 else []),
           "--num_processes", str(processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), "-m", "agentclone.cli", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def samples(n: int) -> list[Trajectory]:
    """Training samples of different lengths, so a wrong split or order across processes shows in the loss."""
    return [Trajectory(id=f"e:t{i}#0", env_id="e/x-v1", task_id=f"t{i}", instructions="Craft things.", success=True,
                       steps=[Step(observation=f"observation {i} {j}", thought="thought " * (1 + (i + j) % 4),
                                   action=f"get {i + j} oak log") for j in range(1 + i % 3)])
            for i in range(n)]


def write_recipe(path, model, **spec):
    path.write_text(yaml.safe_dump({"name": "mp", "env": ENV, "model": model, **spec}))
    return path


def losses(adapter) -> list[float]:
    history = json.loads((adapter / "metrics.json").read_text())["log_history"]
    return [e["loss"] for e in history if "loss" in e]


def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path, tiny_model):
    """Data-parallel: batch 1 on each of 2 processes is batch 2 on one, step for step (same seed, same
    sample order: the sampler draws the global order and accelerate deals it out, one sample per process)."""
    data = tmp_path / "train.jsonl"
    write_trajectories(data, samples(8))
    train = {"max_steps": 4, "logging_steps": 1, "save_steps": 100, "learning_rate": 0.01, "max_length": 256}
    runs = {1: tmp_path / "adapter-1", 2: tmp_path / "adapter-2"}
    # one process, in this one (the same code as `agentclone train` without accelerate launch)
    train_lora(read_trajectories(data), tiny_model, runs[1], TrainSettings(**train, batch_size=2), progress=False)
    recipe = write_recipe(tmp_path / "r.yaml", tiny_model, train={**train, "batch_size": 1})
    launch(2, "train", str(data), "--recipe", str(recipe), "--output", str(runs[2]), cwd=tmp_path)
    one, two = losses(runs[1]), losses(runs[2])
    assert len(one) == len(two) == 4
    # the same arithmetic up to the order of float sums (each process's loss over the global token count,
    # the batch of 2 padded): relative differences measured at 9e-8 (float32 rounding); the other samples
    # per step (one process at batch 1, as `accelerate launch --cpu` gives) differed by 1e-4 to 7e-3
    print("relative loss differences, 2 processes vs 1:", [abs(a - b) / abs(b) for a, b in zip(two, one)])
    assert two == pytest.approx(one, rel=1e-5)
    # and the adapters they saved: the gradients were averaged across the processes, not kept per process
    from safetensors.torch import load_file

    w1, w2 = (load_file(runs[p] / "adapter_model.safetensors") for p in (1, 2))
    assert w1.keys() == w2.keys()
    assert any(float(w.abs().max()) > 1e-3 for k, w in w2.items() if "lora_B" in k)  # it trained (B starts at 0)
    for key in w1:
        assert torch.allclose(w2[key], w1[key], rtol=1e-3, atol=1e-5), key
    meta = json.loads((runs[2] / "agentclone.json").read_text())
    assert meta["metrics"]["global_step"] == 4 and "adapter_model.safetensors" in meta["files"]
    assert not list(runs[2].glob(".adapter-tmp*"))


def test_two_processes_run_a_recipe_once_with_the_same_report(tmp_path, tiny_model):
    """Collection and evaluation split their episodes across the processes: every episode is written
    exactly once, and the report equals one process's."""
    recipe = write_recipe(
        tmp_path / "recipe.yaml", tiny_model,
        collect={"policy": "expert", "episodes": 5},
        train={"max_steps": 2, "batch_size": 1, "save_steps": 100, "logging_steps": 1, "max_length": 256},
        eval={"episodes": 3, "generation": {"max_new_tokens": 8, "batch_size": 4},
              "rollout": {"concurrency": 4, "max_consecutive_invalid": 1}},
    )
    outs = {1: tmp_path / "run-1", 2: tmp_path / "run-2"}
    run_recipe(load_recipe(recipe), outs[1])  # one process, in this one (what `agentclone run` does)
    launch(2, "run", str(recipe), "--output", str(outs[2]), cwd=tmp_path)
    for name in ("demos.jsonl", "eval/base.jsonl", "eval/adapter.jsonl"):
        one = read_trajectories(outs[1] / name)
        two = read_trajectories(outs[2] / name)
        ids = [t.id for t in two]
        assert len(ids) == len(set(ids)), f"{name}: an episode written twice"
        assert sorted(ids) == sorted(t.id for t in one), name
        # the same episodes with the same outcome (greedy decoding, expert collection)
        outcome = {t.id: (t.success, [s.action for s in t.steps]) for t in one}
        assert {t.id: (t.success, [s.action for s in t.steps]) for t in two} == outcome, name
        assert not list((outs[2] / name).parent.glob(f".{(outs[2] / name).name}.part*")), "part files left"
    assert len(read_trajectories(outs[2] / "demos.jsonl")) == 5
    rep1, rep2 = (json.loads((outs[p] / "report.json").read_text()) for p in (1, 2))
    for policy in ("base", "adapter"):
        for key in ("episodes", "success_rate", "mean_steps", "invalid_action_rate"):
            assert rep2[policy][key] == rep1[policy][key], (policy, key)
    assert json.loads((outs[2] / "stages.json").read_text()) == {
        "collect": "ran", "build": "ran", "train": "ran", "eval base": "ran", "eval adapter": "ran"}
    # a rerun with two processes skips every stage
    launch(2, "run", str(recipe), "--output", str(outs[2]), cwd=tmp_path)
    assert set(json.loads((outs[2] / "stages.json").read_text()).values()) == {"skipped"}


def test_one_process_uses_no_process_group():
    """Without accelerate launch the helpers are plain calls and import nothing (no torch)."""
    code = ("import sys; from agentclone import distributed as d; "
            "assert (d.world_size(), d.rank(), d.is_main(), d.together()) == (1, 0, True, False); "
            "assert d.on_main(lambda: 3) == 3 and d.on_every(lambda: 4) == 4; d.barrier(); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(env, PYTHONPATH=str(REPO)))


def test_part_files_of_a_killed_run_join_their_output(tmp_path):
    """A collection of several processes killed before its merge: the rerun's stage check appends the parts
    to the file first, so a file made from other inputs is moved aside with them."""
    from agentclone.rollout import rank_part
    from agentclone.stages import ensure_fresh, mark_done

    out = tmp_path / "demos.jsonl"
    trajs = samples(3)
    write_trajectories(out, trajs[:1])
    mark_done(out, "old")
    write_trajectories(rank_part(out, 0), trajs[1:2])
    write_trajectories(rank_part(out, 1), trajs[2:])
    assert not ensure_fresh(out, "new")
    (aside,) = tmp_path.glob("demos.stale-*.jsonl")
    assert [t.id for t in read_trajectories(aside)] == [t.id for t in trajs]
    assert not out.exists() and not list(tmp_path.glob(".demos.jsonl.part*"))
