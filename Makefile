# ecg_dml — the README's two commands are `make demo` and `make test`. Both work from a fresh clone with only
# Python 3.11 and pip: they create .venv, install the pinned environment (requirements/) and the package (editable).
# A second run reinstalls nothing unless requirements/, settings.ini or setup.py changed.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.ecg_dml-installed
SHARED ?= $(abspath ../shared)
export ECG_DML_SHARED := $(SHARED)

.PHONY: help install demo test sync clean-check nbtest nbtest-slow pytest readme readme-check export clean wheel

help:  ## list the targets
	@grep -hE '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): requirements/dev.txt requirements/constraints.txt settings.ini setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements/dev.txt -c requirements/constraints.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

install: $(STAMP)  ## create .venv with the pinned environment and the package (editable)

demo: $(STAMP)  ## pretrain an encoder with self-supervised DML on the bundled real PTB-XL sample and report what it learned
	$(BIN)/ecg_dml_info --n_read 20
	$(BIN)/ecg_dml_pretrain --out demo_run --overwrite

# `make test` runs every notebook once, top to bottom, as the docs build: each notebook is executed afresh (no
# cache) in its own process, cells flagged slow/cuda and `#| eval: false` skipped as nbdev_test skips them, and any
# cell error fails the build, naming the notebook and cell; the site is then built with warnings as errors. pytest
# runs the suite, tests/test_docs.py included (the built site in headless Chromium). `make nbtest` is nbdev_test's
# own run of the notebooks, kept for working on notebooks without the site.
test: $(STAMP) sync clean-check readme-check docs-deps docs-fresh  ## everything CI checks: sync, clean, README, every notebook run (docs build, -W), pytest + browser test
	ECG_DML_DOCS_TEST=1 ECG_DML_DOCS_PREBUILT=1 $(BIN)/pytest -q tests
	@echo "make test: all checks passed"

sync: $(STAMP)  ## notebooks and generated modules agree (nbdev_export changes nothing)
	@before=$$(find ecg_dml -name '*.py' -print0 | sort -z | xargs -0 sha256sum | sha256sum); \
	$(BIN)/nbdev_export; \
	after=$$(find ecg_dml -name '*.py' -print0 | sort -z | xargs -0 sha256sum | sha256sum); \
	if [ "$$before" != "$$after" ]; then echo "ecg_dml/ was out of sync with nbs/: nbdev_export changed it (commit the result)"; git status --short ecg_dml; exit 1; fi

clean-check: $(STAMP)  ## notebooks are clean (nbdev_clean changes nothing)
	@before=$$(find nbs -name '*.ipynb' -print0 | sort -z | xargs -0 sha256sum | sha256sum); \
	$(BIN)/nbdev_clean; \
	after=$$(find nbs -name '*.ipynb' -print0 | sort -z | xargs -0 sha256sum | sha256sum); \
	if [ "$$before" != "$$after" ]; then echo "nbs/ had unclean notebooks: nbdev_clean changed them (commit the result)"; git status --short nbs; exit 1; fi

nbtest: $(STAMP)  ## run every notebook top to bottom (cells flagged slow/cuda skipped; 2 notebooks at a time, 1 thread each)
	OMP_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 2 --timing

nbtest-slow: $(STAMP)  ## run every notebook including cells flagged slow
	OMP_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 2 --timing --flags slow

pytest: $(STAMP)  ## the pytest suite in tests/ (without the docs browser test: `make docs-test`)
	$(BIN)/pytest -q tests

export: $(STAMP)  ## regenerate ecg_dml/ from nbs/ and clean the notebooks
	$(BIN)/nbdev_export
	$(BIN)/nbdev_clean

readme: $(STAMP)  ## regenerate README.md from nbs/index.ipynb
	$(PY) scripts/make_readme.py nbs/index.ipynb README.md

readme-check: $(STAMP)  ## README.md is what nbs/index.ipynb produces
	$(PY) scripts/make_readme.py nbs/index.ipynb README.md --check

wheel: $(STAMP)  ## build the wheel into dist/
	$(PY) -m pip wheel -q --no-deps --no-build-isolation -w dist .

include docs/docs.mk

clean:  ## remove build artefacts (keeps .venv)
	rm -rf dist build *.egg-info _proc _docs .pytest_cache
