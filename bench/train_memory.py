"""Where training's memory goes: peak resident memory of one LoRA training step (forward, loss, backward) of
SmolLM2-135M in float32 on the CPU, by sequence length, with and without gradient checkpointing, each case in
a fresh process (ru_maxrss is a process-wide peak).

    OMP_NUM_THREADS=2 .venv/bin/python bench/train_memory.py [--lengths 250,500,1000] [--batch 4]

Prints, per case, the peak after the model is loaded, after the forward pass, and after the backward pass, and
the ratio of each forward peak to the same length without checkpointing (the baseline, measured in the same run).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

STEP = r"""
import json, os, resource, sys
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM
from agentclone.models import resolve_model

def peak_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6

batch, length, checkpointing, attn = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(resolve_model("smollm2-135m"), dtype=torch.float32, attn_implementation=attn)
model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
if checkpointing:
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
model.train()
out = {"loaded": peak_gb()}
ids = torch.randint(0, model.config.vocab_size, (batch, length))
logits = model(input_ids=ids, use_cache=False).logits
out["forward"] = peak_gb()
out["logits_gb"] = logits.numel() * logits.element_size() / 1e9
loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), ids.view(-1))
loss.backward()
out["backward"] = peak_gb()
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", default="250,500,1000")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--attn", default="sdpa", help="attention implementation (sdpa, eager)")
    args = ap.parse_args()
    rows = []
    for length in (int(x) for x in args.lengths.split(",")):
        for checkpointing in (False, True):
            res = subprocess.run([sys.executable, "-c", STEP, str(args.batch), str(length),
                                  "1" if checkpointing else "0", args.attn],
                                 capture_output=True, text=True, check=True)
            rows.append((length, checkpointing, json.loads(res.stdout.strip().splitlines()[-1])))
    print(f"batch {args.batch}, attention {args.attn}; peak resident memory in GB")
    print("| tokens per row | checkpointing | loaded | after forward | after backward | logits | forward vs no checkpointing |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    base = {length: r["forward"] for length, ckpt, r in rows if not ckpt}
    for length, ckpt, r in rows:
        print(f"| {length} | {'on' if ckpt else 'off'} | {r['loaded']:.2f} | {r['forward']:.2f} | {r['backward']:.2f} | "
              f"{r['logits_gb']:.2f} | {r['forward'] / base[length]:.2f}x |")


if __name__ == "__main__":
    main()
