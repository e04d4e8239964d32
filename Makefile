# Two commands for a fresh Linux machine with Python 3.11:
#   make demo   - create .venv, install everything, verify the shipped default network
#   make test   - create .venv if needed, install everything, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/profit verify

test: setup  # two pytest workers with one torch thread each (2 cores)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --durations=15

clean:
	rm -rf $(VENV) build *.egg-info
