"""Reading Kaggle's raw layout: file indexes and validated TIFF decoding.

Everything here only reads. Any problem with the raw data stops with a one-line ``DataError``
that names the file and says what to do, because a silently skipped or mis-decoded image would
quietly change every score computed later. ``cv2.imread(p, IMREAD_GRAYSCALE)`` hides exactly
these problems (it returns None for unreadable files and converts colour to gray), so files are
decoded with ``IMREAD_UNCHANGED`` and checked here.

Hostile files are refused before they are decoded: a file larger than any 580x420 8-bit TIFF can be is
never read, the magic bytes must say TIFF (cv2 would decode PNG bytes named ``.tif``), and the TIFF
header (tifffile reads only the tags) must describe exactly one 580x420 8-bit page, so a header
claiming a gigapixel costs nothing and a multi-page file is not silently cut to its first page.
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import tifffile

from nerveseg.errors import NervesegError
from nerveseg.io_utils import read_bounded
from nerveseg.paths import ORIG_HEIGHT, ORIG_WIDTH, RAW_DIR

TRAIN_IMAGE_RE = re.compile(r"(?P<subject>0|[1-9]\d*)_(?P<image>0|[1-9]\d*)\.tif")
TRAIN_MASK_RE = re.compile(r"(?P<subject>0|[1-9]\d*)_(?P<image>0|[1-9]\d*)_mask\.tif")
TEST_IMAGE_RE = re.compile(r"(?P<id>0|[1-9]\d*)\.tif")

# Uncompressed 580x420 bytes plus a generous allowance for tags: no valid raw file is bigger.
MAX_RAW_FILE_BYTES = ORIG_HEIGHT * ORIG_WIDTH + (4 << 20)
TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
FILE_SIGNATURES = (  # what a file's first bytes say it is (cv2 decodes by content, whatever the name says)
    (TIFF_MAGICS, "TIFF"),
    ((b"\x89PNG\r\n\x1a\n",), "PNG"),
    ((b"\xff\xd8\xff",), "JPEG"),
    ((b"BM",), "BMP"),
    ((b"GIF87a", b"GIF89a"), "GIF"),
)


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
    for path in entries:
        if path.is_symlink() and not path.exists():  # exists() is False for a dangling link and for a loop
            raise DataError(
                f"{path}: symbolic link that resolves to no file (dangling, or a loop); "
                "point it at the real file or remove it"
            )
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
    """The file's bytes, with a ``DataError`` instead of a bare ``OSError``; a file too large to be a raw
    image (``MAX_RAW_FILE_BYTES``) is refused before it is read."""
    too_large = (
        f"larger than any {ORIG_WIDTH}x{ORIG_HEIGHT} 8-bit TIFF ({MAX_RAW_FILE_BYTES / 1e6:.1f} MB at most); "
        "replace it with the original file"
    )
    return read_bounded(path, MAX_RAW_FILE_BYTES, too_large, DataError)


@dataclass(frozen=True)
class TiffHeader:
    """What a TIFF's tags say about it, read without decoding a pixel (tifffile reads only the tags)."""

    pages: int
    width: int
    height: int
    channels: int  # samples per pixel
    shape: tuple[int, ...]  # the first page's array shape as tifffile decodes it
    dtype: np.dtype | None


def file_kind(data: bytes) -> str | None:
    """The format the file's first bytes (its signature) name: TIFF, PNG, JPEG, BMP or GIF; None when unknown."""
    return next((kind for magics, kind in FILE_SIGNATURES if data.startswith(magics)), None)


def tiff_header(data: bytes) -> TiffHeader | None:
    """The header of TIFF bytes (classic or BigTIFF), or None when it cannot be parsed (corrupt, truncated)."""
    _quiet_tifffile()
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            n_pages = len(tif.pages)
            page = tif.pages.first if n_pages else None
            if page is None:
                return None
            return TiffHeader(
                n_pages, int(page.imagewidth), int(page.imagelength), int(page.samplesperpixel),
                tuple(page.shape), page.dtype,
            )  # fmt: skip
    except Exception:  # tifffile raises TiffFileError, ValueError, struct.error... on crafted headers
        return None


def check_tiff_header(data: bytes, path: Path) -> None:
    """Refuse, without decoding any pixel, bytes that are not exactly one 580x420 8-bit grayscale TIFF page."""
    kind = file_kind(data)
    if kind != "TIFF":
        what = f"a {kind} file named .tif" if kind is not None else "no TIFF signature"
        raise DataError(f"{path}: not a readable TIFF ({what}); replace it with the original TIFF")
    header = tiff_header(data)
    if header is None:
        raise DataError(f"{path}: not a readable TIFF (corrupt or truncated header); replace it with the original file")
    if header.pages != 1:
        raise DataError(
            f"{path}: holds {header.pages} pages; expected one image per file, replace it with the original"
        )
    if header.channels != 1:
        raise _channels_error(path, header.channels)
    _check_layout(header.shape, header.dtype, path)


def _channels_error(path: Path, channels: object) -> DataError:
    return DataError(
        f"{path}: has {channels} channels; expected 1 (8-bit grayscale), replace it with the original file"
    )


def _quiet_tifffile() -> None:
    """tifffile logs a warning per bad header; the ``DataError`` says it in one line, so only its errors stay."""
    logging.getLogger("tifffile").setLevel(logging.ERROR + 1)


def _check_layout(shape: tuple[int, ...], dtype: np.dtype | None, path: Path) -> None:
    if len(shape) != 2:
        raise _channels_error(path, shape[-1] if len(shape) == 3 else "several")
    if dtype != np.uint8:
        raise DataError(f"{path}: has pixel type {dtype}; expected 8-bit (uint8), replace it with the original")
    if shape != (ORIG_HEIGHT, ORIG_WIDTH):
        raise DataError(
            f"{path}: is {shape[1]}x{shape[0]} (width x height); expected {ORIG_WIDTH}x{ORIG_HEIGHT}, "
            "replace it with the original file"
        )


def decode_image(data: bytes, path: Path) -> np.ndarray:
    """Decode and validate one 8-bit single-channel 420x580 TIFF (``path`` only names it in errors).

    The header is checked first (:func:`check_tiff_header`); the decoded array is checked again, since
    cv2 decodes what the header describes only as far as its own codecs agree.
    """
    if not data:
        raise DataError(f"{path}: not a readable TIFF (empty file); replace it with the original file")
    check_tiff_header(data, path)
    array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise DataError(f"{path}: not a readable TIFF (corrupt or truncated); replace it with the original file")
    _check_layout(array.shape, array.dtype, path)
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
