"""Reading Kaggle's raw layout: file indexes and validated TIFF decoding.

Everything here only reads. Any problem with the raw data stops with a one-line ``DataError``
that names the file and says what to do, because a silently skipped or mis-decoded image would
quietly change every score computed later. ``cv2.imread(p, IMREAD_GRAYSCALE)`` hides exactly
these problems (it returns None for unreadable files and converts colour to gray), so files are
decoded with ``IMREAD_UNCHANGED`` and checked here.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from nerveseg.errors import NervesegError
from nerveseg.paths import ORIG_HEIGHT, ORIG_WIDTH, RAW_DIR

TRAIN_IMAGE_RE = re.compile(r"(?P<subject>0|[1-9]\d*)_(?P<image>0|[1-9]\d*)\.tif")
TRAIN_MASK_RE = re.compile(r"(?P<subject>0|[1-9]\d*)_(?P<image>0|[1-9]\d*)_mask\.tif")
TEST_IMAGE_RE = re.compile(r"(?P<id>0|[1-9]\d*)\.tif")


class DataError(NervesegError):
    """Raw data that cannot be used as it is; the message names the file and the fix."""


def _listing(folder: Path) -> list[Path]:
    """Files of ``folder`` sorted by name, hidden files (``.gitkeep``, ``.DS_Store``) skipped."""
    if not folder.is_dir():
        raise DataError(
            f"{folder}: folder not found; put Kaggle's files there (or make a synthetic set with src/make_synthetic.py)"
        )
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    if not entries:
        raise DataError(f"{folder}: folder is empty; copy Kaggle's .tif files into it")
    return entries


def _bad_name(path: Path, expected: str) -> DataError:
    return DataError(f"{path}: name does not follow the pattern {expected}; rename or remove the file")


def index_train(raw_dir: Path = RAW_DIR) -> pd.DataFrame:
    """One row per training pair (``id``, ``subject``, ``image``, ``image_path``, ``mask_path``).

    Checks names and pairing only (no pixels are read), so it is fast enough to run before every
    cache lookup. Sorted by (subject, image) numerically, the order every array follows.
    """
    folder = Path(raw_dir) / "train"
    images: dict[tuple[int, int], Path] = {}
    masks: dict[tuple[int, int], Path] = {}
    for path in _listing(folder):
        if match := TRAIN_MASK_RE.fullmatch(path.name):
            masks[int(match["subject"]), int(match["image"])] = path
        elif match := TRAIN_IMAGE_RE.fullmatch(path.name):
            images[int(match["subject"]), int(match["image"])] = path
        else:
            raise _bad_name(path, "<subject>_<image>.tif or <subject>_<image>_mask.tif")
    if unpaired := sorted(images.keys() - masks.keys()):
        path = images[unpaired[0]]
        raise DataError(f"{path}: mask {path.stem}_mask.tif is missing; add it or remove the image")
    if orphans := sorted(masks.keys() - images.keys()):
        path = masks[orphans[0]]
        raise DataError(
            f"{path}: image {path.name.removesuffix('_mask.tif')}.tif is missing; add it or remove the mask"
        )
    keys = sorted(images)
    return pd.DataFrame(
        {
            "id": [f"{s}_{i}" for s, i in keys],
            "subject": np.array([s for s, _ in keys], dtype=np.int64),
            "image": np.array([i for _, i in keys], dtype=np.int64),
            "image_path": [images[k] for k in keys],
            "mask_path": [masks[k] for k in keys],
        }
    )


def index_test(raw_dir: Path = RAW_DIR) -> pd.DataFrame:
    """One row per test image (``id`` int, ``image_path``), sorted by id like Kaggle's sample submission."""
    rows = []
    for path in _listing(Path(raw_dir) / "test"):
        match = TEST_IMAGE_RE.fullmatch(path.name)
        if match is None:
            raise _bad_name(path, "<id>.tif")
        rows.append((int(match["id"]), path))
    rows.sort()
    return pd.DataFrame({"id": np.array([r[0] for r in rows], dtype=np.int64), "image_path": [r[1] for r in rows]})


def read_bytes(path: Path) -> bytes:
    """The file's bytes, with a ``DataError`` instead of a bare ``OSError``."""
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror}); check the file and its permissions") from err


def decode_image(data: bytes, path: Path) -> np.ndarray:
    """Decode and validate one 8-bit single-channel 420x580 TIFF (``path`` only names it in errors)."""
    array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if array is None:
        raise DataError(f"{path}: not a readable TIFF (corrupt or truncated); replace it with the original file")
    if array.ndim != 2:
        raise DataError(
            f"{path}: has {array.shape[2]} channels; expected 1 (8-bit grayscale), replace it with the original file"
        )
    if array.dtype != np.uint8:
        raise DataError(f"{path}: has pixel type {array.dtype}; expected 8-bit (uint8), replace it with the original")
    if array.shape != (ORIG_HEIGHT, ORIG_WIDTH):
        raise DataError(
            f"{path}: is {array.shape[1]}x{array.shape[0]} (width x height); expected {ORIG_WIDTH}x{ORIG_HEIGHT}, "
            "replace it with the original file"
        )
    return array


def decode_mask(data: bytes, path: Path) -> np.ndarray:
    """Decode and validate one mask (values 0 and 255 only); returns uint8 in {0, 1}."""
    array = decode_image(data, path)
    values = np.flatnonzero(np.bincount(array.ravel(), minlength=256))  # 10x faster than np.unique
    if not np.isin(values, (0, 255)).all():
        shown = ", ".join(str(v) for v in values[:6]) + (", ..." if len(values) > 6 else "")
        raise DataError(f"{path}: mask values {shown}; expected only 0 and 255, replace it with the original mask")
    return (array > 0).astype(np.uint8)


def read_image(path: Path) -> np.ndarray:
    """A validated training or test image: uint8 (420, 580)."""
    return decode_image(read_bytes(path), path)


def read_mask(path: Path) -> np.ndarray:
    """A validated mask: uint8 (420, 580) in {0, 1}."""
    return decode_mask(read_bytes(path), path)
