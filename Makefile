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
# Tunix's Gemma code runs on JAX, kept apart from torch in its own environment (exports are
# checked against it: workings.export.tunix).
TUNIX_VENV := .venv-tunix
TUNIX_LOCK := requirements-tunix.lock
TUNIX_STAMP := $(TUNIX_VENV)/.installed-stamp

SHELL := /bin/bash
# Two threads on a shared 2-core machine were measured 40x slower for tiny models.
export OMP_NUM_THREADS := 1
export MKL_NUM_THREADS := 1
export TOKENIZERS_PARALLELISM := false
export WORKINGS_PROFILE ?= demo

.PHONY: book check-book test environments install install-tunix lock pair clean

install: $(STAMP)

# The two environments install side by side: each is mostly one core unpacking and compiling
# wheels (measured on a fresh clone: 130 s together, 219 s one after the other).
environments:
	$(MAKE) --jobs=2 --output-sync=target $(STAMP) $(TUNIX_STAMP)

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

# The build log is kept: any output a chapter writes to standard error is a warning there
# (nb_output_stderr), and the build fails on it. Then every page is checked in a browser.
book: environments
	mkdir -p _build
	set -o pipefail; $(BIN)/jupyter-book build --all . --builder html 2>&1 | tee _build/book.log
	! grep -n "mystnb.stderr\|stderr output" _build/book.log
	$(MAKE) check-book

# Opens every built page in headless Chromium (Debian's, installed here if missing) and fails on an
# element wider than the text column, an image without a caption, an error or warning output, or a
# path of the build machine; screenshots of every page go to _build/screenshots/.
check-book: $(STAMP)
	command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; } \
		|| { echo "check-book needs Debian's chromium (apt-get install chromium)"; exit 1; }
	$(BIN)/workings check-book _build/html --screenshots _build/screenshots

test: environments
	$(BIN)/python -m pytest

install-tunix: $(TUNIX_STAMP)

$(TUNIX_STAMP): $(TUNIX_LOCK)
	test -x $(TUNIX_VENV)/bin/python || $(PYTHON) -m venv $(TUNIX_VENV)
	$(TUNIX_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TUNIX_VENV)/bin/python -m pip install --quiet --no-deps -r $(TUNIX_LOCK)
	$(TUNIX_VENV)/bin/python -m pip check
	touch $(TUNIX_STAMP)

# Re-resolve every dependency of pyproject.toml (with the book and test extras) to exact versions.
lock:
	test -x $(LOCK_VENV)/bin/python || $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet pip-tools==7.6.2
	echo "$(TORCH_LOCKED)" > $(LOCK_VENV)/torch.txt
	cd $(CURDIR) && $(LOCK_VENV)/bin/pip-compile --quiet --upgrade --allow-unsafe --strip-extras --extra book --extra test \
		--constraint $(LOCK_VENV)/torch.txt --no-emit-index-url --no-emit-find-links -o $(LOCK) pyproject.toml
	$(LOCK_VENV)/bin/pip-compile --quiet --upgrade --allow-unsafe --strip-extras --no-emit-index-url \
		--no-emit-find-links -o $(TUNIX_LOCK) requirements-tunix.in

# Regenerate the paired notebooks (book/notebooks/*.ipynb, kaggle/*.ipynb) from their markdown.
pair: $(STAMP)
	$(BIN)/jupytext --sync book/*.md kaggle/*.md

clean:
	rm -rf _build runs
