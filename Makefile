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

# The demo keeps to its own folder and MLflow experiment: `make demo` never writes into data/raw (Kaggle's data
# goes there) and its runs are never candidates for a submission of the real data (experiment "nerveseg",
# mlflow.yml). Its synthetic set is generated only when $(DEMO_RAW)/train does not exist yet; `make demo-data`
# generates and prepares it without training (tests make it tiny with DEMO_SUBJECTS etc.).
DEMO_DIR ?= data/demo
DEMO_RAW ?= $(DEMO_DIR)/raw
DEMO_TEST_MASKS ?= $(DEMO_DIR)/test_masks
DEMO_CACHE ?= $(DEMO_DIR)/processed
DEMO_FOLDS_DIR ?= $(DEMO_DIR)/folds
DEMO_SUBMISSIONS ?= $(DEMO_DIR)/submissions
DEMO_EXPERIMENT ?= nerveseg-demo
DEMO_SUBJECTS ?= 64
DEMO_IMAGES ?= 16
DEMO_TEST ?= 160
DEMO_SEED ?= 2016
# The generator's "clear" style: a nerve a thin U-Net learns within the demo's minutes (src/make_synthetic.py --help;
# the tests and benchmarks that need the realistic difficulty keep the default "realistic").
DEMO_STYLE ?= clear
DEMO_FOLDS ?= 5
DEMO_MLFLOW := MLFLOW_EXPERIMENT_NAME=$(DEMO_EXPERIMENT)
DEMO_PATHS := --raw-dir $(DEMO_RAW) --cache-dir $(DEMO_CACHE)

.PHONY: demo demo-data demo-isbi test test-fast lint venv clean-demo

venv: $(STAMP)

$(STAMP): requirements.txt
	@test -x $(PY) || { boot=$$(PYTHON_BOOT='$(PYTHON_BOOT)' bash scripts/pick_python.sh) \
		&& echo "creating $(VENV) with $$boot" && "$$boot" -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

demo-data: $(STAMP)
	@if [ -d $(DEMO_RAW)/train ]; then \
		echo "using the existing demo set in $(DEMO_RAW) (make clean-demo removes it)"; \
	else \
		$(PY) src/make_synthetic.py --out $(DEMO_RAW) --test-masks $(DEMO_TEST_MASKS) \
			--subjects $(DEMO_SUBJECTS) --images-per-subject $(DEMO_IMAGES) --test $(DEMO_TEST) --seed $(DEMO_SEED) --style $(DEMO_STYLE); \
	fi
	$(PY) src/prepare_data.py $(DEMO_PATHS) --folds-dir $(DEMO_FOLDS_DIR) --folds $(DEMO_FOLDS)

demo: demo-data
	$(DEMO_MLFLOW) $(PY) src/cv_train.py --folds $(DEMO_FOLDS) --config experiments/demo.yaml $(DEMO_PATHS) \
		--folds-dir $(DEMO_FOLDS_DIR) --test-masks $(DEMO_TEST_MASKS)
	$(DEMO_MLFLOW) $(PY) src/submit.py $(DEMO_PATHS) --out-dir $(DEMO_SUBMISSIONS) --test-masks $(DEMO_TEST_MASKS)
	$(PY) src/score.py "$$(ls -t $(DEMO_SUBMISSIONS)/*.csv | head -n 1)" --masks $(DEMO_TEST_MASKS)

# The ISBI 2012 EM membrane demo: 5 block folds + the TIFF stack submission, in the demo's folder and experiment.
# Synthetic slices are written only when $(ISBI_RAW) does not exist; real challenge data placed there (TIFF stacks
# or PNG folders) is used as is.
ISBI_RAW ?= $(DEMO_DIR)/isbi2012
ISBI_CONFIG ?= experiments/isbi_demo.yaml

demo-isbi: $(STAMP)
	@if [ -d $(ISBI_RAW) ]; then \
		echo "using the existing ISBI data in $(ISBI_RAW) (delete it to regenerate the synthetic EM set)"; \
	else \
		$(PY) src/make_synthetic_em.py --out $(ISBI_RAW) --train 30 --test 30 --size 512 --seed 0; \
	fi
	$(DEMO_MLFLOW) $(PY) src/cv_train.py --config $(ISBI_CONFIG) --raw-dir $(ISBI_RAW) --cache-dir $(DEMO_CACHE) \
		--folds-dir $(DEMO_FOLDS_DIR)
	$(DEMO_MLFLOW) $(PY) src/submit.py --task isbi2012 --raw-dir $(ISBI_RAW) --cache-dir $(DEMO_CACHE) \
		--out-dir $(DEMO_SUBMISSIONS)

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The fast subset (no model training, no servers).
test-fast: PYTEST_ARGS = -m "not slow"
test-fast: test

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .  # also the Python blocks of the docs

# Removes the demo's folder (its data, cache, folds and submissions) and deletes its MLflow experiment
# (scripts/clean_demo.py); data/raw, data/processed, experiments/folds and the real runs are never touched.
clean-demo:
	@if [ -x $(PY) ]; then $(PY) scripts/clean_demo.py $(DEMO_EXPERIMENT); \
	else echo "no $(VENV): the demo's MLflow experiment $(DEMO_EXPERIMENT) (if any) is left in the store"; fi
	rm -rf $(DEMO_DIR) data/synthetic_test_masks

# Optuna's dashboard over the default study storage (src/tune.py --storage), on this machine only.
DASHBOARD_PORT ?= 8080
OPTUNA_STORAGE ?= sqlite:///experiments/optuna.db

.PHONY: dashboard
dashboard: $(STAMP)
	@if [ -n "$(filter sqlite:///%,$(OPTUNA_STORAGE))" ] && [ ! -f "$(patsubst sqlite:///%,%,$(OPTUNA_STORAGE))" ]; then \
		echo "no Optuna study at $(OPTUNA_STORAGE) yet: run python src/tune.py first"; exit 1; fi
	$(VENV)/bin/optuna-dashboard --host 127.0.0.1 --port $(DASHBOARD_PORT) $(OPTUNA_STORAGE)
