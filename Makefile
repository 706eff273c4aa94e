# The two commands of the README: `make run` (the proxy on its embedded defaults) and
# `make test`. Both set up .venv on first use from requirements.lock, the exact versions every
# install of ours uses (`make lock` renews it); a change to pyproject.toml or the lock reinstalls.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCK := requirements.lock
# The lock is a constraints file: pip installs exactly its versions of whatever an extra asks for.
INSTALL := $(BIN)/pip install --quiet --constraint $(LOCK)
DEPS_HASH := $(shell cat pyproject.toml $(LOCK) | sha256sum | cut -c1-12)
DEV_STAMP := $(VENV)/.dev-$(DEPS_HASH)
DEMO_STAMP := $(VENV)/.demo-$(DEPS_HASH)

.PHONY: run test lint lock openapi docs

$(BIN)/pip:
	$(PYTHON) -m venv $(VENV)
	$(INSTALL) pip

$(DEV_STAMP): pyproject.toml $(LOCK) | $(BIN)/pip
	$(INSTALL) -e '.[dev]'
	touch $@

$(DEMO_STAMP): pyproject.toml $(LOCK) | $(BIN)/pip
	$(INSTALL) -e '.[demo]'
	touch $@

run: $(DEMO_STAMP)
	$(BIN)/conscience serve --backend local $(ARGS)

test: $(DEV_STAMP)
	$(BIN)/pytest $(ARGS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check service trainer evaluation conscience_cli tests bench scripts

openapi: $(DEV_STAMP)
	$(BIN)/conscience openapi --output openapi.yaml

# The documentation site as CI builds it: --strict (a broken link or anchor, or a page missing from
# the nav, fails), into a temporary directory that is removed afterwards. `mkdocs serve` serves it.
# NO_MKDOCS_2_WARNING silences Material's end-of-life banner (docs/development.md says why). Never
# --quiet: it drops the warnings before --strict counts them, and a broken link passes.
docs: $(DEV_STAMP)
	site=$$(mktemp -d) && trap 'rm -rf "$$site"' EXIT && \
		NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir "$$site"

# pip-compile (pip-tools) resolves with pip itself, so it takes the torch CPU wheel that pip
# finds on this machine's disk (uv and poetry would lock a multi-GB CUDA build). Afterwards:
# the project's own line goes (a constraints file takes names and versions only), and torch is
# locked by its public version, which pip matches to the local CPU build here (2.13.0+cpu) and
# to PyPI's build in a GPU image.
lock: $(DEV_STAMP)
	$(BIN)/pip-compile --upgrade --all-extras --strip-extras --allow-unsafe \
		--no-emit-index-url --no-emit-find-links --quiet --output-file $(LOCK) pyproject.toml
	sed -i -e '/^# The following packages are considered to be unsafe/d' \
		-e '/^emergent-conscience @ /,+1d' -e 's/^torch==\([0-9.]*\)+cpu$$/torch==\1/' $(LOCK)
