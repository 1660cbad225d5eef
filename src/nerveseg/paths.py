"""Every path the project uses, defined once (Cookiecutter Data Science).

Functions take paths as arguments with these as defaults, so tests and users can point
them elsewhere; nothing here touches the file system at import time.
"""

from pathlib import Path

PROJ_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = PROJ_ROOT / "data"
RAW_DIR = DATA_DIR / "raw"  # Kaggle's layout, immutable: nothing in nerveseg writes here
PROCESSED_DIR = DATA_DIR / "processed"  # caches rebuilt from RAW_DIR, safe to delete
EXPERIMENTS_DIR = PROJ_ROOT / "experiments"  # configs, fold splits, search spaces
FOLDS_DIR = EXPERIMENTS_DIR / "folds"
SUBMISSIONS_DIR = PROJ_ROOT / "submissions"
MLFLOW_CONFIG = PROJ_ROOT / "mlflow.yml"
OPTUNA_DB = EXPERIMENTS_DIR / "optuna.db"

# The competition's image size: every score and every RLE is computed at this resolution.
ORIG_HEIGHT = 420
ORIG_WIDTH = 580
FULL_SHAPE = (ORIG_HEIGHT, ORIG_WIDTH)
