# `make book` builds the book by executing every chapter on the demo profile (CPU);
# `make test` runs the tests. Both create .venv/ and install the project first if needed,
# at the exact versions of requirements.lock (`make lock` refreshes it).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
LOCK := requirements.lock
# The torch the lock was made with (the CPU build). On a GPU machine pass your own build:
# make install TORCH="torch==2.13.0" (PyPI's CUDA build) or any torch>=2.4 wheel.
TORCH ?= $(shell grep -m1 '^torch==' $(LOCK))
TORCH_LOCKED := torch==2.13.0
LOCK_VENV := .venv-lock

# Two threads on a shared 2-core machine were measured 40x slower for tiny models.
export OMP_NUM_THREADS := 1
export MKL_NUM_THREADS := 1
export TOKENIZERS_PARALLELISM := false
export WORKINGS_PROFILE ?= demo

.PHONY: book test install lock pair clean

install: $(STAMP)

# Everything but torch comes from the lock with --no-deps, so nothing unpinned can slip in;
# `pip check` then proves the set is complete and consistent.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	grep -v '^torch==' $(LOCK) > $(VENV)/lock-without-torch.txt
	$(BIN)/python -m pip install --quiet --no-deps -r $(VENV)/lock-without-torch.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build --all . --builder html

test: $(STAMP)
	$(BIN)/python -m pytest

# Re-resolve every dependency of pyproject.toml (with the book and test extras) to exact versions.
lock:
	test -x $(LOCK_VENV)/bin/python || $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet pip-tools==7.6.2
	echo "$(TORCH_LOCKED)" > $(LOCK_VENV)/torch.txt
	cd $(CURDIR) && $(LOCK_VENV)/bin/pip-compile --quiet --upgrade --allow-unsafe --strip-extras --extra book --extra test \
		--constraint $(LOCK_VENV)/torch.txt --no-emit-index-url --no-emit-find-links -o $(LOCK) pyproject.toml

# Regenerate the paired notebooks (book/notebooks/*.ipynb) from the markdown chapters.
pair: $(STAMP)
	$(BIN)/jupytext --sync book/*.md

clean:
	rm -rf _build runs
