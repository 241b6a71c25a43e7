# The two commands a newcomer needs: `make run` and `make test`.
# Both create .venv on first use and reinstall chatd there when its sources change.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SOURCES := pyproject.toml $(shell find chatd twisted -type f -not -name '*.pyc' -not -name dropin.cache)

.PHONY: run test lint clean

# A strict editable install: edits are live, and twistd finds the plugin (a plain editable
# install hides twisted/plugins/ from twistd).
$(BIN)/.installed: $(SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --config-settings editable_mode=strict -e '.[test]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/twistd --nodaemon --pidfile= chatd

test: $(BIN)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) build dist *.egg-info
