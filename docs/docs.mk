# The documentation site (issue 9): included from the Makefile, which defines PY, BIN and STAMP.
# `make docs` executes the notebooks that changed since the last build (cached in docs/_build/exec), converts them
# for Sphinx and builds docs/_build/html with warnings as errors; `make docs-test` opens it in headless Chromium.
# `make test` uses `docs-fresh` (every notebook executed again: a cached result is not a run) and `docs-deps`.
.PHONY: docs docs-fresh docs-test docs-serve docs-deps docs-clean

DOCS_JOBS ?= 2
DOCS_PORT ?= 8000

DOCS_STAMP := $(VENV)/.ecg_dml-docs-installed
$(DOCS_STAMP): $(STAMP) requirements/docs.txt requirements/constraints.txt
	$(PY) -m pip install -q --disable-pip-version-check -r requirements/docs.txt -c requirements/constraints.txt
	@touch $(DOCS_STAMP)

# One thread per notebook process (as `make nbtest`): DOCS_JOBS processes share the cores instead of oversubscribing them.
docs: $(DOCS_STAMP)  ## build the documentation site from nbs/ into docs/_build/html (Sphinx -W; cached executions)
	OMP_NUM_THREADS=1 $(PY) scripts/build_docs.py --jobs $(DOCS_JOBS)

docs-fresh: $(DOCS_STAMP)  ## the same, executing every notebook again (no cache): the notebook run of `make test`
	OMP_NUM_THREADS=1 $(PY) scripts/build_docs.py --jobs $(DOCS_JOBS) --force

docs-deps:  ## install Debian's chromium and chromium-driver (the browser test's), when missing
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then exit 0; fi; \
	sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	echo "installing chromium and chromium-driver (apt)"; \
	$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium chromium-driver >/dev/null

docs-test: docs docs-deps  ## open the built site in headless Chromium: pages, sidebar links, API reference, search
	ECG_DML_DOCS_TEST=1 ECG_DML_DOCS_PREBUILT=1 $(BIN)/pytest -q tests/test_docs.py

docs-serve: docs  ## serve the site on http://127.0.0.1:$(DOCS_PORT)
	$(PY) -m http.server $(DOCS_PORT) --bind 127.0.0.1 --directory docs/_build/html

docs-clean:  ## remove docs/_build (executed notebooks included)
	rm -rf docs/_build
