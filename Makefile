# Payloop: `make dev` runs the whole platform locally, `make test` runs every test.
PYTHON ?= python3
UV_VERSION := 0.13.9
VENV := .venv
UV := $(VENV)/bin/uv
PY := $(VENV)/bin/python

.PHONY: install browser dev test test-fast bench schemas lint clean

$(VENV)/.installed: pyproject.toml uv.lock libs/pyproject.toml $(wildcard services/*/pyproject.toml)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(UV) sync --frozen --inexact --python $(PY)
	@touch $@

install: $(VENV)/.installed

# Browser tests drive Debian's Chromium through Playwright (`playwright install` cannot download here).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

dev: install ## run the whole platform on the embedded runtime (Ctrl-C stops it)
	$(VENV)/bin/payloop dev

test: install browser ## every test, against a real PostgreSQL and the real broker started by the session
	$(VENV)/bin/pytest

test-fast: install browser ## everything except the multi-process fault drills
	$(VENV)/bin/pytest -m "not slow"

schemas: install ## regenerate docs/events (AsyncAPI and JSON Schemas) from the catalogue
	$(VENV)/bin/payloop events schema --write

bench: install ## the benchmark (docs/benchmarks.md); `make bench BENCH=--quick` for small sizes
	$(VENV)/bin/payloop bench $(BENCH)

clean:
	rm -rf $(VENV) .payloop .pytest_cache
