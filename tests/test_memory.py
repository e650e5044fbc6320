"""Memory: a stage's freed memory goes back to the system before the next stage of the same process starts,
and gradient checkpointing turns itself on where the largest training step may not fit the machine."""

import ctypes

import pytest

from agentclone.memory import _malloc_trim, give_back, resident_bytes
from agentclone.stages import StageRunner

from test_disagreement import tiny_model  # noqa: F401  (a fixture)

needs_trim = pytest.mark.skipif(_malloc_trim() is None or resident_bytes() is None,
                                reason="needs glibc's malloc_trim and /proc (Linux)")

MB = 1 << 20


def heap_left_resident(total_mb: int = 300):
    """What training leaves behind: many small blocks written to, then all freed but one in 16, so the freed
    pages lie between blocks still in use, the heap cannot shrink, and glibc keeps them resident for reuse."""
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(4096) for _ in range(total_mb * MB // 4096)]
    for b in blocks:
        ctypes.memset(b, 1, 4096)
    kept = set(blocks[::16])  # about 19 MB still in use
    for b in blocks:
        if b not in kept:
            libc.free(b)
    return lambda: [libc.free(b) for b in kept]


@needs_trim
def test_freed_heap_stays_resident_without_give_back():
    """The premise, so the next test shows something: freeing alone does not lower resident memory."""
    give_back()  # what earlier tests freed would otherwise be reused, resident already: no growth to see
    before = resident_bytes()
    unpin = heap_left_resident()
    try:
        assert resident_bytes() - before > 200 * MB
    finally:
        unpin()
        give_back()


@needs_trim
def test_the_stage_runner_gives_a_stages_freed_memory_back(tmp_path, capsys):
    give_back()
    before = resident_bytes()
    unpins = []
    runner = StageRunner(tmp_path)
    runner.run("train", "train", tmp_path / "out.txt", {"x": 1},
               lambda: (unpins.append(heap_left_resident()), (tmp_path / "out.txt").write_text("done")))
    try:
        assert resident_bytes() - before < 100 * MB  # about 300 MB were resident when the stage returned
        assert "GB of memory given back" in capsys.readouterr().err
        assert runner.outcomes == {"train": "ran"}
    finally:
        unpins[0]()


def test_checkpointing_turns_on_where_the_quickstarts_largest_step_may_not_fit(tmp_path, smollm2_path, monkeypatch):
    """The quickstart's own samples and model: its largest step (4 rows padded to the longest) needs about
    7.8 GB without checkpointing (measured: 7.83 GB), so it stays off on the 24 GB machine and turns on on
    an 8 GB laptop; a setting of true or false is kept; a GPU turns it on."""
    from transformers import AutoConfig

    from agentclone.data import read_trajectories
    from agentclone.models import load_tokenizer
    from agentclone.objectives import make_objective
    from agentclone.pipeline import run_recipe
    from agentclone.prompting import ActionFormat
    from agentclone.recipes import load_recipe
    from agentclone.training import TrainSettings, choose_checkpointing, longest_batch_tokens

    from conftest import REPO

    recipe = load_recipe(REPO / "recipes" / "quickstart.yaml", overrides={"stages": ["collect", "build"]})
    assert recipe.train.gradient_checkpointing is None  # the CPU preset leaves it to the machine
    run_recipe(recipe, tmp_path)
    samples = read_trajectories(tmp_path / "train.jsonl")
    settings = TrainSettings(**recipe.train.model_dump())
    dataset = make_objective("sft").dataset(samples, load_tokenizer(smollm2_path), ActionFormat(), settings.max_length)
    tokens = longest_batch_tokens(dataset, settings)
    assert tokens == 4 * max(len(x) for x in dataset["input_ids"]) < 4 * settings.max_length
    config = AutoConfig.from_pretrained(smollm2_path)
    GB = 10**9
    on, why = choose_checkpointing(settings, False, config, "fp32", tokens, total=24 * GB)
    assert not on and "7.8 GB" in why
    assert choose_checkpointing(settings, False, config, "fp32", tokens, total=8 * GB)[0]
    assert choose_checkpointing(settings, True, config, "fp32", tokens, total=24 * GB)[0]  # a GPU
    # two processes of accelerate launch on one machine: two steps in its memory
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    on, why = choose_checkpointing(settings, False, config, "fp32", tokens, total=16 * GB)
    assert on and "in each of 2 processes" in why and "15.7 GB" in why
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert not choose_checkpointing(settings, False, config, "fp32", tokens, total=16 * GB)[0]
    for fixed in (True, False):
        kept = settings.model_copy(update={"gradient_checkpointing": fixed})
        assert choose_checkpointing(kept, False, config, "fp32", tokens, total=8 * GB if not fixed else 24 * GB)[0] is fixed


@pytest.mark.parametrize("machine_gb, expected", [(1, True), (1000, False)])
def test_training_uses_what_was_chosen_and_records_it(tmp_path, tiny_model, monkeypatch, machine_gb, expected):
    """train_lora trains with the choice (a 1 GB machine cannot hold a 4 x 256-token step of even the tiny
    model with its process, so it checkpoints) and the adapter's metrics say which."""
    import json

    from agentclone import training
    from agentclone.data import Step, Trajectory

    monkeypatch.setattr(training, "memory_total_bytes", lambda: machine_gb * 10**9)
    samples = [Trajectory(id=f"e:t{i}#0", env_id="e/x-v1", task_id=f"t{i}", instructions="Craft things.",
                          success=True, steps=[Step(observation=f"obs {i}", thought="think", action="get 1 oak log")])
               for i in range(4)]
    metrics = training.train_lora(samples, tiny_model, tmp_path / "adapter",
                                  training.TrainSettings(max_steps=1, max_length=256, save_steps=100), progress=False)
    assert metrics["gradient_checkpointing"] is expected
    assert json.loads((tmp_path / "adapter" / "metrics.json").read_text())["gradient_checkpointing"] is expected
