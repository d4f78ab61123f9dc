# The two commands a newcomer needs (see README.md):
#   make quickstart   set everything up, start localocean, build a registry on it, push an image
#   make test         set everything up and run every test (what CI runs), printing each
#                     group's time and the total (scripts/test)
# and `make quickstart-down` to remove what the quickstart made; `make bench` prints the
# benchmarks' figures (scripts/bench).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
export LOCALOCEAN_STATE_DIR ?= $(CURDIR)/.quickstart/localocean

.PHONY: setup build check test bench quickstart quickstart-down image

setup:
	bash scripts/setup

build: setup
	$(CARGO) build --workspace --bins

# The binary `build` made: `cargo run -p localocean` would build another copy (features are
# unified over the packages a command names).
image: build
	source .tools/env && $(or $(CARGO_TARGET_DIR),target)/debug/localocean image build

check: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# scripts/test runs setup, fmt and clippy itself, so that its total is the whole command's.
test:
	scripts/test

bench: setup
	source .tools/env && scripts/bench

quickstart: image
	source .tools/env && scripts/quickstart up

quickstart-down:
	source .tools/env 2>/dev/null || true; scripts/quickstart down
