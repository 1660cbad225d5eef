# The two commands a newcomer needs: `make demo` and `make test`. Both create .venv when needed.
SHELL := /bin/bash
# The venv is built from PYTHON_BOOT when set, else from the newest supported python3.X on the machine
# (scripts/pick_python.sh; the range is requires-python in pyproject.toml). PYTHON_BOOT only matters when the
# venv is created: to try another Python, name another venv, e.g. `make test VENV=.venv-py311 PYTHON_BOOT=python3.11`.
PYTHON_BOOT ?=
VENV ?= .venv
PYTEST_ARGS ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# The demo's synthetic set. Generated only when $(DEMO_RAW)/train does not exist yet.
DEMO_RAW ?= data/raw
DEMO_TEST_MASKS ?= data/synthetic_test_masks
DEMO_SUBJECTS ?= 64
DEMO_IMAGES ?= 16
DEMO_TEST ?= 160
DEMO_SEED ?= 2016
# The generator's "clear" style: a nerve a thin U-Net learns within the demo's minutes (src/make_synthetic.py --help;
# the tests and benchmarks that need the realistic difficulty keep the default "realistic").
DEMO_STYLE ?= clear

.PHONY: demo demo-isbi test test-fast lint data venv clean-demo

venv: $(STAMP)

$(STAMP): requirements.txt
	@test -x $(PY) || { boot=$$(PYTHON_BOOT='$(PYTHON_BOOT)' bash scripts/pick_python.sh) \
		&& echo "creating $(VENV) with $$boot" && "$$boot" -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

data: $(STAMP)
	@if [ -d $(DEMO_RAW)/train ]; then \
		echo "using the existing data set in $(DEMO_RAW) (delete it to regenerate the synthetic demo set)"; \
	else \
		$(PY) src/make_synthetic.py --out $(DEMO_RAW) --test-masks $(DEMO_TEST_MASKS) \
			--subjects $(DEMO_SUBJECTS) --images-per-subject $(DEMO_IMAGES) --test $(DEMO_TEST) --seed $(DEMO_SEED) --style $(DEMO_STYLE); \
	fi
	$(PY) src/prepare_data.py --raw-dir $(DEMO_RAW) --folds 5

demo: data
	$(PY) src/cv_train.py --folds 5 --config experiments/demo.yaml --raw-dir $(DEMO_RAW) --test-masks $(DEMO_TEST_MASKS)
	$(PY) src/submit.py --raw-dir $(DEMO_RAW) --test-masks $(DEMO_TEST_MASKS)
	$(PY) src/score.py "$$(ls -t submissions/*.csv | head -n 1)" --masks $(DEMO_TEST_MASKS)

# The ISBI 2012 EM membrane demo: 5 block folds + the TIFF stack submission. Synthetic slices are written only
# when $(ISBI_RAW) does not exist; real challenge data placed there (TIFF stacks or PNG folders) is used as is.
ISBI_RAW ?= data/raw/isbi2012
ISBI_CONFIG ?= experiments/isbi_demo.yaml

demo-isbi: $(STAMP)
	@if [ -d $(ISBI_RAW) ]; then \
		echo "using the existing ISBI data in $(ISBI_RAW) (delete it to regenerate the synthetic EM set)"; \
	else \
		$(PY) src/make_synthetic_em.py --out $(ISBI_RAW) --train 30 --test 30 --size 512 --seed 0; \
	fi
	$(PY) src/cv_train.py --config $(ISBI_CONFIG) --raw-dir $(ISBI_RAW)
	$(PY) src/submit.py --task isbi2012 --raw-dir $(ISBI_RAW)

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The fast subset (no model training, no servers).
test-fast: PYTEST_ARGS = -m "not slow"
test-fast: test

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

clean-demo:
	rm -rf data/processed $(DEMO_TEST_MASKS) mlflow.db mlartifacts experiments/folds
	@echo "data/raw is never deleted by make; remove it yourself if it holds the synthetic demo set"

# Optuna's dashboard over the default study storage (src/tune.py --storage), on this machine only.
DASHBOARD_PORT ?= 8080
OPTUNA_STORAGE ?= sqlite:///experiments/optuna.db

.PHONY: dashboard
dashboard: $(STAMP)
	@if [ -n "$(filter sqlite:///%,$(OPTUNA_STORAGE))" ] && [ ! -f "$(patsubst sqlite:///%,%,$(OPTUNA_STORAGE))" ]; then \
		echo "no Optuna study at $(OPTUNA_STORAGE) yet: run python src/tune.py first"; exit 1; fi
	$(VENV)/bin/optuna-dashboard --host 127.0.0.1 --port $(DASHBOARD_PORT) $(OPTUNA_STORAGE)
