"""Shared fixtures: a tiny synthetic data set in Kaggle's layout, made once per test session.

Tests that train use it with tiny models (see ``tiny_config``) so the whole suite stays fast;
tests that track use ``store``, an embedded MLflow store of their own.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from nerveseg.track.store import MlflowSettings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REAL_SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "real_sample"


@pytest.fixture(scope="session")
def real_sample() -> Path:
    """Kaggle's nine real pairs in ../shared/real_sample; tests using it skip when it is absent."""
    if not (REAL_SAMPLE / "train").is_dir():
        pytest.skip(f"real Kaggle sample not found at {REAL_SAMPLE} (it lives beside the repo, never inside it)")
    return REAL_SAMPLE


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic set: 6 subjects x 8 images, 6 test images; root/raw is the Kaggle layout.

    Session-scoped and read-only by convention: tests that modify data copy it first.
    """
    from nerveseg.data.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(
        root / "raw",
        subjects=6,
        images_per_subject=8,
        test=6,
        seed=7,
        test_masks_dir=root / "test_masks",
        progress=False,
    )
    return root


@pytest.fixture()
def tiny_config():
    """A config whose model trains in seconds on 32x40 inputs."""
    from nerveseg.config import TrainConfig

    return TrainConfig(
        name="tiny",
        height=32,
        width=40,
        depth=3,
        base_filters=4,
        learning_rate=1e-3,
        batch_size=8,
        epochs=2,
        folds=3,
        seed=1,
    )


@pytest.fixture(scope="session")
def empty_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite database with its tables, made once: creating the schema takes ~10 s."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture()
def store(tmp_path: Path, empty_db: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowSettings:
    """This test's own store (a copy of the empty database) via MLFLOW_TRACKING_URI, experiment "nerveseg"
    via MLFLOW_EXPERIMENT_NAME (whatever the checked-in mlflow.yml says); artifacts beside the database."""
    from nerveseg.track.store import load_mlflow_settings

    shutil.copy(empty_db, tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "nerveseg")
    return load_mlflow_settings()
