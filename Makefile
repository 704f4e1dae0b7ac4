# Two commands do everything on a fresh machine:
#   make lab    create .venv if missing, install, prepare the data, open JupyterLab on notebooks/
#   make test   create .venv if missing, install, run pytest and nbval over every notebook
# Also: make lint (ruff check, configured in pyproject.toml), make bench-attacks / bench-dual /
# bench-training (benchmarks/, each against a named baseline in the same run).
# Offline machines: export ROBUSTNESS_DATA_DIR=/path/to/dir/with/MNIST/raw/*.gz first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: lab test lint env data bench bench-attacks bench-dual bench-training clean-env

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

data: $(STAMP)
	$(PY) -m tutorial_lib.data mnist

lab: data
	$(VENV)/bin/jupyter lab notebooks/

test: $(STAMP)
	MPLBACKEND=Agg $(PY) -m pytest --nbval-lax tests notebooks

lint: $(STAMP)
	$(VENV)/bin/ruff check tutorial_lib tests benchmarks

bench: bench-attacks bench-dual bench-training

bench-attacks: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) -m pip install --quiet --no-deps torchattacks==3.5.1
	$(PY) benchmarks/attacks.py

bench-dual: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) -m pip install --quiet --no-deps convex-adversarial==0.4.4
	$(PY) benchmarks/dual_bounds.py

bench-training: $(STAMP)
	$(PY) benchmarks/training_speed.py

clean-env:
	rm -rf $(VENV)
