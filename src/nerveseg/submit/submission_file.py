"""Kaggle submission files: write, prove and score them.

The CSV is ``img,pixels`` with one row per test image in ascending numeric id and an empty field
for an empty mask (Kaggle's own ``train_masks.csv`` writes ``1,5,`` for an empty mask). A
transposed or malformed RLE scores zero without any error on the leaderboard, so every file is
validated by decoding each row again and comparing with the predicted mask (the
kaggle-understanding-clouds habit) before anyone uploads it.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nerveseg.config import shown
from nerveseg.errors import NervesegError
from nerveseg.evaluate.metrics import dice_per_image
from nerveseg.evaluate.postprocess import iter_postprocessed
from nerveseg.evaluate.postprocess_settings import PostprocessSettings
from nerveseg.io_utils import atomic_create_text, check_writable_dir
from nerveseg.paths import FULL_SHAPE, ORIG_HEIGHT, ORIG_WIDTH
from nerveseg.submit.rle import rle_decode, rle_encode, validate_rle

HEADER = ("img", "pixels")

MasksOrRles = np.ndarray | Sequence[str]
# Room one CSV row may take: a nerve's RLE is about 100 runs of about 11 characters; 4 kB allows several times that.
CSV_BYTES_PER_IMAGE = 4096


def expected_csv_bytes(n_images: int) -> int:
    """A generous size of the submission CSV for ``n_images`` test images (for the free-space check)."""
    return len(",".join(HEADER)) + 1 + n_images * CSV_BYTES_PER_IMAGE


def _as_ids(ids: Sequence[int] | np.ndarray) -> np.ndarray:
    array = np.asarray(ids)
    if array.ndim != 1:
        raise NervesegError(f"test ids must be a 1-D sequence, got shape {array.shape}")
    try:
        as_int = array.astype(np.int64)
    except (TypeError, ValueError) as err:
        raise NervesegError(f"test ids must be integers (Kaggle's test/<id>.tif), got {array[:5].tolist()}") from err
    if array.dtype.kind == "f" and not np.array_equal(as_int, array):
        raise NervesegError(f"test ids must be whole numbers, got {array[:5].tolist()}")
    return as_int


def _rles(masks: MasksOrRles, count: int) -> list[str]:
    """RLE strings from (n, 420, 580) masks, or the strings themselves (already encoded, chunk by chunk)."""
    if isinstance(masks, np.ndarray):
        if masks.ndim != 3 or masks.shape[1:] != FULL_SHAPE:
            raise NervesegError(
                f"submission masks must be (n, {ORIG_HEIGHT}, {ORIG_WIDTH}) at full resolution, got {masks.shape}"
            )
        rles = [rle_encode(mask) for mask in masks]
    else:
        rles = list(masks)
        bad = [r for r in rles if not isinstance(r, str)]
        if bad:
            raise NervesegError(f"submission rows must be RLE strings or a mask array, got {type(bad[0]).__name__}")
    if len(rles) != count:
        raise NervesegError(f"{count} test ids but {len(rles)} masks; they must be aligned")
    return rles


def masks_to_rows(ids: Sequence[int] | np.ndarray, masks: MasksOrRles) -> list[tuple[int, str]]:
    """``(id, rle)`` rows in ascending numeric id (given order does not matter); ids must be unique."""
    id_array = _as_ids(ids)
    rles = _rles(masks, len(id_array))
    unique, counts = np.unique(id_array, return_counts=True)
    if (counts > 1).any():
        raise NervesegError(f"test ids must be unique; repeated: {unique[counts > 1][:10].tolist()}")
    order = np.argsort(id_array, kind="stable")
    return [(int(id_array[i]), rles[i]) for i in order]


def _rows_to_csv(rows: list[tuple[int, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(rows)
    return buffer.getvalue()


def check_new_submission(path: Path | str) -> Path:
    """The one "never overwrite" rule, checked before any work: ``path`` must not exist and its folder
    must take a file (created if needed). Raises ``NervesegError`` naming the path."""
    path = Path(path)
    if path.exists():
        raise NervesegError(f"submission {path} already exists; submissions are never overwritten, pick a new name")
    check_writable_dir(path.parent, "submission folder")
    return path


def write_submission(ids: Sequence[int] | np.ndarray, masks: MasksOrRles, path: Path | str) -> Path:
    """Write ``img,pixels`` rows sorted by numeric id to a NEW file ``path`` (NervesegError if it exists).

    ``masks`` is a (n, 420, 580) binary array or the already-encoded RLE strings. The file is created
    atomically, so a submission written in between by another process is not replaced either.
    """
    path = check_new_submission(path)
    try:
        atomic_create_text(path, _rows_to_csv(masks_to_rows(ids, masks)))
    except FileExistsError as err:
        raise NervesegError(f"submission {path} already exists; submissions are never overwritten") from err
    return path


def read_submission(path: Path | str) -> pd.DataFrame:
    """The CSV as a DataFrame ``img`` (int), ``pixels`` (str, "" for empty); checks the header and that the ids are
    positive integers, each listed once."""
    path = Path(path)
    if not path.is_file():
        raise NervesegError(f"submission {path} does not exist")
    with open(path, "rb") as handle:
        if b"\0" in handle.read(1 << 16):
            raise NervesegError(f"submission {path} is a binary file, not CSV text; pass the CSV of src/submit.py")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except pd.errors.EmptyDataError:
        raise NervesegError(f"submission {path} is empty; expected img,pixels and a row per image") from None
    except (UnicodeDecodeError, pd.errors.ParserError) as err:
        reason = "not UTF-8 text" if isinstance(err, UnicodeDecodeError) else "not a well-formed CSV"
        raise NervesegError(f"submission {path} is {reason}; pass the CSV written by src/submit.py") from None
    if tuple(frame.columns) != HEADER:
        header = shown(list(frame.columns))
        raise NervesegError(f"submission {path} has header {header}; expected {list(HEADER)}")
    bad = frame.loc[~frame["img"].str.fullmatch(r"\d{1,18}"), "img"]  # 18 digits always fit int64
    if len(bad):
        raise NervesegError(
            f"submission {path}: img values must be positive integers (test image ids), got "
            f"{shown(bad.head(5).tolist())}"
        )
    frame["img"] = frame["img"].astype(np.int64)
    duplicated = sorted(set(frame.loc[frame["img"].duplicated(), "img"].tolist()))
    if duplicated:
        raise NervesegError(f"submission {path} lists ids more than once: {duplicated[:10]}")
    return frame


def validate_submission(
    path: Path | str, expected_ids: Sequence[int] | np.ndarray, masks: MasksOrRles | None = None
) -> pd.DataFrame:
    """Raise NervesegError (a ValueError) unless ``path`` is a submission Kaggle will score as we mean it.

    Checks: header; every expected id exactly once and nothing else; ascending id order; every RLE
    well formed, in range, ascending and non-overlapping; and, when ``masks`` (aligned with
    ``expected_ids``; an array or RLE strings) is given, that every row decodes to that mask.
    Returns the parsed rows.
    """
    path = Path(path)
    frame = read_submission(path)
    ids = frame["img"].to_numpy()
    expected = _as_ids(expected_ids)
    missing = sorted(set(expected.tolist()) - set(ids.tolist()))
    if missing:
        raise NervesegError(f"submission {path} lacks {len(missing)} test ids, e.g. {missing[:10]}")
    extra = sorted(set(ids.tolist()) - set(expected.tolist()))
    if extra:
        raise NervesegError(f"submission {path} has {len(extra)} ids that are not test images, e.g. {extra[:10]}")
    if (np.diff(ids) <= 0).any():
        raise NervesegError(f"submission {path} rows are not in ascending numeric id order")
    for image_id, rle in zip(ids.tolist(), frame["pixels"].tolist(), strict=True):
        try:
            validate_rle(rle, FULL_SHAPE)
        except ValueError as err:
            raise NervesegError(f"submission {path}, img {image_id}: {err}") from err
    if masks is not None:
        rles = _rles(masks, len(expected)) if not isinstance(masks, np.ndarray) else None
        position = {int(i): k for k, i in enumerate(expected.tolist())}
        for image_id, rle in zip(ids.tolist(), frame["pixels"].tolist(), strict=True):
            k = position[image_id]
            if rles is not None and rles[k] == rle:
                continue  # identical strings decode identically
            wanted = rle_decode(rles[k], FULL_SHAPE) if rles is not None else np.asarray(masks[k]) != 0
            if not np.array_equal(rle_decode(rle, FULL_SHAPE) != 0, wanted != 0):
                raise NervesegError(f"submission {path}, img {image_id}: the RLE does not decode to the predicted mask")
    return frame


def score_submission(csv_path: Path | str, masks_dir: Path | str) -> tuple[float, pd.DataFrame]:
    """Competition score of a submission against ``masks_dir/<id>_mask.tif`` (e.g. synthetic test masks).

    Returns the mean Dice and a per-image DataFrame (img, dice, true_area, pred_area).
    """
    from nerveseg.data.raw import read_mask  # local: keeps submission importable without the data module

    masks_dir = Path(masks_dir)
    if not masks_dir.is_dir():
        raise NervesegError(f"mask folder {masks_dir} does not exist; pass the folder holding <id>_mask.tif files")
    frame = read_submission(csv_path)
    available = {int(p.name[: -len("_mask.tif")]) for p in masks_dir.glob("*_mask.tif") if p.name[:-9].isdigit()}
    missing = sorted(set(frame["img"].tolist()) - available)
    if missing:
        raise NervesegError(
            f"no ground truth in {masks_dir} for {len(missing)} submission ids, e.g. {missing[:10]} "
            "(expected <id>_mask.tif for every row)"
        )
    unscored = sorted(available - set(frame["img"].tolist()))
    if unscored:
        raise NervesegError(
            f"submission {csv_path} lacks {len(unscored)} ids that have masks in {masks_dir}, e.g. {unscored[:10]}"
        )
    rows = []
    for image_id, rle in zip(frame["img"].tolist(), frame["pixels"].tolist(), strict=True):
        try:
            pred = rle_decode(rle, FULL_SHAPE)
        except ValueError as err:
            raise NervesegError(f"submission {csv_path}, img {image_id}: {err}") from err
        truth = read_mask(masks_dir / f"{image_id}_mask.tif")
        dice = float(dice_per_image(truth[None], pred[None])[0])
        rows.append((image_id, dice, int(np.count_nonzero(truth)), int(np.count_nonzero(pred))))
    per_image = pd.DataFrame(rows, columns=["img", "dice", "true_area", "pred_area"])
    return float(per_image["dice"].mean()) if len(per_image) else float("nan"), per_image


@dataclass
class WriteStats:
    """What :func:`postprocess_and_write` did and how long each stage took (seconds)."""

    path: Path
    n_images: int
    n_empty: int
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def empty_share(self) -> float:
        return self.n_empty / self.n_images if self.n_images else float("nan")


def postprocess_and_write(
    ids: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    settings: PostprocessSettings | Mapping[str, Any],
    path: Path | str,
    presence: np.ndarray | None = None,
    *,
    chunk_size: int = 64,
) -> WriteStats:
    """Model-size probabilities -> full-resolution post-processed masks -> RLE -> a validated new CSV.

    Works chunk by chunk (full-resolution test masks would be 1.3 GB) and proves every RLE by
    decoding it and comparing with its mask before the file is written; the written file is then
    validated (ids, order, RLE syntax, rows equal to the encoded masks).
    """
    path = check_new_submission(path)
    id_array = _as_ids(ids)
    if len(id_array) != len(probs):
        raise NervesegError(f"{len(id_array)} test ids but {len(probs)} probability maps; they must be aligned")
    seconds = {"postprocess": 0.0, "rle": 0.0}
    rles: list[str] = []
    n_empty = 0
    started = time.perf_counter()
    for _, masks in iter_postprocessed(probs, settings, presence, chunk_size=chunk_size):
        encoded = time.perf_counter()
        seconds["postprocess"] += encoded - started
        for mask in masks:
            rle = rle_encode(mask)
            if not np.array_equal(rle_decode(rle, FULL_SHAPE), mask != 0):
                raise RuntimeError(f"RLE round trip failed for test image {id_array[len(rles)]}; this is a bug")
            rles.append(rle)
            n_empty += rle == ""
        started = time.perf_counter()
        seconds["rle"] += started - encoded
    write_submission(id_array, rles, path)
    seconds["write"] = time.perf_counter() - started
    started = time.perf_counter()
    validate_submission(path, id_array, rles)
    seconds["validate"] = time.perf_counter() - started
    return WriteStats(path=path, n_images=len(rles), n_empty=n_empty, seconds=seconds)
