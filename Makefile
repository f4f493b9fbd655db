# The LEK curriculum workbook. Two commands do everything on a fresh Linux or macOS machine:
#   make run   - set up .venv, then execute the whole notebook pipeline of PROFILE (default: demo, the study)
#   make test  - set up .venv, then run the test suite
PYTHON ?= python3
VENV ?= .venv
PROFILE ?= demo
# engine processes for generation: auto = one per CPU core on a CPU device (lekutils.engine.parallel)
DECODE_WORKERS ?= auto
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lek-installed

.PHONY: setup run smoke test lab lint strip clean-runs

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m lekutils kernelspec
	@touch $(STAMP)

run: setup
	LEK_DECODE_WORKERS=$(DECODE_WORKERS) $(PY) -m lekutils run --profile $(PROFILE)

smoke: setup
	$(PY) -m lekutils run --profile smoke

test: setup
	$(PY) -m pytest

lab: setup
	$(PY) -m jupyter lab --notebook-dir=notebooks

lint: setup
	$(PY) -m ruff check lekutils tests

strip: setup
	$(PY) -c "import sys, glob; from lekutils.runner.hygiene import strip_notebook; [print('stripped', p) for p in sorted(glob.glob('notebooks/*.ipynb')) if strip_notebook(p)]"

clean-runs:
	rm -rf runs/

.PHONY: upstream export test-browser

# the upstream LEK reference data at the pinned commit, verified, into the user cache
upstream: setup
	$(PY) -m lekutils upstream fetch

# the executed report of PROFILE as one HTML file and its figures as one PDF (runs/<profile>/report/)
export: setup
	$(PY) -m lekutils export --profile $(PROFILE)

# the export and the real-browser test (JupyterLab + headless Chromium; apt-get install chromium)
test-browser: setup
	$(PY) -m pytest tests/test_export.py tests/test_browser.py
