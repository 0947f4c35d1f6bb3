# Two commands matter: `make reproduce` (the quick paper reproduction) and `make test`.
# Both create .venv on first use and reinstall when settings.ini or setup.py change. `reproduce` installs only what
# the package needs to run; every other target adds the `dev` tools (tests, docs, notebooks) on first use.
SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
RUN_STAMP := $(VENV)/.installed
# --no-compile: the .pyc are written on first import, even where the environment says not to write them: without
# them every Python process compiles torch again from source (about 5 s a process on two cores)
unexport PYTHONDONTWRITEBYTECODE
PIP   := $(BIN)/pip install --quiet --disable-pip-version-check --no-compile
export NETDEVIATION_CACHE ?= $(CURDIR)/.cache

.PHONY: corpus install reproduce test test-slow test-nbs test-py test-matrix bench export docs readme

$(RUN_STAMP): settings.ini setup.py
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(PIP) -e .
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP)
	$(PIP) -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Set-up and the quick reproduction, timed as a whole (venv creation included). It trains only the baselines the quick
# run needs (the `paper` ones); `netdeviation baselines` trains the `default` ones on its own.
START := $(shell date +%s)
reproduce: $(RUN_STAMP)
	@$(BIN)/netdeviation reproduce --quick; rc=$$?; \
	echo "make reproduce: $$(( $$(date +%s) - $(START) )) s in all (set-up included), exit status $$rc"; exit $$rc

test: test-nbs test-py

NB_THREADS ?= 1
test-nbs: $(STAMP)
	OMP_NUM_THREADS=$(NB_THREADS) $(BIN)/nbdev_test --n_workers 2 --timing

test-py: $(STAMP)
	$(BIN)/pytest -q tests

test-slow: $(STAMP)
	$(BIN)/nbdev_test --n_workers 1 --flags slow --timing
	$(BIN)/pytest -q --runslow tests

# The recoverability corpus (600 retraining runs, about an hour on two cores): resumable; then the committed tables,
# the package's copy the shipped advisor is fitted on, and the benchmark page's stored outputs.
CORPUS_RUNS ?= $(CURDIR)/_runs
corpus: $(STAMP)
	$(BIN)/python -c "from netdeviation.advisor import build_corpus; build_corpus('$(CORPUS_RUNS)', 'nbs/results', package=True)"

bench: $(STAMP)
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

docs: $(STAMP)
	$(BIN)/python nbs/_build_site.py docs

readme: $(STAMP)
	$(BIN)/python nbs/_build_site.py readme

export: $(STAMP)
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean

# The default suite under two CPU kernel sets x two thread counts, each with a fresh cache (so baselines are retrained
# with those kernels, as a fresh clone on another machine does). oneDNN and MKL are capped at the same instruction set.
# One summary line per combination; fails if any does.
MATRIX_CAPS    ?= default avx2
MATRIX_THREADS ?= 1 2
test-matrix: $(STAMP)
	@rm -f .test-matrix.log; fail=0; \
	for cap in $(MATRIX_CAPS); do for t in $(MATRIX_THREADS); do \
	  d=$$(mktemp -d); log=$$(mktemp); start=$$(date +%s); \
	  echo "== test-matrix: ATEN_CPU_CAPABILITY=$$cap threads=$$t (fresh cache $$d)"; \
	  case $$cap in default) isa="MKL_ENABLE_INSTRUCTIONS=SSE4_2 ONEDNN_MAX_CPU_ISA=SSE41";; \
	    avx2) isa="MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2";; *) isa="";; esac; \
	  if env $$isa ATEN_CPU_CAPABILITY=$$cap OMP_NUM_THREADS=$$t MKL_NUM_THREADS=$$t NETDEVIATION_CACHE=$$d \
	     $(MAKE) --no-print-directory test NB_THREADS=$$t > $$log 2>&1; then r=green; else r=RED; fail=1; fi; \
	  summary=$$(grep -E "^[0-9]+ (passed|failed)|[0-9]+ passed" $$log | tail -1); \
	  line="ATEN_CPU_CAPABILITY=$$cap threads=$$t: $$r in $$(( $$(date +%s) - start )) s; pytest: $$summary"; \
	  echo "$$line" | tee -a .test-matrix.log; [ $$r = green ] || tail -40 $$log; rm -rf $$d $$log; \
	done; done; echo "== test-matrix summary"; cat .test-matrix.log; exit $$fail
