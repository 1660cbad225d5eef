"""The run schema: every MLflow tag, metric and artifact path that one part writes and another reads.

``track.cv_run`` writes cross-validation runs; ``track.submission_run``, ``tune.study`` and the tests
read them. They agree because both sides take the names from here, never from string literals.

A cross-validation is one parent run (``RUN_TYPE_TAG = "cv"``) with one child run per fold
(``"fold"``, tagged ``FOLD_TAG``) and, later, child runs ``"submission"``::

    parent:  config.yaml  folds/<folds file>  oof/oof_probs.npz  summary.json  postprocessing.json
             plots/progress.png  plots/subject_scores.png  plots/gallery.png
    fold k:  weights/fold_<k>.weights.h5  oof/oof_fold_<k>.npz  fold_<k>.json  model_summary.txt
             plots/learning_curve.png

Params are the config's stable names (``learning_rate``, ``loss``...), on the parent and on every fold run;
metrics never reuse a param's name: a fold run's per-epoch metrics are ``train_loss``, ``train_dice``,
``val_loss``, ``val_dice`` and ``lr`` (renamed from ``train.fold.HISTORY_KEYS`` when they are logged, see
``epoch_metric_name``), so a runs table can show ``params.learning_rate`` beside ``metrics.lr``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from nerveseg.io_utils import atomic_save_npz

# the CV summary's metric and tag names and a fold run's split params are written by the task (core), so
# they live in nerveseg.names
from nerveseg.names import (
    CHECKPOINT_TAG,
    CV_SCORE_CI_HIGH,
    CV_SCORE_CI_LOW,
    CV_SCORE_MEAN,
    CV_SCORE_STD,
    EMPTY_BASELINE_SCORE,
    N_INNER_VAL_PARAM,
    N_TRAIN_PARAM,
    N_VAL_PARAM,
    OOF_SCORE,
    OOF_SCORE_POSTPROCESSED,
    OOF_SCORE_POSTPROCESSED_INSAMPLE,
    OPTIMISTIC_TAG,
    VAL_SUBJECTS_PARAM,
    fold_score_metric,
)

# ------------------------------------------------------------------------------------------- tags
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own nesting tag
RUN_NAME_TAG = "mlflow.runName"
RUN_TYPE_TAG = "nerveseg.run_type"
STOPPED_TAG = "nerveseg.stopped"  # exception class that stopped a KILLED run (KeyboardInterrupt, TrialPruned...)
ERROR_TAG = "nerveseg.error"  # first line of the error that FAILED a run
FOLD_TAG = "fold"
DESCRIPTION_TAG = "mlflow.note.content"  # MLflow shows it as the run's description (Markdown)
DATA_FINGERPRINT_TAG = "data_fingerprint"
FOLDS_SHA_TAG = "folds_file_sha256"
GIT_COMMIT_TAG = "git_commit"

# values of RUN_TYPE_TAG
CV_RUN = "cv"
FOLD_RUN = "fold"
SUBMISSION_RUN = "submission"

# ------------------------------------------------------------------------------------------ metrics
VAL_SCORE = "val_score"  # a fold run's full-resolution Dice of its best epoch
EPOCH_SECONDS = "epoch_seconds"
TEST_SCORE = "test_score"
TEST_SCORE_CI_LOW = "test_score_ci_low"
TEST_SCORE_CI_HIGH = "test_score_ci_high"


KEPT_EPOCH = "kept_epoch"  # a fold run's kept (checkpointed) epoch, 1-based
LR_METRIC = "lr"
_HISTORY_RENAMES = {"learning_rate": LR_METRIC}


def epoch_metric_name(history_key: str) -> str:
    """The metric name of a per-epoch Keras log key: ``val_*`` as it is, ``learning_rate`` as ``lr``, every
    other (training) key prefixed ``train_``. Params never start with ``train_``/``val_``, so none collide."""
    if history_key in _HISTORY_RENAMES:
        return _HISTORY_RENAMES[history_key]
    return history_key if history_key.startswith("val_") else f"train_{history_key}"


def kept_metric(history_key: str) -> str:
    """The fold run's metric holding ``history_key`` at the kept epoch, e.g. ``val_dice_kept``."""
    return f"{epoch_metric_name(history_key)}_kept"


