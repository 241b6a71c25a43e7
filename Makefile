# The two commands a newcomer needs: `make run` and `make test`.
# Both create .venv on first use and reinstall chatd there when its sources change.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SOURCES := pyproject.toml $(shell find chatd twisted -type f -not -name '*.pyc' -not -name dropin.cache)

.PHONY: run run-cluster test lint clean

# A strict editable install: edits are live, and twistd finds the plugin (a plain editable
# install hides twisted/plugins/ from twistd).
$(BIN)/.installed: $(SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --config-settings editable_mode=strict -e '.[test]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/twistd --nodaemon --pidfile= chatd

# Redis mode on one machine: a redis-server (data in build/cluster/redis) and two nodes, ws on
# 8080 and 8081 (etc/run-cluster.py; README, "Running several processes (Redis)").
run-cluster: $(BIN)/.installed
	$(BIN)/python etc/run-cluster.py $(CLUSTER_ARGS)

# Autobahn|Testsuite's fuzzing client (tests/conformance) runs on Python 2.7 only: it is
# installed under build/wstest when this machine has one (pyenv's, or python2.7 on PATH);
# without one its test is skipped, saying so.
PYTHON27 ?= $(firstword $(foreach candidate,$(wildcard $(HOME)/.pyenv/versions/2.7*/bin/python2.7) python2.7,$(shell $(candidate) -c 'import sys; print(sys.executable)' 2>/dev/null)))
WSTEST := build/wstest

$(WSTEST)/.installed:
	$(PYTHON27) -m pip install --quiet --disable-pip-version-check --no-warn-conflicts --target $(WSTEST)/site 'autobahntestsuite>=25.10,<26'
	ln -sf $(PYTHON27) $(WSTEST)/python
	touch $@

test: $(BIN)/.installed $(if $(PYTHON27),$(WSTEST)/.installed)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) build dist *.egg-info
