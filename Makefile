# Two commands do everything on a fresh machine:
#   make lab    create .venv if missing, install, prepare the data, open JupyterLab on notebooks/
#   make test   create .venv if missing, install, run pytest and nbval over every notebook (all but
#               the browser test of the explorers: make test-browser, which CI runs after it)
# Also: make lint (ruff check, configured in pyproject.toml), make bench-attacks / bench-dual /
# bench-training (benchmarks/, each against a named baseline in the same run).
# Offline machines: export ROBUSTNESS_DATA_DIR=/path/to/dir/with/MNIST/raw/*.gz first.
# Options: make lab PORT=9000 (first port tried; the next free one if taken), LAB_ARGS="..." (passed to
# jupyter lab), CPU=1 (make env / lab / test on a fresh .venv: CPU-only PyTorch, no CUDA download).
# make student writes the notebooks to hand out into student/ (STUDENT_DIR=...): solution cells
# dropped, exercise and answer outputs cleared, checkers kept; FORCE=1 replaces earlier copies.
# make test-portability reruns the notebooks under other float rounding: their checked outputs must not move.
# make test-browser runs the JupyterLab widget test (tests/browser: every notebook explorer, driven in
# a headless chromium; kept out of make test for time); make screenshots also rewrites
# docs/screenshots/*_explorer.png from it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8888
LAB_ARGS ?=
CPU ?=
STUDENT_DIR ?= student
FORCE ?=
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: lab test test-portability test-browser screenshots lint student env data bench bench-attacks bench-dual bench-training clean-env

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@if [ -n "$(CPU)" ]; then \
	  echo "CPU=$(CPU): installing CPU-only torch and torchvision from $(TORCH_CPU_INDEX)"; \
	  $(PY) -m pip install --quiet --index-url $(TORCH_CPU_INDEX) \
	    "torch>=2.2,<=2.14.1" "torchvision>=0.17,<=0.29.1"; \
	fi
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

data: $(STAMP)
	$(PY) -m tutorial_lib.data mnist

# scripts/lab.py adds --allow-root for root, --no-browser without a display, moves to the next free
# port when $(PORT) is taken and prints the URL with its token.
lab: data
	$(PY) scripts/lab.py --port $(PORT) -- $(LAB_ARGS)

# tests/browser/test_lab.py (no browser, seconds) stays in; the explorers' browser test is make test-browser
test: $(STAMP)
	MPLBACKEND=Agg $(PY) -m pytest --nbval-lax tests notebooks --ignore=tests/browser/test_explorers.py

# The notebooks under other float rounding (one thread, oneDNN off, TF32-sized conv errors): every
# checked output must stay the same (tests/portability; CI runs it after make test). As long as nbval.
test-portability: $(STAMP)
	PORTABILITY_CHECK=1 MPLBACKEND=Agg $(PY) -m pytest tests/portability -v

# The browser test of the notebook explorers (needs chromium and playwright; skips, saying so, without;
# CI sets REQUIRE_BROWSER_TEST=1, so there it fails instead). Ends with each explorer's slider latencies.
test-browser: $(STAMP)
	$(PY) -m pytest tests/browser -v

screenshots: $(STAMP)
	BROWSER_SCREENSHOTS_DIR=docs/screenshots $(PY) -m pytest tests/browser/test_explorers.py -v

student:
	$(PYTHON) scripts/make_student.py --out $(STUDENT_DIR) $(if $(FORCE),--force)

lint: $(STAMP)
	$(VENV)/bin/ruff check tutorial_lib tests benchmarks scripts

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
