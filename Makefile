# Two commands for a fresh Linux machine with Python 3.11:
#   make demo   - create .venv, install everything, verify / explain / proof features / CEM / attributions on the shipped defaults
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

PATCH_5 := 428,429,430,431,432,456,457,458,459,460,484,485,486,487,488,512,513,514,515,516

demo: setup  # verify (with branch and bound), explain a "5" over a 20-pixel patch, proof features, CEM, certified saliency
	$(VENV)/bin/profit verify --complete --no-progress
	$(VENV)/bin/profit explain -p $(PATCH_5) -d 23 --enum both --save --outdir demo-out/explain
	$(VENV)/bin/profit features mnist_mlp --count 5 --save-dir demo-out/features
	$(VENV)/bin/profit cem mnist_mlp -d 0,1,2 --mode pn --kappa 2 --gamma 1 --ae mnist_ae --iterations 150 --c-steps 3 --certify --save-dir demo-out/cem
	$(VENV)/bin/profit attribute mnist_mlp -d 0 --method saliency --certify 0.0001 --save-dir demo-out/attribution

test: setup  # two pytest workers with one torch thread each (2 cores)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --durations=15

clean:
	rm -rf $(VENV) build *.egg-info
