"""Segment new image files with a packaged model: the work behind ``src/predict.py``.

The model is whatever ``load_model(uri)`` returns with ``predict(frame, params)`` and ``model_config``: in
``predict.py`` that is ``track.registry.load_model``, i.e. ``mlflow.pyfunc.load_model``, the same object
``mlflow models serve`` runs, fed the same file bytes, so its answers equal the server's. Each image
gives ``<stem>_mask.png`` (0/255 at the image's own size) and ``<stem>_overlay.png`` (the mask's
outline on the image); ``predictions.csv`` lists file, present, probability, area and RLE.

A file that cannot be used (``inference.images`` checks its header before decoding) is named on one line and
skipped; the others are still predicted and listed. An input given twice (a folder and a file in it) is
predicted once. Every output is written atomically as a NEW file and never replaced: a finished run
(``predictions.csv`` there) is refused up front, before the model is loaded, while the masks and overlays of a
run that stopped half-way are kept where this run's are identical, so the same command can be rerun into the
same folder to finish it.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import pandas as pd

from nerveseg import names
from nerveseg.config import DEFAULT_TASK
from nerveseg.errors import NervesegError
from nerveseg.inference.images import IMAGE_SUFFIXES, ImageError, decode_gray, overlay_png, read_image_file
from nerveseg.io_utils import atomic_create_bytes, atomic_create_text, check_outside, check_writable_dir
from nerveseg.logs import progress_bar
from nerveseg.paths import RAW_DIR
from nerveseg.tasks import get_task

PREDICTIONS_FILE = "predictions.csv"
CSV_COLUMNS = ("file", names.PRESENT_COLUMN, names.PROBABILITY_COLUMN, names.AREA_COLUMN, names.RLE_COLUMN)
MASK_SUFFIX = "_mask"  # Kaggle's train/<id>_mask.tif are masks, not frames: a folder's are left out


class Predictor(Protocol):
    """What ``predict_files`` asks of a model; an MLflow ``PyFuncModel`` is one."""

    @property
    def model_config(self) -> Mapping[str, Any] | None:
        """The model's options; its ``names.TASK_CONFIG`` says which task it segments."""

    def predict(self, data: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One row of ``names.*_COLUMN`` outputs per ``names.IMAGE_COLUMN`` input row."""


@dataclass
class PredictReport:
    """What ``predict_files`` wrote and what it skipped (file, one-line reason)."""

    out_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    masks_left_out: int = 0
    duplicates: int = 0  # inputs named more than once (the same file after resolving links), predicted once
    kept: int = 0  # outputs an earlier run of the same prediction had written, found identical and kept


@dataclass
class InputFiles:
    """The images to predict, each once, and what was left out of the inputs."""

    files: list[Path]
    masks_left_out: int = 0
    duplicates: int = 0


def image_files(inputs: Sequence[Path]) -> InputFiles:
    """Files as given, and each folder's images (by suffix, sorted, not recursive, ``*_mask.*`` left out); a
    file reached twice (named twice, or named and in a named folder, or through a link) is kept once."""
    found = InputFiles([])
    seen: set[str] = set()
    for path in map(Path, inputs):
        if path.is_dir():
            listed = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            masks = [p for p in listed if p.stem.endswith(MASK_SUFFIX)]
            found.masks_left_out += len(masks)
            candidates = [p for p in listed if p not in masks]
        elif path.exists():
            candidates = [path]
        else:
            raise NervesegError(f"input {path} does not exist; pass image files or folders of them")
        for candidate in candidates:
            key = os.path.realpath(candidate)
            if key in seen:
                found.duplicates += 1
                continue
            seen.add(key)
            found.files.append(candidate)
    if not found.files:
        raise NervesegError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, inputs))}")
    return found


def output_paths(files: Sequence[Path], out_dir: Path) -> dict[Path, tuple[Path, Path]]:
    """``<stem>_mask.png`` and ``<stem>_overlay.png`` per file; refuses two inputs with one stem."""
    seen: dict[str, Path] = {}
    for path in files:
        if path.stem in seen and seen[path.stem] != path:
            raise NervesegError(
                f"{seen[path.stem]} and {path} would both write {path.stem}_mask.png; predict them into separate --out"
            )
        seen[path.stem] = path
    return {p: (out_dir / f"{p.stem}_mask.png", out_dir / f"{p.stem}_overlay.png") for p in dict.fromkeys(files)}


def _read(path: Path) -> tuple[bytes, np.ndarray]:
    data = read_image_file(path)
    return data, decode_gray(data, str(path))


class OutputConflict(NervesegError):
    """An output file exists with other content than this run would write: it is never replaced."""


def _same_file(path: Path, data: bytes) -> bool:
    """Whether ``path`` is a regular file holding exactly ``data`` (an earlier run's identical output)."""
    try:
        return (
            path.is_file() and not path.is_symlink() and path.stat().st_size == len(data) and path.read_bytes() == data
        )
    except OSError:
        return False


def _write_outputs(row: pd.Series, gray: np.ndarray, source: Path, paths: tuple[Path, Path], report: PredictReport):
    """The mask and overlay of image ``source`` as new files; an identical file already there is kept, a
    different one is an ``OutputConflict`` before either is written."""
    mask_bytes = row[names.MASK_COLUMN]
    mask = cv2.imdecode(np.frombuffer(mask_bytes, np.uint8), cv2.IMREAD_UNCHANGED)
    outputs = dict(zip(paths, (mask_bytes, overlay_png(gray, mask)), strict=True))
    for path, data in outputs.items():
        if os.path.lexists(path) and not _same_file(path, data):
            raise OutputConflict(
                f"{source}: its output {path} already exists with other content; outputs are never overwritten, "
                "pick a new --out"
            )
    for path, data in outputs.items():
        if _same_file(path, data):
            report.kept += 1
        else:
            atomic_create_bytes(path, data)


def predictions_csv(rows: Sequence[dict[str, Any]]) -> str:
    """The CSV text; probabilities in full precision (``repr``), so they read back exactly."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def predict_files(
    inputs: Sequence[Path],
    model_uri: str,
    out_dir: Path,
    *,
    load_model: Callable[[str], Predictor],
    batch_size: int = 32,
    progress: bool = True,
    raw_dir: Path = RAW_DIR,
) -> PredictReport:
    """Segment every image in ``inputs`` with ``load_model(model_uri)``; write masks, overlays, the CSV.

    ``out_dir`` inside ``raw_dir`` (the raw data, never written) is refused before anything is read, and every
    check of the inputs and outputs comes before the model is loaded (seconds, or a tracking store's answer).
    """
    if batch_size < 1:
        raise NervesegError(f"--batch-size {batch_size} must be >= 1")
    out_dir = check_writable_dir(check_outside(Path(out_dir), raw_dir, "--out"), "--out")
    found = image_files(inputs)
    outputs = output_paths(found.files, out_dir)
    if (out_dir / PREDICTIONS_FILE).exists():
        raise NervesegError(
            f"{out_dir / PREDICTIONS_FILE} already exists; outputs are never overwritten, pick a new --out"
        )
    model = load_model(model_uri)
    task = (model.model_config or {}).get(names.TASK_CONFIG, DEFAULT_TASK)
    if names.RLE_COLUMN not in {column.name for column in get_task(task).served_columns}:
        raise NervesegError(f"--model {model_uri} is a {task} model, which answers no masks; predict.py writes masks")
    report = PredictReport(out_dir, masks_left_out=found.masks_left_out, duplicates=found.duplicates)
    files = found.files
    with progress_bar(total=len(files), desc="predict", unit="img", disable=not progress) as bar:
        for start in range(0, len(files), batch_size):
            _predict_batch(model, files[start : start + batch_size], outputs, report)
            bar.update(min(batch_size, len(files) - start))
    if report.rows:
        atomic_create_text(out_dir / PREDICTIONS_FILE, predictions_csv(report.rows))
    return report


def _skip(path: Path, err: NervesegError, report: PredictReport) -> None:
    """One ``error:`` line per file, as it is skipped: the run goes on, and one bad file is one line."""
    print(f"error: skipped {err}", file=sys.stderr)
    report.skipped.append((path, str(err)))


def _predict_batch(
    model: Predictor, batch: Sequence[Path], outputs: dict[Path, tuple[Path, Path]], report: PredictReport
):
    good: list[tuple[Path, bytes, np.ndarray]] = []
    for path in batch:
        try:
            good.append((path, *_read(path)))
        except ImageError as err:
            _skip(path, err, report)
    if not good:
        return
    # the model decodes the same bytes again: what predict.py writes is what the served model answers
    frame = pd.DataFrame({names.IMAGE_COLUMN: [data for _, data, _ in good]})
    result = model.predict(frame, params={names.RETURN_MASK_PARAM: True})
    for (path, _, gray), (_, row) in zip(good, result.iterrows(), strict=True):
        try:
            _write_outputs(row, gray, path, outputs[path], report)
        except OutputConflict as err:
            _skip(path, err, report)
            continue
        report.rows.append(
            {
                "file": path.name,
                names.PRESENT_COLUMN: bool(row[names.PRESENT_COLUMN]),
                names.PROBABILITY_COLUMN: repr(float(row[names.PROBABILITY_COLUMN])),
                names.AREA_COLUMN: int(row[names.AREA_COLUMN]),
                names.RLE_COLUMN: row[names.RLE_COLUMN],
            }
        )


__all__ = [
    "CSV_COLUMNS",
    "PREDICTIONS_FILE",
    "InputFiles",
    "OutputConflict",
    "PredictReport",
    "Predictor",
    "image_files",
    "predict_files",
    "predictions_csv",
]
