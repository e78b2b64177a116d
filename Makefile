# The two commands of the README: `make demo` and `make test`. Each sets up a local
# virtual environment (.venv) on first use with the project's own dependency list.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("gpupool needs Python 3.11 or newer, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## demo: a server on the embedded default (SQLite, simulated cluster) with a scripted workload
demo: $(STAMP)
	$(BIN)/gpupool demo

## test: the whole suite (PostgreSQL tests run when a server answers on 127.0.0.1:5432)
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## lint: ruff, mypy (strict) and the package layering check
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy api scheduler solver k8s metrics sim
	$(BIN)/python tests/test_layering.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache gpupool-demo.db*
