# The README's commands. Each creates .venv on first use and installs what it needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
# torch is pinned: 2.13.0 installs from a local CPU wheel; an unpinned torch pulls GBs of CUDA.
TORCH  := torch==2.13.0

.PHONY: demo test docs lint bench clean reference reference-full

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.stamp-run: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

# The docs extra (Sphinx; the tutorials import torch). make test installs it too: the suite
# builds the site (tests/test_docs_site.py).
$(VENV)/.stamp-docs: $(VENV)/.stamp-run
	$(BIN)/pip install --quiet -e '.[docs]' $(TORCH)
	touch $@

$(VENV)/.stamp-test: $(VENV)/.stamp-docs
	$(BIN)/pip install --quiet -e '.[test]' $(TORCH)
	touch $@

demo: $(VENV)/.stamp-run
	$(BIN)/normlab reproduce --quick --out runs/demo

# Two xdist workers on two cores; each keeps BLAS single-threaded so they do not fight over cores.
# loadgroup: the tests that share one build of the docs site run on one worker (xdist_group).
test: $(VENV)/.stamp-test
	$(BIN)/ruff check src tests benchmarks docs tools
	OPENBLAS_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadgroup -m "not slow" -q --durations=15

# The documentation site into site/ (open site/index.html); any warning fails the build.
docs: $(VENV)/.stamp-docs
	OPENBLAS_NUM_THREADS=1 $(BIN)/sphinx-build -W --keep-going -b html docs site

lint: $(VENV)/.stamp-test
	$(BIN)/ruff check src tests benchmarks docs tools

# The reference results shipped with normlab (src/normlab/data/reference/, tools/make_reference.py):
# the demo's quick size (a few minutes), and the confirmatory full size, mnist5k, seeds
# 1000-1004 (hours on two cores; FULL_RESULTS=path/results.json ships a finished run instead).
reference: $(VENV)/.stamp-run
	$(BIN)/normlab reproduce --quick --out runs/reference-quick
	$(BIN)/python tools/make_reference.py runs/reference-quick/results.json

FULL_RESULTS ?= runs/reference-full/results.json
reference-full: $(VENV)/.stamp-run
	test -f $(FULL_RESULTS) || $(BIN)/normlab reproduce --out $(dir $(FULL_RESULTS))
	$(BIN)/python tools/make_reference.py $(FULL_RESULTS)

bench: $(VENV)/.stamp-run
	$(BIN)/normlab bench

# clean also drops numba's compile cache, which misses edits to a helper in another file than
# the compiled function that calls it (docs/guide/development.md)
clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis site docs/api docs/auto_tutorials \
		docs/sg_execution_times.rst
	find src -name '*.nbi' -delete -o -name '*.nbc' -delete
