"""What the vLLM tests share: a LoRA adapter that really changes answers, TextCraft rollouts, comparisons."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from agentclone.data import Trajectory
from agentclone.envs import make_env
from agentclone.policies.base import GenerationSettings, Policy, PolicyRequest
from agentclone.prompting import build_prompt
from agentclone.rollout import RolloutSettings, plan_episodes, run_rollouts

SKIP_REASON = (
    "vLLM is not installed in this venv: create .venv-vllm with scripts/setup_vllm_venv.sh and run "
    ".venv-vllm/bin/python -m pytest tests/vllm"
)


def vllm_installed() -> bool:
    """True when the real vLLM is importable.

    Not ``importorskip("vllm")``: with tests/ on sys.path this very folder is
    importable as a namespace package named ``vllm``.
    """
    spec = importlib.util.find_spec("vllm")
    return spec is not None and spec.origin is not None


def skip_or_fail_without_vllm() -> None:
    """Skip a module when vLLM is missing, except where the tests must run (``make test-vllm``, CI):
    there ``AGENTCLONE_REQUIRE_VLLM=1`` turns the skip into a failure, so a broken vLLM install
    cannot pass as green."""
    import os

    import pytest

    if vllm_installed():
        return
    if os.environ.get("AGENTCLONE_REQUIRE_VLLM") == "1":
        pytest.fail(f"AGENTCLONE_REQUIRE_VLLM=1 but {SKIP_REASON}", pytrace=False)
    pytest.skip(SKIP_REASON, allow_module_level=True)


ENV = "textcraft/craft-v1"
# the quickstart recipe's environment and eval generation settings, with shorter episodes for CI
ENV_KWARGS = {"max_depth": 1, "heldout_fraction": 0.35, "num_distractors": 3, "max_steps": 4}
GEN = GenerationSettings(max_new_tokens=40, temperature=0.0)
ROLLOUT = RolloutSettings(concurrency=16, max_consecutive_invalid=3)
EPISODES = 4
_memo: dict = {}


def make_noisy_adapter(model_path: str, out: Path, r: int = 8, scale: float = 0.05, seed: int = 0) -> Path:
    """A PEFT LoRA on every linear layer with random non-zero B weights (A is random already).

    Untrained, but it moves the logits enough to change greedy answers, so a
    backend that ignored the adapter would be caught.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", lora_dropout=0.0))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, scale)
    peft_model.save_pretrained(out)
    return out


def noisy_adapter(tmp_path_factory) -> str:
    """The session's noisy adapter (made once, shared by the test modules)."""
    if "adapter" not in _memo:
        from agentclone.models import resolve_model

        _memo["adapter"] = str(make_noisy_adapter(resolve_model("smollm2-135m"), tmp_path_factory.mktemp("lora") / "noisy"))
    return _memo["adapter"]


def hf_reference(adapter: str) -> dict[str, list[Trajectory]]:
    """hf rollouts of the base model and of ``adapter`` on ``EPISODES`` held-out goals (once per session)."""
    key = ("hf", adapter)
    if key not in _memo:
        from agentclone.policies.base import make_policy

        out = {}
        for name, path in (("base", None), ("adapter", adapter)):
            policy = make_policy("hf", model="smollm2-135m", adapter=path, generation=GEN, batch_size=16)
            out[name] = heldout_rollouts(policy, EPISODES)
            policy.close()
        _memo[key] = out
    return _memo[key]


def heldout_rollouts(policy: Policy, episodes: int) -> list[Trajectory]:
    """``episodes`` held-out TextCraft episodes in a fixed order (the same for every policy)."""
    probe = make_env(ENV, **ENV_KWARGS)
    tasks = probe.tasks("heldout")
    probe.close()
    plan = plan_episodes(tasks, episodes, seed=1000)
    res = run_rollouts(lambda: make_env(ENV, **ENV_KWARGS), policy, plan, ROLLOUT, progress=False)
    by_id = {t.id: t for t in res.trajectories}
    return [by_id[e.id] for e in plan]


def first_step_requests(policy: Policy, n: int) -> list[PolicyRequest]:
    """The first prompt of ``n`` held-out TextCraft goals."""
    env = make_env(ENV, **ENV_KWARGS)
    try:
        requests = []
        for task in env.tasks("heldout")[:n]:
            obs = env.reset(task)
            msgs = build_prompt(env.instructions, [], obs, policy.fmt, policy.count_tokens, 1536)
            requests.append(PolicyRequest(messages=msgs, episode_id=task.id))
        return requests
    finally:
        env.close()


def actions(traj: Trajectory) -> list[str]:
    return [s.action for s in traj.steps]


def answers(traj: Trajectory) -> list[str | None]:
    return [s.raw_output for s in traj.steps]
