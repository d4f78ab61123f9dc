# The two commands a newcomer needs (see README.md):
#   make quickstart   set everything up, start localocean, build a registry on it, push an image
#   make test         set everything up and run every test (what CI runs)
# and `make quickstart-down` to remove what the quickstart made.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
export LOCALOCEAN_STATE_DIR ?= $(CURDIR)/.quickstart/localocean

.PHONY: setup build check test test-unit test-protocol test-localocean test-acceptance quickstart quickstart-down image

setup:
	bash scripts/setup

build: setup
	$(CARGO) build --workspace --bins

image: build
	source .tools/env && $(CARGO) run -q -p localocean -- image build

check: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: check image
	source .tools/env && scripts/test

quickstart: image
	source .tools/env && scripts/quickstart up

quickstart-down:
	source .tools/env 2>/dev/null || true; scripts/quickstart down
