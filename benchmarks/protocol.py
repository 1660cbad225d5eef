"""What a user runs, as one function for the benchmarks: cv_train, then submit.py --test-masks, on one data set.

``cv_then_submit`` calls the library's own code paths (``cross_validate`` into an ``MlflowStore``,
``make_submission``) in a temporary SQLite MLflow store under the case's folder, so a benchmark measures exactly
the numbers a user would see.
Shared by ``cv_honesty.py`` and ``demo_seeds.py``.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np

from nerveseg.config import TrainConfig

if TYPE_CHECKING:
    from nerveseg.run.submit import SubmissionResult


@dataclass
class Outcome:
    """One CV run and its submission scored on the held-out masks."""

    metrics: dict[str, float]  # the parent run's metrics (names in nerveseg.names)
    submission: SubmissionResult
    test_empty: float  # the all-empty score on the test masks
    fold_curves: dict[int, FoldCurve]  # per fold: how its validation curves ended
    minutes: float


@dataclass(frozen=True)
class FoldCurve:
    """How one fold's per-epoch validation curves ended."""

    drop: float  # val_dice (the mask head alone): best of the second half of training minus the last
    drop_gated: float | None  # the same for val_dice_gated (the mask gated by the presence head, as shipped)
    silent: bool  # val_dice never moved: the mask head predicted the same, in practice nothing, at every epoch


def empty_test_score(masks_dir: Path) -> float:
    """The score of predicting nothing on the test set: the share of its empty masks."""
    from nerveseg.data.raw import read_mask

    return float(np.mean([not read_mask(path).any() for path in sorted(Path(masks_dir).glob("*_mask.tif"))]))


def late_drop(val_dice: list[float]) -> float:
    """How far the last epoch ends below the best epoch of the second half (0 when it ends at its best)."""
    half = val_dice[len(val_dice) // 2 :]
    return float(max(half) - val_dice[-1]) if half else 0.0


def _fold_curves(uri: str, parent_run_id: str) -> dict[int, FoldCurve]:
    from nerveseg import names
    from nerveseg.track import run_reader
    from nerveseg.track.store import get_client

    client = get_client(uri)

    def curve(run_id: str, key: str) -> list[float]:
        return [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]

    curves = {}
    for fold, run in sorted(run_reader.newest_finished_fold_runs(client, client.get_run(parent_run_id)).items()):
        dice, gated = curve(run.info.run_id, "val_dice"), curve(run.info.run_id, names.VAL_DICE_GATED)
        silent = bool(dice) and max(dice) - min(dice) < 1e-9
        curves[fold] = FoldCurve(late_drop(dice), late_drop(gated) if gated else None, silent)
    return curves


def cv_then_submit(root: Path, config: TrainConfig, *, experiment: str) -> Outcome:
    """``cross_validate`` on ``root/raw`` then ``make_submission`` scored on ``root/masks``, tracked in
    ``root/mlflow.db``."""
    from nerveseg.run.cross_validate import cross_validate
    from nerveseg.run.store import CVPaths
    from nerveseg.run.submit import make_submission
    from nerveseg.track.mlflow_store import MlflowStore
    from nerveseg.track.store import MlflowSettings
    from nerveseg.track.submission_run import MlflowSubmissions

    started = time.perf_counter()
    uri = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri  # make_submission reads the store from the environment
    os.environ["MLFLOW_EXPERIMENT_NAME"] = experiment
    settings = MlflowSettings(uri, experiment, str(root / "mlartifacts"), source=experiment)
    common = {"raw_dir": root / "raw", "cache_dir": root / "cache"}
    paths = CVPaths(root / "raw", root / "cache", root / "folds")
    cv = cross_validate(config, paths, MlflowStore(settings, progress=False), progress=False)
    submission = make_submission(
        MlflowSubmissions.open,
        run_id=cv.parent_id,
        out_dir=root / "submissions",
        test_masks_dir=root / "masks",
        progress=False,
        **common,
    )
    return Outcome(
        metrics=cv.final.metrics,
        submission=submission,
        test_empty=empty_test_score(root / "masks"),
        fold_curves=_fold_curves(uri, cv.parent_id),
        minutes=(time.perf_counter() - started) / 60,
    )
