# Every command a user types is here and in README.md.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test unit lint services clean

setup: ## create the virtualenv and install jobtrail with its test tools
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"

services: ## make sure PostgreSQL, RabbitMQ and Redis answer (starts local ones that are down)
	scripts/ensure-services.sh

test: services ## the whole test suite against real services
	$(BIN)/pytest -q

unit: ## the tests that need no service
	$(BIN)/pytest -q tests/unit

lint: ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
