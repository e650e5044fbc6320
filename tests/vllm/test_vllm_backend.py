"""The vllm backend (vLLM's offline engine, LoRA per request) against the hf backend, for real.

Runs in .venv-vllm (scripts/setup_vllm_venv.sh) on the CPU: one engine for the
whole module, the real SmolLM2-135M in float32, TextCraft held-out episodes
with the quickstart settings, and a LoRA adapter that changes the answers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from vllm_testing import (
    ENV,
    ENV_KWARGS,
    EPISODES,
    GEN,
    actions,
    answers,
    first_step_requests,
    heldout_rollouts,
    hf_reference,
    make_noisy_adapter,
    noisy_adapter,
    skip_or_fail_without_vllm,
)

skip_or_fail_without_vllm()

from agentclone.policies.base import make_policy  # noqa: E402
from agentclone.policies.vllm import _ENGINES, shutdown_engines  # noqa: E402


@pytest.fixture(scope="module")
def model_path():
    from agentclone.models import resolve_model

    return resolve_model("smollm2-135m")


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return noisy_adapter(tmp_path_factory)


@pytest.fixture(scope="module")
def vllm_base():
    policy = make_policy("vllm", model="smollm2-135m", generation=GEN)
    yield policy
    shutdown_engines()


def test_greedy_rollouts_through_vllm_match_hf_with_and_without_the_adapter(vllm_base, adapter):
    hf_runs = hf_reference(adapter)
    vllm_adapter = make_policy("vllm", model="smollm2-135m", adapter=adapter, generation=GEN)
    assert vllm_adapter.engine is vllm_base.engine  # one engine serves the base model and the adapter
    runs = {"base": heldout_rollouts(vllm_base, EPISODES), "adapter": heldout_rollouts(vllm_adapter, EPISODES)}
    for name in ("base", "adapter"):
        for hf_traj, vllm_traj in zip(hf_runs[name], runs[name]):
            assert actions(vllm_traj) == actions(hf_traj), (name, hf_traj.id)
            assert answers(vllm_traj) == answers(hf_traj), (name, hf_traj.id)  # the same text, stop included
            assert vllm_traj.success == hf_traj.success
    # the comparison means something: the adapter changes what the model does
    changed = [b.id for b, a in zip(runs["base"], runs["adapter"]) if answers(b) != answers(a)]
    assert changed, "the adapter did not change any answer; the comparison would not catch an ignored adapter"
    assert sum(len(t.steps) for t in runs["base"]) >= EPISODES


def test_one_batch_mixes_the_base_model_and_the_adapter(vllm_base, adapter):
    engine = vllm_base.engine
    requests = first_step_requests(vllm_base, 4)
    prompts = [engine.render(r.messages) for r in requests]
    base = engine.complete(prompts, [None] * 4, GEN)
    tuned = engine.complete(prompts, [adapter] * 4, GEN)
    assert base != tuned
    mixed = engine.complete(prompts + prompts, [None] * 4 + [adapter] * 4, GEN)
    assert mixed == base + tuned


def test_a_recipe_evaluates_through_the_vllm_backend(vllm_base, adapter, tmp_path):
    from agentclone.pipeline import evaluate
    from agentclone.prompting import ActionFormat
    from agentclone.recipes import validate_recipe

    recipe = validate_recipe({
        "name": "vllm-eval",
        "env": {"id": ENV, "kwargs": ENV_KWARGS},
        "eval": {"backend": "vllm", "episodes": 2, "generation": {"max_new_tokens": 40},
                 "rollout": {"concurrency": 2, "max_consecutive_invalid": 3}},
    })
    engines = len(_ENGINES)
    shutil.copytree(adapter, tmp_path / "adapter")
    report = evaluate(recipe, tmp_path / "adapter", tmp_path, ActionFormat())
    assert len(_ENGINES) == engines  # base and adapter reused the module's engine
    assert report["base"]["episodes"] == 2 and report["adapter"]["episodes"] == 2
    saved = json.loads(Path(tmp_path / "report.json").read_text())
    assert saved["base"]["episodes"] == 2
    models = {json.loads(line)["model"] for line in (tmp_path / "eval" / "adapter.jsonl").read_text().splitlines()}
    assert models == {f"smollm2-135m+{tmp_path / 'adapter'}"}


def test_adapter_errors_are_clear(vllm_base, model_path, tmp_path):
    with pytest.raises(FileNotFoundError, match="no LoRA adapter at .*adapter_config.json missing"):
        make_policy("vllm", model="smollm2-135m", adapter=str(tmp_path / "nothing"), generation=GEN)
    big = make_noisy_adapter(model_path, tmp_path / "r32", r=32)
    with pytest.raises(ValueError, match="LoRA rank 32 .* max_lora_rank 16"):
        vllm_base.engine.lora_request(str(big))
