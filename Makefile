# The two set-up commands of the README:
#   make serve   install what is needed (once) and run the server in offline mode
#   make test    install what is needed (once) and run the linters and the tests
# Both install into .venv; the install is redone when pyproject.toml changes.

PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed
# torch==2.13.0 is the CPU build; on a GPU machine install the CUDA build of torch into
# .venv first (the pin is then already satisfied or can be dropped).
TORCH ?= torch==2.13.0

.PHONY: install serve test test-fast lint postgres browser

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install '$(TORCH)' -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/toonforge serve --tiny

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

# The local PostgreSQL server the tests use (started if this machine has one stopped).
postgres:
	@bash scripts/start-postgres.sh

# The Chromium the playground's browser tests drive (installed from Debian when missing).
browser:
	@bash scripts/install-chromium.sh

test: $(STAMP) lint postgres browser
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -q

# The in-process tier alone (no `serve` started, no model run): the API on a test client,
# the store, the claim and the wake-ups, on SQLite; for a quick loop while developing.
test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -q tests/inproc tests/tasks -k "not postgres"
