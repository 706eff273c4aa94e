# The two commands of the README: `make run` (the proxy on its embedded defaults) and
# `make test`. Both set up .venv on first use; re-running after a pyproject change reinstalls.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEPS_HASH := $(shell sha256sum pyproject.toml | cut -c1-12)
DEV_STAMP := $(VENV)/.dev-$(DEPS_HASH)
DEMO_STAMP := $(VENV)/.demo-$(DEPS_HASH)

.PHONY: run test openapi

$(BIN)/pip:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(DEV_STAMP): pyproject.toml | $(BIN)/pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(DEMO_STAMP): pyproject.toml | $(BIN)/pip
	$(BIN)/pip install --quiet -e '.[demo]'
	touch $@

run: $(DEMO_STAMP)
	$(BIN)/conscience serve --backend local $(ARGS)

test: $(DEV_STAMP)
	$(BIN)/pytest $(ARGS)

openapi: $(DEV_STAMP)
	$(BIN)/conscience openapi --output openapi.yaml
