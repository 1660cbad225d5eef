"""The files a trained fold leaves, in every store alike: its weights, OOF predictions (``.npz``) and facts (JSON).

A fold trained by another process or machine, or before an interruption, is rebuilt from these files, so no fold
is ever trained twice. Both stores write them with :func:`write_fold_files` (and a finished CV's with
:func:`write_cv_files`) in one layout: ``LocalStore`` keeps that folder, ``MlflowStore`` logs it as the run's
artifacts; both read a fold back with :func:`fold_result`. A finished CV also keeps every OOF image's score
(:func:`save_image_scores`, a CSV), which a comparison of runs reads back (:func:`load_image_scores`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nerveseg import names
from nerveseg.errors import NervesegError, first_line
from nerveseg.evaluate.paired import ImageScores
from nerveseg.io_utils import atomic_save_npz, atomic_write_bytes, atomic_write_text
from nerveseg.tasks.base import CVFinal
from nerveseg.train.fold_result import FoldResult


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


def atomic_copy(source: Path | str, target: Path) -> None:
    """Copy through io_utils' atomic writer, so a killed copy leaves only a temp file it cleans up later."""
    atomic_write_bytes(target, Path(source).read_bytes())


def write_fold_files(folder: Path, ids: np.ndarray, result: FoldResult) -> Path:
    """The fold's weights, OOF predictions and facts under ``folder``, at their artifact paths (``names``)."""
    k = result.fold
    atomic_copy(result.weights_path, folder / names.weights_artifact(k))
    held_out = OofArrays(ids[result.val_index], result.oof_probs, result.oof_presence)  # ids: the training data's
    save_oof(folder / names.oof_fold_artifact(k), held_out)
    atomic_write_text(folder / names.fold_facts_artifact(k), json_text(fold_facts(ids, result)))
    return folder


def write_cv_files(folder: Path, final: CVFinal, facts: Mapping[str, Any]) -> Path:
    """A complete CV's OOF probabilities, per-image scores, summary, post-processing and figures under ``folder``."""
    save_oof(folder / names.OOF_PROBS_ARTIFACT, OofArrays(final.oof_ids, final.oof_probs, final.oof_presence))
    if final.image_scores is not None:
        save_image_scores(folder / names.IMAGE_SCORES_ARTIFACT, final.image_scores)
    atomic_write_text(folder / names.SUMMARY_ARTIFACT, json_text(dict(facts)))
    atomic_write_text(folder / names.POSTPROCESSING_ARTIFACT, json_text(final.decision.to_json()))
    for figure in final.figures:
        atomic_copy(figure, folder / names.PLOTS_DIR / Path(figure).name)
    return folder


def fold_facts(ids: np.ndarray, result: FoldResult) -> dict[str, Any]:
    """What a fold's JSON holds besides its arrays: the kept epoch, its rule, the score, the history."""
    return {
        "fold": result.fold,
        "kept_epoch": result.kept_epoch,
        "checkpoint": result.checkpoint,
        "val_score": result.val_score,
        "norm_mean": result.norm_mean,
        "norm_std": result.norm_std,
        "val_ids": ids[result.val_index].tolist(),
        "history": result.history,
    }


def fold_result(
    facts: dict[str, Any], oof: OofArrays, ids: np.ndarray, folds: np.ndarray, weights_path: Path, *, source: str
) -> FoldResult:
    """A FoldResult rebuilt from a fold's facts and OOF file, after checking it validated fold k of ``folds``."""
    k = int(facts["fold"])
    expected = np.flatnonzero(folds == k)
    if not np.array_equal(oof.ids, ids[expected]):
        raise NervesegError(
            f"{source} (fold {k}) validated other images than fold {k} of the current folds file; "
            "the data or the split changed, start a new run"
        )
    return FoldResult(
        fold=k,
        val_index=expected,
        oof_probs=oof.probs,
        oof_presence=oof.presence,
        history={key: list(values) for key, values in facts["history"].items()},
        kept_epoch=int(facts["kept_epoch"]),
        checkpoint=facts["checkpoint"],
        weights_path=weights_path,
        val_score=float(facts["val_score"]),
        norm_mean=float(facts["norm_mean"]),
        norm_std=float(facts["norm_std"]),
    )


_IMAGE_COLUMNS = ("id", "subject", "fold")  # then one column named after the CV metric the scores average


def save_image_scores(path: Path, scores: ImageScores) -> Path:
    """Write ``scores`` atomically as a CSV: id, subject, fold and the score under its metric's name."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*_IMAGE_COLUMNS, scores.metric])
    columns = (scores.ids.tolist(), scores.subjects.tolist(), scores.folds.tolist(), scores.scores.tolist())
    for image_id, subject, fold, score in zip(*columns, strict=True):
        writer.writerow([image_id, subject, int(fold), repr(float(score))])
    atomic_write_text(path, buffer.getvalue())
    return path


def load_image_scores(path: Path | str, *, source: str) -> ImageScores:
    """Read a CSV written by :func:`save_image_scores`; a malformed one is a one-line error naming ``source``."""
    try:
        rows = list(csv.reader(io.StringIO(Path(path).read_text())))
        header, body = rows[0], rows[1:]
        if tuple(header[:3]) != _IMAGE_COLUMNS or len(header) != 4 or any(len(row) != 4 for row in body):
            raise ValueError(f"expected the columns {', '.join(_IMAGE_COLUMNS)}, <metric>")
        columns = list(zip(*body, strict=True)) if body else [(), (), (), ()]
        return ImageScores(
            ids=np.array(columns[0], dtype=str),
            subjects=np.array(columns[1], dtype=str),
            folds=np.array([int(fold) for fold in columns[2]], dtype=np.int64),
            scores=np.array([float(score) for score in columns[3]], dtype=np.float64),
            metric=header[3],
        )
    except (ValueError, IndexError) as err:
        raise NervesegError(f"{source} is not a per-image scores file ({err}); it cannot be compared") from err


def json_text(values: Any) -> str:
    """``values`` as the stores' JSON files hold them (numpy scalars and arrays as plain numbers and lists)."""
    return json.dumps(values, indent=1, default=_plain) + "\n"


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def check_weights_file(path: Path, what: str, fix: str) -> None:
    """Open ``path`` as HDF5 (only its superblock is read) and raise ``NervesegError`` naming ``what`` when it is
    truncated or no weights file at all. Weights may be read from a temporary copy of an artifact; Keras's error
    would name that copy, which is gone by the time anybody reads the message."""
    import h5py

    try:
        with h5py.File(path, "r"):
            pass
    except OSError as err:
        reason = first_line(err)[:300]
        raise NervesegError(f"{what} cannot be read ({reason}); {fix}") from err
