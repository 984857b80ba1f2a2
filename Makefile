# Hoshikage: the two set-up commands of the README are `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
CORE_VENV ?= .venv-core
PIP_FLAGS ?= --disable-pip-version-check
# Everything: the three members, the embedded demo model and the test tools.
PACKAGES = -e ./hoshikage_core -e ./hoshikage_llamacpp -e ./hoshikage_api -e ".[demo,test]"

.PHONY: install serve test test-core-only bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml hoshikage_core/pyproject.toml hoshikage_llamacpp/pyproject.toml hoshikage_api/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install $(PIP_FLAGS) -q --upgrade pip
	$(VENV)/bin/python -m pip install $(PIP_FLAGS) $(PACKAGES)
	touch $@

serve: install
	$(VENV)/bin/hoshikage serve

# The whole suite, then the core's own tests with only hoshikage-core installed.
test: install test-core-only
	$(VENV)/bin/python -m pytest

test-core-only: $(CORE_VENV)/.installed
	$(CORE_VENV)/bin/python -m pytest tests/core -q

$(CORE_VENV)/.installed: hoshikage_core/pyproject.toml
	$(PYTHON) -m venv $(CORE_VENV)
	$(CORE_VENV)/bin/python -m pip install $(PIP_FLAGS) -q --upgrade pip
	$(CORE_VENV)/bin/python -m pip install $(PIP_FLAGS) -q ./hoshikage_core pytest pytest-asyncio pytest-timeout
	touch $@

# The benchmark: server vs direct llama-cpp-python vs peers (docs/performance.md).
bench: install
	$(VENV)/bin/python -m pip install $(PIP_FLAGS) -q -e ".[demo,test,bench]"
	$(VENV)/bin/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(CORE_VENV) build *.egg-info */src/*.egg-info
