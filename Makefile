# nnverify: `make demo` runs a real verification, `make test` runs the test suite,
# `make serve` runs the service (API + two CPU workers) in the foreground.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: demo test install install-dev install-service redis tools serve audit-demo bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e .
	touch $@

$(VENV)/.installed-service: $(VENV)/.installed
	$(PIP) install -q -c constraints.txt -e '.[service]'
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed-service
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $@

$(VENV)/.installed-audit: $(VENV)/.installed
	$(PIP) install -q -c constraints.txt -e '.[audit]'
	touch $@

install: $(VENV)/.installed
install-service: $(VENV)/.installed-service
install-dev: $(VENV)/.installed-dev

demo: install
	$(PY) -m verifier.demo

redis:
	@bash .ci/ensure-redis

# headless Chromium (web page test) and docker-compose v1 (compose file check), from Debian
tools:
	@bash .ci/ensure-tools

test: install-dev redis tools
	$(PY) -m pytest

# API on 127.0.0.1:8000 with one worker of two processes; jobs in SQLite and blobs under
# $${NNVERIFY_DATA:-.nnverify}. Ctrl-C stops everything. Make a token with
# `.venv/bin/nnverify token create NAME`.
serve: install-service redis
	$(VENV)/bin/nnverify serve --host 127.0.0.1 --port 8000 --workers 2

# trains two small digits models (sklearn's bundled 8x8 digits), audits a true and an inflated
# claim about them, and writes the reports under audit-demo/
audit-demo: $(VENV)/.installed-audit
	$(PY) -m verifier.audit.demo --out audit-demo

clean:
	rm -rf $(VENV) .pytest_cache
