# Every command a user types is here and in README.md.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo up test unit chaos lint services contracts bench bench-compare clean

setup: ## create the virtualenv and install jobtrail with its test tools
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"

demo: setup services ## start the whole system, run example jobs, show outcomes and a history
	$(BIN)/jobtrail demo

up: setup services ## run the four services until Ctrl-C (API on 127.0.0.1:8080)
	$(BIN)/jobtrail up

services: ## make sure PostgreSQL, RabbitMQ and Redis answer (starts local ones that are down)
	scripts/ensure-services.sh

test: services ## the whole test suite against real services
	$(BIN)/pytest -q

chaos: services ## every fault scenario (bounded to 20 minutes), then the reliability table
	JOBTRAIL_CHAOS_REPORT=$${JOBTRAIL_CHAOS_REPORT:-.jobtrail/reliability.md} timeout 1200 $(BIN)/pytest -q -m chaos tests/chaos

unit: ## the tests that need no service
	$(BIN)/pytest -q tests/unit

lint: ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

contracts: ## regenerate contracts/asyncapi.json and contracts/openapi.json
	$(BIN)/python -m services.specs

bench: ## store, replay, end-to-end, audit-export and dashboard-overview benchmarks (print figures and the machine)
	$(BIN)/python -m benchmarks.store_throughput --jobs 2000
	$(BIN)/python -m benchmarks.replay_throughput --events 100000
	$(BIN)/python -m benchmarks.e2e_throughput --jobs 3000 --rounds 2
	$(BIN)/python -m benchmarks.audit_export --events 200000
	$(BIN)/python -m benchmarks.overview --events 100000

bench-compare: services ## jobtrail side by side with Celery and Dramatiq (../shared/anchors); ARGS=--quick to check it works, ARGS=--rss-100k for the 100,000-job memory reading
	$(BIN)/python -m benchmarks.compare $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
