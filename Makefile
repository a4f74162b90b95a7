# Two entry points that work on a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs what it needs; `make test` also installs
# PostgreSQL's server binaries (Debian package) when initdb/pg_ctl are missing.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest postgres browser bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/handrail demo

postgres:
	bash scripts/ensure-postgres.sh

browser:
	bash scripts/ensure-chromium.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) postgres browser
	$(BIN)/pytest -q -p no:cacheprovider

test: lint typecheck pytest

bench: $(STAMP) postgres
	$(BIN)/python bench/snapshot.py
	$(BIN)/python bench/backfill.py
	$(BIN)/python bench/copy_pg.py
	$(BIN)/python bench/parity.py
	$(BIN)/python bench/preflight.py
	$(BIN)/pip install -q -r bench/requirements-images.txt
	$(BIN)/python bench/dhash.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