KEPT_HISTORY_KEYS = ("val_dice", "val_loss", "loss")  # logged as val_dice_kept, val_loss_kept, train_loss_kept


# ------------------------------------------------------------------------------------ fold run params
FOLD_PARAM = "fold"
FOLD_SEED_PARAM = "fold_seed"  # the fold is seeded with config.seed + fold
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value


# ---------------------------------------------------------------------------------------- artifacts
CONFIG_ARTIFACT = "config.yaml"
FOLDS_DIR = "folds"
PLOTS_DIR = "plots"
WEIGHTS_DIR = "weights"
OOF_DIR = "oof"
OOF_PROBS_FILE = "oof_probs.npz"
OOF_PROBS_ARTIFACT = f"{OOF_DIR}/{OOF_PROBS_FILE}"
SUMMARY_ARTIFACT = "summary.json"
POSTPROCESSING_ARTIFACT = "postprocessing.json"
MODEL_SUMMARY_ARTIFACT = "model_summary.txt"
SUBMISSION_DIR = "submission"
PROGRESS_ARTIFACT = f"{PLOTS_DIR}/progress.png"  # parent: every fold's curves
SUBJECT_SCORES_ARTIFACT = f"{PLOTS_DIR}/subject_scores.png"  # parent: OOF score per subject
GALLERY_ARTIFACT = f"{PLOTS_DIR}/gallery.png"  # parent: best and worst OOF images
LEARNING_CURVE_ARTIFACT = f"{PLOTS_DIR}/learning_curve.png"  # fold run: its own curves


def weights_file(fold: int) -> str:
    """File name of fold ``fold``'s weights (Keras 3 needs the ``.weights.h5`` ending)."""
    return f"fold_{fold}.weights.h5"


def weights_artifact(fold: int) -> str:
    """Artifact path of fold ``fold``'s weights on its fold run."""
    return f"{WEIGHTS_DIR}/{weights_file(fold)}"


def oof_fold_file(fold: int) -> str:
    return f"oof_fold_{fold}.npz"


def oof_fold_artifact(fold: int) -> str:
    """Artifact path of fold ``fold``'s out-of-fold predictions on its fold run."""
    return f"{OOF_DIR}/{oof_fold_file(fold)}"


def fold_facts_artifact(fold: int) -> str:
    """Artifact path of fold ``fold``'s facts (best epoch, history, standardisation) on its fold run."""
    return f"fold_{fold}.json"


# ------------------------------------------------------------------------------------ OOF npz files


@dataclass(frozen=True)
class OofArrays:
    """What an OOF ``.npz`` holds: image ids, model-size probabilities (n, h, w), optional presence (n,)."""

    ids: np.ndarray
    probs: np.ndarray
    presence: np.ndarray | None = None


def save_oof(path: Path, oof: OofArrays) -> Path:
    """Write ``oof`` atomically as ``ids``, ``probs`` and (when known) ``presence``."""
    arrays = {"ids": oof.ids, "probs": oof.probs}
    if oof.presence is not None:
        arrays["presence"] = oof.presence
    atomic_save_npz(path, **arrays)
    return path


def load_oof(path: Path | str) -> OofArrays:
    """Read an OOF ``.npz`` (fold or whole CV); a trailing channel axis and an unusable presence are dropped."""
    with np.load(path, allow_pickle=False) as saved:
        ids = saved["ids"].astype(str)
        probs = saved["probs"].astype(np.float32)
        presence = saved["presence"] if "presence" in saved.files else None
    if probs.ndim == 4:
        probs = probs[..., 0]
    if presence is not None and (presence.size == 0 or presence.dtype.kind not in "fiu"):
        presence = None
    return OofArrays(ids, probs, None if presence is None else presence.reshape(-1).astype(np.float32))


