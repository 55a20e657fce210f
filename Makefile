# streamkit task surface: people and CI run the same targets. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
KAFKA_PORT ?= 9092
export KAFKA_PORT

.DEFAULT_GOAL := help

# The stamp is rebuilt whenever pyproject.toml changes, so `make test` on a
# fresh clone installs everything and later runs skip the install.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,registry,web]'
	touch $@

.PHONY: help
help: ## List every target with one line each
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

.PHONY: install
install: $(VENV)/.installed ## Create .venv and install streamkit with its dev tools

.PHONY: kafka-fetch
kafka-fetch: install ## Fetch the pinned Kafka jars with mvn into the cache (once)
	$(BIN)/python -m streamkit.localkafka fetch

.PHONY: kafka-up
kafka-up: install ## Start the local broker on 127.0.0.1:$KAFKA_PORT; returns once it answers
	$(BIN)/python -m streamkit.localkafka up --port $(KAFKA_PORT)

.PHONY: kafka-down
kafka-down: install ## Stop the local broker (idempotent)
	$(BIN)/python -m streamkit.localkafka down --port $(KAFKA_PORT)

.PHONY: demo
demo: install ## Start a broker, run the orders pipeline and its windows on 10,000 orders, show a summary
	$(BIN)/python -m pipelines.demo

.PHONY: demo-secure
demo-secure: install ## The same demo over SASL_SSL (SCRAM-SHA-512, TLS, ACLs) on a secure broker of its own
	STREAMKIT_DEMO_SECURE=1 $(BIN)/python -m pipelines.demo

.PHONY: reports
reports: install ## Start a broker, a reports worker and the web page on 127.0.0.1:8000 until Ctrl-C
	$(BIN)/python -m pipelines.reports_serve

.PHONY: helm
helm: install ## Build the pinned helm + kubeconform and the offline Kubernetes schemas into ~/.cache/streamkit/tools (once)
	$(BIN)/python -m tests.helm.tools

.PHONY: test
test: install kafka-fetch helm ## Run the whole suite (unit + integration on a real broker, chart)
	$(BIN)/pytest -m "not chaos" tests

.PHONY: test-chaos
test-chaos: install kafka-fetch ## The long failure-injection tests make test leaves out (a 3-minute broker outage, ...)
	$(BIN)/pytest -m chaos tests

.PHONY: test-unit
test-unit: install ## Unit tests only (no broker)
	$(BIN)/pytest tests/unit

.PHONY: test-helm
test-helm: helm ## Chart tests: helm lint/template, assertions, offline Kubernetes schema validation
	$(BIN)/pytest tests/helm

.PHONY: lint
lint: install ## ruff and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict streamkit tests pipelines

.PHONY: bench
bench: install kafka-fetch ## Benchmarks against the local broker: throughput, latency, tables, windows (bench/README.md)
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.latency
	$(BIN)/python -m bench.tables
	$(BIN)/python -m bench.windows

.PHONY: clean
clean: ## Remove the virtual environment and caches (keeps the Kafka jar cache)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
