# Set-up and entry points. `make demo` and `make test` work on a fresh machine with Python 3.11.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Outputs go under runs/, which git ignores.
DEMO_OUT ?= runs/demo
# One thread for torch and numpy's OpenBLAS: these networks and batches are small, and
# threaded products on them run several times slower on a 2-core machine (the demo's
# training took 4x longer with the default thread count).
OMP_NUM_THREADS ?= 1
export OMP_NUM_THREADS

.PHONY: install demo test test-fast docs bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# Exactly this torch: any other spec pulls several GB of CUDA packages.
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e ".[dev,docs]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/spiking-dqn demo --out $(DEMO_OUT)

test: $(STAMP)
	# PostgreSQL server for the shared-study tests (no-op when present; they skip without it).
	bash scripts/install_postgres.sh
	# Two workers (pytest-xdist, one per core); the slowest tests are listed at the end.
	$(BIN)/python -m pytest -n 2 --durations=15
	# The documentation site, strict (a broken link or API reference fails the build).
	$(MAKE) docs

test-fast: $(STAMP)
	# The suite without the tests marked slow (training, many episodes).
	$(BIN)/python -m pytest -n 2 --durations=10 -m "not slow"

docs: $(STAMP)
	# docs/ and the API pages from the docstrings (mkdocs.yml) into site/, which git ignores; offline.
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) site *.egg-info
