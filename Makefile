# Entry points for a fresh machine: `make serve` and `make test`. Each step leaves a stamp so that
# re-running is fast when nothing changed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NATIVE_SRC := $(shell find native/src -name '*.rs' 2>/dev/null) Cargo.toml native/Cargo.toml $(wildcard Cargo.lock)
CONFIG ?= examples/quickstart.yaml

.PHONY: dev serve test test-rust test-python system-packages lint fmt bench bench-native bench-proxy bench-instructions clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.stamp-deps: requirements-dev.lock | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.lock
	touch $@

$(VENV)/.stamp-native: $(VENV)/.stamp-deps $(NATIVE_SRC) pyproject.toml
	VIRTUAL_ENV=$(CURDIR)/$(VENV) PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/maturin develop --release --quiet
	touch $@

dev: $(VENV)/.stamp-native

serve: dev
	$(BIN)/pygw serve -c $(CONFIG)

test-rust:
	cargo test --quiet --workspace

# Servers the tests start themselves (Redis for the shared throttle, nginx and wrk for the bench
# harness smoke test, h2load for its HTTP/2 scenarios), Chromium for the admin dashboard's page
# test, promtool (Debian's prometheus package) for the alert rules and Node for the `lambda`
# integration's test function, from Debian when absent. Without root the tests that need them
# skip, saying why.
system-packages:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v nginx >/dev/null || missing="$$missing nginx-light"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	command -v h2load >/dev/null || missing="$$missing nghttp2-client"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing from Debian"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; } \
			|| echo "could not install$$missing: the tests that need them will skip"; \
	fi

test-python: dev system-packages
	$(BIN)/python -m pytest -q

lint: dev
	cargo fmt --all -- --check
	cargo clippy --quiet --workspace --all-targets -- -D warnings
	cargo clippy --quiet --workspace --all-targets --features python -- -D warnings
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: dev test-rust test-python lint

fmt: dev
	cargo fmt --all
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench-native: dev
	$(BIN)/python bench/native_bench.py

# The proxy benchmark needs nginx and wrk; install them from Debian when they are missing.
bench-proxy: dev
	command -v nginx >/dev/null && command -v wrk >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq nginx-light wrk; }
	$(BIN)/python bench/proxy_bench.py

# Instructions per request under callgrind: steady where req/s on a shared machine is not.
bench-instructions: dev
	command -v valgrind >/dev/null && command -v nginx >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq valgrind nginx-light; }
	$(BIN)/python bench/instructions.py

# The whole harness: every scenario, report and plots in bench/results/<timestamp>/.
bench: dev
	command -v nginx >/dev/null && command -v wrk >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq nginx-light wrk; }
	$(BIN)/pygw bench

clean:
	rm -rf $(VENV) target
