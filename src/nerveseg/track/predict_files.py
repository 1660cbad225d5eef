"""Segment new image files with a logged or registered model: the work behind ``src/predict.py``.

The model is loaded with ``mlflow.pyfunc.load_model(URI)`` (``models:/nerveseg@champion``,
``models:/<model id>``, ``runs:/...``), which is why this lives in track/: the same object
``mlflow models serve`` runs, fed the same file bytes, so its answers equal the server's. Each image
gives ``<stem>_mask.png`` (0/255 at the image's own size) and ``<stem>_overlay.png`` (the mask's
outline on the image); ``predictions.csv`` lists file, present, probability, area and RLE. A file that
cannot be used is named on one line and skipped; every output is written atomically as a NEW file,
and all of them are checked absent before any work, so nothing is half-written or overwritten.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from nerveseg.errors import NervesegError
from nerveseg.inference.images import IMAGE_SUFFIXES, ImageError, decode_gray, overlay_png
from nerveseg.io_utils import atomic_create_bytes, atomic_create_text, check_writable_dir
from nerveseg.logs import progress_bar
from nerveseg.track import schema

PREDICTIONS_FILE = "predictions.csv"
CSV_COLUMNS = ("file", schema.PRESENT_COLUMN, schema.PROBABILITY_COLUMN, schema.AREA_COLUMN, schema.RLE_COLUMN)
MASK_SUFFIX = "_mask"  # Kaggle's train/<id>_mask.tif are masks, not frames: a folder's are left out


@dataclass
class PredictReport:
    """What ``predict_files`` wrote and what it skipped (file, one-line reason)."""

    out_dir: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    masks_left_out: int = 0


def image_files(inputs: Sequence[Path]) -> tuple[list[Path], int]:
    """Files as given, and each folder's images (by suffix, sorted, not recursive, ``*_mask.*`` left out)."""
    files, left_out = [], 0
    for path in map(Path, inputs):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            masks = [p for p in found if p.stem.endswith(MASK_SUFFIX)]
            left_out += len(masks)
            files += [p for p in found if p not in masks]
        elif path.exists():
            files.append(path)
        else:
            raise NervesegError(f"input {path} does not exist; pass image files or folders of them")
    if not files:
        raise NervesegError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, inputs))}")
    return files, left_out


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


def _check_new(paths: Iterable[Path]) -> None:
    existing = [p for p in paths if p.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise NervesegError(f"{existing[0]} already exists{more}; outputs are never overwritten, pick a new --out")


def load_model(uri: str) -> Any:
    """``mlflow.pyfunc.load_model(uri)`` with a one-line error naming the URI."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise NervesegError(f"--model {uri}: {first[:300]}; register one with src/register.py") from err


def _read(path: Path) -> tuple[bytes, np.ndarray]:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageError(f"{path}: cannot be read ({err.strerror})") from err
    return data, decode_gray(data, str(path))


def _write_outputs(row: pd.Series, gray: np.ndarray, mask_path: Path, overlay_path: Path) -> None:
    mask_bytes = row[schema.MASK_COLUMN]
    mask = cv2.imdecode(np.frombuffer(mask_bytes, np.uint8), cv2.IMREAD_UNCHANGED)
    atomic_create_bytes(mask_path, mask_bytes)
    atomic_create_bytes(overlay_path, overlay_png(gray, mask))


def predictions_csv(rows: Sequence[dict[str, Any]]) -> str:
    """The CSV text; probabilities in full precision (``repr``), so they read back exactly."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def predict_files(
    inputs: Sequence[Path], model_uri: str, out_dir: Path, *, batch_size: int = 32, progress: bool = True
) -> PredictReport:
    """Segment every image in ``inputs`` with the model at ``model_uri``; write masks, overlays, the CSV."""
    if batch_size < 1:
        raise NervesegError(f"--batch-size {batch_size} must be >= 1")
    files, left_out = image_files(inputs)
    out_dir = check_writable_dir(Path(out_dir), "--out")
    outputs = output_paths(files, out_dir)
    _check_new([out_dir / PREDICTIONS_FILE, *(p for pair in outputs.values() for p in pair)])
    model = load_model(model_uri)
    if (model.model_config or {}).get(schema.TASK_CONFIG, "nerve") != "nerve":
        raise NervesegError(f"--model {model_uri} is not a nerve model; predict.py writes nerve masks only")
    report = PredictReport(out_dir, masks_left_out=left_out)
    with progress_bar(total=len(files), desc="predict", unit="img", disable=not progress) as bar:
        for start in range(0, len(files), batch_size):
            _predict_batch(model, files[start : start + batch_size], outputs, report)
            bar.update(min(batch_size, len(files) - start))
    if report.rows:
        atomic_create_text(out_dir / PREDICTIONS_FILE, predictions_csv(report.rows))
    return report


def _predict_batch(model: Any, batch: Sequence[Path], outputs: dict[Path, tuple[Path, Path]], report: PredictReport):
    good: list[tuple[Path, bytes, np.ndarray]] = []
    for path in batch:
        try:
            good.append((path, *_read(path)))
        except ImageError as err:
            print(f"skipped {err}", file=sys.stderr)
            report.skipped.append((path, str(err)))
    if not good:
        return
    frame = pd.DataFrame({schema.IMAGE_COLUMN: [data for _, data, _ in good]})
    result = model.predict(frame, params={schema.RETURN_MASK_PARAM: True})
    for (path, _, gray), (_, row) in zip(good, result.iterrows(), strict=True):
        _write_outputs(row, gray, *outputs[path])
        report.rows.append(
            {
                "file": path.name,
                schema.PRESENT_COLUMN: bool(row[schema.PRESENT_COLUMN]),
                schema.PROBABILITY_COLUMN: repr(float(row[schema.PROBABILITY_COLUMN])),
                schema.AREA_COLUMN: int(row[schema.AREA_COLUMN]),
                schema.RLE_COLUMN: row[schema.RLE_COLUMN],
            }
        )


__all__ = ["CSV_COLUMNS", "PREDICTIONS_FILE", "PredictReport", "image_files", "predict_files", "predictions_csv"]
