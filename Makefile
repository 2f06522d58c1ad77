# `make book` builds the book by executing every chapter on the demo profile (CPU);
# `make test` runs the tests. Both create .venv/ and install the project first if needed.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

# Two threads on a shared 2-core machine were measured 40x slower for tiny models.
export OMP_NUM_THREADS := 1
export MKL_NUM_THREADS := 1
export TOKENIZERS_PARALLELISM := false
export WORKINGS_PROFILE ?= demo

.PHONY: book test install pair clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[book,test]"
	touch $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build --all . --builder html

test: $(STAMP)
	$(BIN)/python -m pytest

# Regenerate the paired notebooks (book/notebooks/*.ipynb) from the markdown chapters.
pair: $(STAMP)
	$(BIN)/jupytext --sync book/*.md

clean:
	rm -rf _build runs
