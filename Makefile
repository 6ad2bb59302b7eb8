# The two commands of the README:
#   make run   installs the daemon into .venv and runs it on its embedded defaults
#   make test  installs the test tools into .venv-test and runs lint, types and the whole suite
PYTHON ?= python3.11
VENV ?= .venv
TEST_VENV ?= .venv-test
PYTEST_ARGS ?=

.PHONY: run test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e .
	touch $@

$(TEST_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(TEST_VENV)
	$(TEST_VENV)/bin/pip install --quiet --upgrade pip
	$(TEST_VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/taskmaster-worker run

lint: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/ruff check .
	$(TEST_VENV)/bin/ruff format --check .
	$(TEST_VENV)/bin/mypy

test: lint
	$(TEST_VENV)/bin/pytest -n 2 $(PYTEST_ARGS)

bench: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/python benchmarks/e2e_outbox.py

clean:
	rm -rf $(VENV) $(TEST_VENV) var .pytest_cache .mypy_cache .ruff_cache
