# The Makefile only wraps commands; the logic lives in scripts/ and the Rust code.
# Everything that needs Postgres or Redis runs through scripts/dev-env.sh, which finds or starts them.

SHELL := /bin/bash
ENV := scripts/dev-env.sh run --
VENV_BIN := .local/venv/bin
# Where cargo puts binaries: CARGO_TARGET_DIR when set, as cargo itself does.
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
# Bind to loopback in local runs; containers use the binaries' default (0.0.0.0).
export CUSTOPS_LISTEN_HOST ?= 127.0.0.1

.PHONY: run test test-python client-python bench lint fmt clippy proto-check k8s-check tools build

## run: install the tools (the banner's calls use buf from .local/venv), build, make sure
## Postgres and Redis are reachable, migrate, and run all four services
run: tools
	cargo build --bin custops
	$(ENV) $(TARGET_DIR)/debug/custops dev

## test: the whole test suite against a real Postgres and Redis (after the tools: a test runs
## the calls the `custops dev` banner prints, with buf): the cargo tests, then the Python
## client's; both always run, and it fails if either does
test: tools
	status=0; \
	$(ENV) cargo test --workspace --no-fail-fast || status=1; \
	{ cargo build --bin custops && $(ENV) scripts/client-python.sh test; } || status=1; \
	exit $$status

## test-python: the Python client's pytest suite (clients/python/tests), through the package
## alone, against a `custops dev` it starts from this build in a database of its own
test-python:
	cargo build --bin custops
	$(ENV) scripts/client-python.sh test

## client-python: the Python client's wheel, into $(TARGET_DIR)/python/ (clients/python/README.md)
client-python:
	scripts/client-python.sh wheel

## bench: every performance goal against a baseline measured in the same run (release build):
## prints one table and writes target/bench/results.json (custops bench; README "Benchmarks")
bench:
	scripts/bench-tools.sh
	cargo build --release --bin custops
	$(ENV) $(TARGET_DIR)/release/custops bench

## lint: formatting, clippy with warnings as errors, the contract checks and the Kubernetes checks
lint: fmt clippy proto-check k8s-check

fmt:
	cargo fmt --all -- --check

clippy:
	cargo clippy --workspace --all-targets -- -D warnings

## proto-check: buf lint, and buf breaking against the previous commit (when there is one)
proto-check: tools
	$(VENV_BIN)/buf lint
	scripts/proto-breaking.sh

## k8s-check: render every k8s/ overlay, validate it against the Kubernetes schemas, scan it with
## checkov and check it against the code (scripts/k8s-check.sh); no cluster needed
k8s-check: tools
	scripts/k8s-check.sh

tools:
	scripts/tools.sh

build:
	cargo build --workspace
