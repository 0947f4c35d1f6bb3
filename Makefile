# Two commands matter: `make reproduce` (the quick paper reproduction) and `make test`.
# Both create .venv on first use and reinstall when settings.ini or setup.py change.
SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed
export NETDEVIATION_CACHE ?= $(CURDIR)/.cache

.PHONY: install reproduce test test-slow test-nbs test-py bench export docs readme

$(STAMP): settings.ini setup.py
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

reproduce: $(STAMP)
	$(BIN)/netdeviation baselines
	$(BIN)/netdeviation reproduce --quick

test: test-nbs test-py

test-nbs: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 2 --timing

test-py: $(STAMP)
	$(BIN)/pytest -q tests

test-slow: $(STAMP)
	$(BIN)/nbdev_test --n_workers 1 --flags slow --timing
	$(BIN)/pytest -q --runslow tests

bench: $(STAMP)
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

docs: $(STAMP)
	$(BIN)/python nbs/_build_site.py docs

readme: $(STAMP)
	$(BIN)/python nbs/_build_site.py readme

export: $(STAMP)
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean
