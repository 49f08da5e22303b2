# Two set-up commands for a newcomer: `make run` (demo build) and `make test`.
# Both create the virtual environment they need on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster

.PHONY: run test test-fast ui bench clean chromium postgres

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip install --quiet --no-deps mosaicml-streaming==0.13.0  # see pyproject.toml's test extra
	touch $@

run: $(BIN)/.installed  ## harvest the demo corpus from this Python and build it through Dagster
	$(BIN)/corpusmix demo

test: $(BIN)/.installed chromium postgres  ## the whole test suite (needs ../shared beside the clone)
	$(BIN)/python -m pytest -q

test-fast: $(BIN)/.installed  ## the edit loop: unit tests that need no full build (pytest -m "not slow"), ~1-2 min
	$(BIN)/python -m pytest -q -m "not slow"

chromium:  ## the real-browser UI test drives Debian's Chromium (installed here when missing; needs root)
	@command -v chromium >/dev/null || { \
	  echo "installing Debian's chromium for the browser test (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

postgres:  ## the cluster-instance test runs Dagster on a throwaway PostgreSQL server (Debian's, installed when missing)
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing Debian's postgresql for the Postgres-instance test (apt-get)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; }

ui: $(BIN)/.installed  ## the Dagster UI on http://127.0.0.1:3000, same instance as `make run`
	mkdir -p $(DAGSTER_HOME) && test -f $(DAGSTER_HOME)/dagster.yaml || printf 'telemetry:\n  enabled: false\n' > $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

bench: $(BIN)/.installed  ## ingest throughput on ../shared/corpus
	$(BIN)/python benchmarks/ingest_throughput.py

clean:
	rm -rf data .dagster manifests/demo
