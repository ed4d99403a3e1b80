# The two commands of the README: `make quickstart` and `make test`.
# Both create (or reuse) a virtual environment in $(VENV).
#
# TORCH picks the PyTorch build. The default range lets pip take the newest release
# (a CUDA build on Linux). On a CPU-only machine pass a CPU wheel, e.g.
#   make test TORCH=torch==2.13.0
# If the venv already holds a torch that satisfies the project's range, it is kept.

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch>=2.13,<3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install quickstart lint test clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(PY) -m pretrain.quickstart $(ARGS)

# Lint and format check (ruff, configured in pyproject.toml): a second, not part of the
# suite's time. `$(VENV)/bin/ruff format .` rewrites the files it would complain about.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest $(ARGS)

clean:
	rm -rf runs outputs multirun .pytest_cache
