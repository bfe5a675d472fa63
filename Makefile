# A fresh machine needs only Python 3.11+ and make: every target installs what it uses.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000
SIM_PORT ?= 8900
# The Quick start's simulated Jira: its credentials, which `make run` and `make env` share.
SIM_EMAIL := dev@example.com
SIM_TOKEN := dev-token
SIM_SECRET := dev-secret
SIM_ENV = JIRA_BASE_URL=http://127.0.0.1:$(SIM_PORT) JIRA_FLAVOR=cloud JIRA_EMAIL=$(SIM_EMAIL) \
	JIRA_API_TOKEN=$(SIM_TOKEN) JIRA_WEBHOOK_SECRET=$(SIM_SECRET) PORT=$(PORT)

# The suites of every feature that touches PostgreSQL, run through PgBouncer by test-pgbouncer.
PGBOUNCER_TESTS ?= tests/test_pgbouncer.py tests/test_webhook.py tests/test_memo.py \
	tests/test_sync.py tests/test_poller.py tests/test_tracking.py tests/test_changes.py \
	tests/test_subscriptions.py tests/test_migrate.py

.PHONY: install lock test test-pg15 test-pgbouncer test-failover wheel-check alerts-check run env \
	serve demo bench lint format clean

install: $(STAMP)

# The development and test environment, exactly as locked (requirements/dev.lock, hashes
# checked: the service's dependencies plus the dev, embedded and bench extras), then the
# project itself, editable, with no dependency of its own choosing.
$(STAMP): pyproject.toml requirements/dev.lock
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements/dev.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

# Re-resolve the locks after a change to pyproject.toml's dependencies (needs PyPI): the
# development lock, and the image's lock (the runtime dependencies alone) within it, both
# for Python 3.11 on linux x86_64.
UV_VERSION := 0.13.9
LOCK_FOR := --generate-hashes --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
	--custom-compile-command "make lock" --quiet
lock: install
	$(BIN)/pip install --quiet 'uv==$(UV_VERSION)'
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra embedded --extra bench $(LOCK_FOR) \
		--output-file requirements/dev.lock
	$(BIN)/uv pip compile pyproject.toml --constraint requirements/dev.lock $(LOCK_FOR) \
		--output-file requirements/service.lock

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

# The wheel as pip installs it: built, installed into a fresh virtual environment outside the
# repository, then `migrate`, `serve` and a read from another directory (.ci/wheel-check).
wheel-check:
	.ci/wheel-check

# The shipped alerts: promtool's rule check and the alerts' unit tests (each fires and
# resolves). promtool comes with Debian's `prometheus` package (.ci/run installs it).
alerts-check:
	promtool check rules deploy/prometheus/alerts.yml
	promtool test rules deploy/prometheus/alerts_test.yml

# The same suite against a throwaway PostgreSQL 15 server (installs postgresql-15 when missing).
test-pg15: install
	.ci/with-postgres15 $(BIN)/pytest $(PYTEST_ARGS)

# Those suites with the app's DATABASE_URL through a real PgBouncer in transaction mode, the
# listeners direct (DATABASE_LISTEN_URL); needs pgbouncer installed (.ci/run installs it).
test-pgbouncer: install
	TEST_PGBOUNCER=1 $(BIN)/pytest $(PGBOUNCER_TESTS) $(PYTEST_ARGS)

# A primary and a streaming standby from the embedded binaries; the primary SIGKILLed under
# load, the standby promoted (tests/test_failover.py; also part of `make test`).
test-failover: install
	$(BIN)/pytest -m failover -s tests/test_failover.py $(PYTEST_ARGS)

# The Quick start stack: the cache on PORT against a local Jira simulator on SIM_PORT, always
# (JIRA_* variables in your environment are not used: `make serve` caches your own Jira).
# `make env` prints the variables that point the CLI at this stack.
run: install
	@if [ -n "$$JIRA_BASE_URL" ]; then \
	  echo "make run serves against the local simulator; JIRA_BASE_URL=$$JIRA_BASE_URL is not used (make serve uses it)."; fi
	@echo "The cache: http://$${HOST:-127.0.0.1}:$(PORT)  (e.g. GET /api/v1/issues/ALPHA-3)"
	@echo 'The CLI against it: eval "$$(make -s env)", then e.g. jira-status-cache check'
	@$(BIN)/jira-status-cache simulate --port $(SIM_PORT) --email $(SIM_EMAIL) --token $(SIM_TOKEN) \
		--webhook-url http://127.0.0.1:$(PORT)/api/v1/webhooks/jira --webhook-secret $(SIM_SECRET) & \
	sim=$$!; trap 'kill $$sim 2>/dev/null' EXIT INT TERM; \
	$(SIM_ENV) $(BIN)/jira-status-cache serve

# The variables that point the CLI (and curl) at `make run`'s stack: eval "$(make -s env)".
env:
	@echo 'export PATH="$(abspath $(BIN)):$$PATH"'
	@for pair in $(SIM_ENV); do echo "export $$pair"; done

# The cache against your own Jira: set JIRA_BASE_URL and JIRA_EMAIL + JIRA_API_TOKEN (or
# JIRA_PAT), and any other setting of README.md's Configuration, in the environment.
serve: install
	@test -n "$$JIRA_BASE_URL" || { echo "make serve: set JIRA_BASE_URL (and its credentials) first; make run serves a simulated Jira" >&2; exit 2; }
	$(BIN)/jira-status-cache serve

# Needs no configuration: its own PostgreSQL under .data/demo, a simulated Jira and team.
demo: install
	$(BIN)/jira-status-cache demo --port $(PORT) $(DEMO_ARGS)

# The benchmark suite (bench/README.md): `make bench`, or `make bench ARGS=--quick`.
bench: install
	$(BIN)/python -m bench $(ARGS)

lint: install
	$(BIN)/ruff format --check service jira_simulator cache_demo tests bench
	$(BIN)/ruff check service jira_simulator cache_demo tests bench
	$(BIN)/mypy --strict service jira_simulator cache_demo bench

format: install
	$(BIN)/ruff format service jira_simulator cache_demo tests bench
	$(BIN)/ruff check --fix service jira_simulator cache_demo tests bench

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache
