# The README's two commands. Each creates .venv on first use and installs what it needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
# torch is pinned: 2.13.0 installs from a local CPU wheel; an unpinned torch pulls GBs of CUDA.
TORCH  := torch==2.13.0

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.stamp-run: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.stamp-test: $(VENV)/.stamp-run
	$(BIN)/pip install --quiet -e '.[test]' $(TORCH)
	touch $@

demo: $(VENV)/.stamp-run
	$(BIN)/normlab reproduce --quick --out runs/demo

# Two xdist workers on two cores; each keeps BLAS single-threaded so they do not fight over cores.
test: $(VENV)/.stamp-test
	$(BIN)/ruff check src tests benchmarks
	OPENBLAS_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 -m "not slow" -q --durations=15

lint: $(VENV)/.stamp-test
	$(BIN)/ruff check src tests benchmarks

bench: $(VENV)/.stamp-run
	$(BIN)/normlab bench

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
