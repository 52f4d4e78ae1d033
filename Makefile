# Set-up and entry points. `make demo` and `make test` work on a fresh machine with Python 3.11.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Every package of the dev and docs extras and their dependencies, pinned with hashes (`make lock`);
# torch is not in it: pip installs exactly torch==2.13.0 (the CPU wheel) first.
LOCK   := requirements.lock
UV     := uv==0.13.9
# Outputs go under runs/, which git ignores.
DEMO_OUT ?= runs/demo
# One thread for torch and numpy's OpenBLAS: these networks and batches are small, and
# threaded products on them run several times slower on a 2-core machine (the demo's
# training took 4x longer with the default thread count).
OMP_NUM_THREADS ?= 1
export OMP_NUM_THREADS

.PHONY: install lock demo test test-fast docs bench clean

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	# Exactly this torch, with pip (any other spec pulls several GB of CUDA packages), and uv.
	$(BIN)/pip install --no-deps torch==2.13.0 $(UV)
	# The rest from the lock, hash-checked, with uv (seconds; pip resolved and installed it in about 100 s).
	$(BIN)/uv pip install --python $(BIN)/python --require-hashes --no-deps -r $(LOCK)
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Re-resolve the lock after a change to pyproject.toml, keeping its other pins;
# `make lock UPGRADE=1` moves every package to the newest version pyproject.toml allows.
# uv reads torch's dependencies from the CPU wheel pip installs (pip's find-links, else PyTorch's CPU index).
$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(UV)

lock: $(BIN)/uv
	echo "torch==2.13.0+cpu" | $(BIN)/uv pip compile pyproject.toml - --extra dev --extra docs \
		--generate-hashes --no-emit-package torch --python $(BIN)/python --python-platform x86_64-manylinux_2_28 \
		$(if $(PIP_FIND_LINKS),--find-links $(PIP_FIND_LINKS),--torch-backend cpu) $(if $(UPGRADE),--upgrade) \
		--custom-compile-command "make lock" -o $(LOCK)

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
