#!/usr/bin/env bash
# Every GPU-relevant benchmark in one device call (about 6-8 minutes on one H100/H200).
#
#   bash bench/fetch_gpu_wheels.sh          # here, once: wheels + tokenizer into .whl/ (~22 MB)
#   run: command "bash bench/gpu_suite.sh", carry [".whl"], timeout_s 600
#
# On the GPU machine only torch, transformers, peft and accelerate (and common libraries) are
# installed and nothing can be downloaded: the wheels listed in .whl/bench-wheels.txt are
# installed into /tmp/site, agentclone and the TextCraft plugin run from the tree (PYTHONPATH),
# and the models are random:SHAPE (bench/shapes.py), so no model files are needed.
#
# Writes $OUT/suite.json (every benchmark's JSON, keyed by name) and $OUT/suite.log.
# BENCH_BUDGET_S (default 480) caps the whole suite: a step that would start too late is
# skipped, and each step is killed at its own limit, so one hang costs only its step.
# BENCH_SMOKE=1 runs the same steps on the CPU with tiny sizes (to test this script).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=${OUT:-$REPO/runs/bench/gpu-suite}
mkdir -p "$OUT"
RES=$(mktemp -d /tmp/bench-results.XXXX)
BUDGET=${BENCH_BUDGET_S:-480}
SMOKE=${BENCH_SMOKE:-0}
SCALE=1  # step limits x SCALE (a shared CPU is much slower than the GPU)
START=$(date +%s)
exec > >(tee -a "$OUT/suite.log") 2>&1

PY=${PYTHON:-python3}
if [ "$SMOKE" = 1 ]; then
  PY=${PYTHON:-$REPO/.venv/bin/python}
  DEVICE=cpu
  SCALE=20
  SHAPES="smollm2-135m qwen2.5-0.5b"
  TRAIN_SHAPES="smollm2-135m"  # a 0.5B model trains in ~8 GB on a CPU: too much for a shared machine
  TRAIN_FIXED="--fixed-length 384 --batch-size 2 --samples 2 --steps 2 --warmup-steps 1 --threads 1"
  ROLL="--concurrency 1,2 --episodes 2 --max-new-tokens 4 --max-steps 2 --threads 1"
  PAD="--samples 4 --batch-size 2 --max-length 512 --steps 2 --warmup-steps 1 --threads 1"
  PAD_SHAPE=smollm2-135m
  export AGENTCLONE_CACHE=$(mktemp -d)  # as on the GPU machine: no converted model, so the carried tokenizer
else
  DEVICE=cuda
  SHAPES="smollm2-135m qwen2.5-0.5b qwen2.5-1.5b"
  TRAIN_SHAPES=$SHAPES
  TRAIN_FIXED="--fixed-length 1024 --batch-size 8 --samples 8 --steps 10 --warmup-steps 3"
  ROLL="--concurrency 1,4,16,64 --episodes 8"
  PAD="--samples 64 --batch-size 8 --max-length 2048 --warmup-steps 2"
  PAD_SHAPE=qwen2.5-0.5b
  if [ -s .whl/bench-wheels.txt ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      $(sed 's|^|.whl/|' .whl/bench-wheels.txt) || { echo "wheel install failed"; exit 1; }
    export PYTHONPATH=/tmp/site
  else
    echo "no .whl/bench-wheels.txt: run bench/fetch_gpu_wheels.sh here and carry .whl"
  fi
fi
export PYTHONPATH=$REPO:$REPO/plugins/textcraft${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
export AGENTCLONE_BENCH_TOKENIZER=${AGENTCLONE_BENCH_TOKENIZER:-$REPO/.whl/tokenizer}

step() {  # step NAME LIMIT_S COMMAND...
  local name=$1 limit=$(($2 * SCALE))
  shift 2
  local left=$((BUDGET - ($(date +%s) - START)))
  if [ "$left" -lt 30 ]; then
    echo "=== SKIP $name: ${left}s of the suite's budget left"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "=== $name (limit ${limit}s, $(( $(date +%s) - START ))s into the suite)"
  local t0=$(date +%s)
  timeout -k 10 "$limit" "$@"
  echo "=== $name: exit $? after $(( $(date +%s) - t0 ))s"
}

step preflight 60 "$PY" -c "
import sys, torch, transformers, peft, accelerate, trl, datasets, pydantic
import agentclone, bench.common
print('python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__,
      'peft', peft.__version__, 'trl', trl.__version__, 'datasets', datasets.__version__, 'pydantic', pydantic.__version__)
print('device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu',
      'textcraft', bench.common.textcraft_available())
"
[ "$SMOKE" = 1 ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

# 1. training at the three shapes, 8 x 1024 tokens: plain PEFT loop, agentclone, plain TRL (MFU)
for shape in $TRAIN_SHAPES; do
  step "training $shape" 150 "$PY" bench/training.py --device $DEVICE --model random:$shape \
    --runs peft_loop,peft_loop_gc,agentclone,trl $TRAIN_FIXED --json-out "$RES/training-$shape.json"
done

# 2. rollouts at the three shapes (random weights: every episode runs until 3 invalid answers)
for shape in $SHAPES; do
  engines=generate
  [ "$shape" = smollm2-135m ] && engines=generate,continuous
  step "rollouts $shape" 150 "$PY" bench/rollouts.py --device $DEVICE --model random:$shape \
    --engines $engines $ROLL --json-out "$RES/rollouts-$shape.json"
done

# 3. padded vs padding-free / packed / grouped batches on variable-length trajectories
step "training padding $PAD_SHAPE" 150 "$PY" bench/training.py --device $DEVICE --model random:$PAD_SHAPE \
  --runs padded,padding_free,group_by_length,packed,agentclone,agentclone_padding_free $PAD \
  --json-out "$RES/training-padding.json"

"$PY" - "$RES" "$OUT/suite.json" <<'EOF'
import json, sys
from pathlib import Path
res, out = Path(sys.argv[1]), Path(sys.argv[2])
merged = {p.stem: json.loads(p.read_text()) for p in sorted(res.glob("*.json"))}
tmp = out.with_suffix(".tmp")
tmp.write_text(json.dumps(merged, indent=1, default=str))
tmp.replace(out)
print(f"suite: {len(merged)} results in {out}: {', '.join(merged)}")
EOF
echo "suite done in $(( $(date +%s) - START ))s"