# -------------------------------------------------------------------------------------- fold runs


def fold_runs(client: MlflowClient, parent: Run) -> dict[int, list[Run]]:
    """The parent's fold runs by fold number (any status), oldest first."""
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}' and tags.`{RUN_TYPE_TAG}` = '{FOLD_RUN}'",
        max_results=10_000,
        order_by=["attributes.start_time ASC"],
    )
    children: dict[int, list[Run]] = {}
    for run in runs:
        try:
            fold = int(run.data.tags[FOLD_TAG])
        except (KeyError, ValueError):
            continue  # not written by cv_run; ignore rather than guess
        children.setdefault(fold, []).append(run)
    return children


def newest_finished_fold_runs(client: MlflowClient, parent: Run) -> dict[int, Run]:
    """fold -> its newest FINISHED run (a resumed CV can have failed or killed attempts beside it)."""
    finished = {}
    for fold, runs in fold_runs(client, parent).items():
        done = [run for run in runs if run.info.status == "FINISHED"]
        if done:
            finished[fold] = done[-1]
    return finished


def children_filter(parent_run_id: str, run_type: str | None = None) -> str:
    """An MLflow ``search_runs`` filter for the child runs of ``parent_run_id`` (optionally of one type)."""
    query = f"tags.`{PARENT_TAG}` = '{parent_run_id}'"
    return query if run_type is None else f"{query} and tags.`{RUN_TYPE_TAG}` = '{run_type}'"


__all__ = [
    "CHECKPOINT_TAG",
    "CONFIG_ARTIFACT",
    "CV_RUN",
    "CV_SCORE_CI_HIGH",
    "CV_SCORE_CI_LOW",
    "CV_SCORE_MEAN",
    "CV_SCORE_STD",
    "DATA_FINGERPRINT_TAG",
    "DESCRIPTION_TAG",
    "EMPTY_BASELINE_SCORE",
    "EPOCH_SECONDS",
    "ERROR_TAG",
    "FOLDS_DIR",
    "FOLDS_SHA_TAG",
    "FOLD_PARAM",
    "FOLD_RUN",
    "FOLD_SEED_PARAM",
    "FOLD_TAG",
    "GALLERY_ARTIFACT",
    "GIT_COMMIT_TAG",
    "KEPT_EPOCH",
    "KEPT_HISTORY_KEYS",
    "LEARNING_CURVE_ARTIFACT",
    "LR_METRIC",
    "MAX_PARAM_LENGTH",
    "MODEL_SUMMARY_ARTIFACT",
    "N_INNER_VAL_PARAM",
    "N_TRAIN_PARAM",
    "N_VAL_PARAM",
    "OOF_DIR",
    "OOF_PROBS_ARTIFACT",
    "OOF_PROBS_FILE",
    "OOF_SCORE",
    "OOF_SCORE_POSTPROCESSED",
    "OOF_SCORE_POSTPROCESSED_INSAMPLE",
    "OPTIMISTIC_TAG",
    "PARENT_TAG",
    "PLOTS_DIR",
    "POSTPROCESSING_ARTIFACT",
    "PROGRESS_ARTIFACT",
    "RUN_NAME_TAG",
    "RUN_TYPE_TAG",
    "STOPPED_TAG",
    "SUBJECT_SCORES_ARTIFACT",
    "SUBMISSION_DIR",
    "SUBMISSION_RUN",
    "SUMMARY_ARTIFACT",
    "VAL_SCORE",
    "VAL_SUBJECTS_PARAM",
    "WEIGHTS_DIR",
    "OofArrays",
    "children_filter",
    "epoch_metric_name",
    "fold_facts_artifact",
    "fold_runs",
    "fold_score_metric",
    "kept_metric",
    "load_oof",
    "newest_finished_fold_runs",
    "oof_fold_artifact",
    "oof_fold_file",
    "save_oof",
    "weights_artifact",
    "weights_file",
]
