# The README's two commands: `make demo` and `make test`. Each sets up what is missing first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deepfashion2-installed
LINT_PATHS := projects tools tests bench datasets setup.py

.PHONY: setup test lint demo clean-cache

setup: $(STAMP)

$(STAMP): requirements.txt setup.py tools/install_detectron2.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check 'setuptools<81' wheel
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) tools/install_detectron2.py
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/black --check -q -l 100 $(LINT_PATHS)

test: lint
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) tools/run_demo.py $(if $(DATASET),--dataset $(DATASET),)
