"""Cross-validation folds: grouped by subject, stratified by "mask present", written once and reused.

Frames of one subject are near-duplicates, so a subject split across training and validation
would leak; about 59 % of masks are empty, so each fold should see that share. The split is
saved under ``experiments/folds`` and every later run (training, tuning, post-processing) reads
the same file, so their scores are comparable (nnU-Net's ``splits_final.json``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from nerveseg import names
from nerveseg.data.cache import PreparedData
from nerveseg.errors import NervesegError
from nerveseg.io_utils import atomic_write_text
from nerveseg.paths import FOLDS_DIR


def make_folds(subjects: np.ndarray, has_mask: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """The validation fold (0..n_folds-1) of each image; pure, so the same inputs give the same split."""
    subjects, has_mask = np.asarray(subjects), np.asarray(has_mask, dtype=bool)
    if subjects.shape != has_mask.shape or subjects.ndim != 1:
        raise NervesegError(
            f"subjects {subjects.shape} and has_mask {has_mask.shape} must be 1-D arrays of equal length"
        )
    if n_folds < 2:
        raise NervesegError(f"n_folds={n_folds}; cross-validation needs at least 2 folds")
    n_subjects = len(np.unique(subjects))
    if n_subjects < n_folds:
        raise NervesegError(
            f"only {n_subjects} subjects for {n_folds} folds; every fold needs its own subjects, "
            f"use at most {n_subjects} folds or add data"
        )
    folds = np.full(len(subjects), -1, dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (_, val_index) in enumerate(splitter.split(np.zeros(len(subjects)), has_mask, groups=subjects)):
        folds[val_index] = fold
    return folds


def folds_path(fingerprint: str, n_folds: int, seed: int, folds_dir: Path = FOLDS_DIR) -> Path:
    """Where the split of this data set, fold count and seed lives."""
    return Path(folds_dir) / f"folds_{fingerprint[:12]}_k{n_folds}_s{seed}.json"


def _read_folds(path: Path, data: PreparedData, n_folds: int, seed: int) -> np.ndarray:
    """The saved split in ``data.ids`` order, after checking it belongs to this data set."""
    fix = "delete it to create a new split for this data, or restore the data set it was made from"
    try:
        saved = json.loads(path.read_text())
        assigned = {str(k): int(v) for k, v in saved["folds"].items()}
        header = (saved[names.DATA_FINGERPRINT], saved["n_folds"], saved["seed"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise NervesegError(f"folds file {path} cannot be read ({err}); delete it to create the split again") from err
    if header != (data.fingerprint, n_folds, seed):
        raise NervesegError(
            f"folds file {path} was made for data {header[0][:12]}, k={header[1]}, seed={header[2]}; {fix}"
        )
    missing, extra = set(data.ids) - assigned.keys(), assigned.keys() - set(data.ids)
    if missing or extra:
        example = sorted(missing or extra)[0]
        raise NervesegError(
            f"folds file {path} does not match the data: {len(missing)} ids missing from it, {len(extra)} ids not in "
            f"the data (e.g. {example}); {fix}"
        )
    folds = np.array([assigned[i] for i in data.ids], dtype=np.int64)
    if set(np.unique(folds)) != set(range(n_folds)):
        raise NervesegError(f"folds file {path} does not use folds 0..{n_folds - 1} (each at least once); {fix}")
    return folds


def load_or_create_folds(
    data: PreparedData,
    n_folds: int,
    seed: int,
    folds_dir: Path = FOLDS_DIR,
    *,
    assign: Callable[[], np.ndarray] | None = None,
) -> tuple[np.ndarray, Path]:
    """The fold of each item of ``data`` and the file holding it, created atomically on first use.

    ``data`` needs ``fingerprint`` and ``ids``; ``assign`` makes a new split (default: subject-grouped,
    stratified ``make_folds``; the ISBI task passes contiguous blocks). An existing file is always read back.
    """
    path = folds_path(data.fingerprint, n_folds, seed, folds_dir)
    if path.is_file():
        return _read_folds(path, data, n_folds, seed), path
    folds = assign() if assign is not None else make_folds(data.subjects, data.has_mask, n_folds, seed)
    content = {
        names.DATA_FINGERPRINT: data.fingerprint,
        "n_folds": n_folds,
        "seed": seed,
        "folds": {str(i): int(f) for i, f in zip(data.ids, folds, strict=True)},
    }
    atomic_write_text(path, json.dumps(content, indent=1) + "\n")
    return folds, path
