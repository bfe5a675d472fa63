# A fresh machine needs only Python 3.11+ and make: every target installs what it uses.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SIM_PORT ?= 8900

# The suites of every feature that touches PostgreSQL, run through PgBouncer by test-pgbouncer.
PGBOUNCER_TESTS ?= tests/test_pgbouncer.py tests/test_webhook.py tests/test_memo.py \
	tests/test_sync.py tests/test_poller.py tests/test_tracking.py tests/test_changes.py \
	tests/test_subscriptions.py tests/test_migrate.py

.PHONY: install test test-pg15 test-pgbouncer test-failover wheel-check run demo bench lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

# The wheel as pip installs it: built, installed into a fresh virtual environment outside the
# repository, then `migrate`, `serve` and a read from another directory (.ci/wheel-check).
wheel-check:
	.ci/wheel-check

# With JIRA_BASE_URL unset, `make run` serves against a local Jira simulator so that
# it works on a fresh machine; set the JIRA_* variables to cache your own Jira.
# The same suite against a throwaway PostgreSQL 15 server (needs postgresql-15 installed).
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

run: install
	@if [ -n "$$JIRA_BASE_URL" ]; then exec $(BIN)/jira-status-cache serve; fi; \
	echo "JIRA_BASE_URL is not set: serving against a local Jira simulator (SIM_PORT=$(SIM_PORT))."; \
	echo "Set JIRA_BASE_URL and JIRA_EMAIL + JIRA_API_TOKEN (or JIRA_PAT) to cache your Jira."; \
	echo "The cache: http://$${HOST:-127.0.0.1}:$${PORT:-8000}  (e.g. GET /api/v1/issues/ALPHA-1)"; \
	$(BIN)/jira-status-cache simulate --port $(SIM_PORT) --email dev@example.com --token dev-token \
		--webhook-url http://127.0.0.1:$${PORT:-8000}/api/v1/webhooks/jira --webhook-secret dev-secret & \
	sim=$$!; trap 'kill $$sim 2>/dev/null' EXIT INT TERM; \
	JIRA_BASE_URL=http://127.0.0.1:$(SIM_PORT) JIRA_EMAIL=dev@example.com JIRA_API_TOKEN=dev-token \
	JIRA_WEBHOOK_SECRET=dev-secret $(BIN)/jira-status-cache serve

# Needs no configuration: its own PostgreSQL under .data/demo, a simulated Jira and team.
demo: install
	$(BIN)/jira-status-cache demo $(DEMO_ARGS)

# The benchmark suite (bench/README.md): `make bench`, or `make bench ARGS=--quick`.
bench: install
	test -x $(BIN)/py-spy || $(BIN)/pip install --quiet -e '.[dev,bench]'
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
