"""Kaggle's run-length encoding, exactly as the leaderboard decodes it.

Pixels are numbered from 1, top to bottom then left to right (column-major), and a mask is
written as ascending ``start length`` pairs separated by spaces; an empty mask is an empty
string. A transposed or row-major encoding scores zero without any error, which is why the
golden test compares against Kaggle's own rows and the submission decodes every row again.
"""

from __future__ import annotations

import numpy as np

from nerveseg.errors import NervesegError
from nerveseg.paths import FULL_SHAPE


def rle_encode(mask: np.ndarray) -> str:
    """Encode a 2-D mask (bool, 0/1 or 0/255) in Kaggle's column-major, 1-based convention."""
    if mask.ndim != 2:
        raise NervesegError(f"rle_encode takes a 2-D mask, got shape {mask.shape}")
    mask = np.asarray(mask)
    columns = np.flatnonzero(mask.any(axis=0))
    if columns.size == 0:
        return ""
    # Only the occupied columns are transposed: a nerve spans ~100 of 580, so this is ~5x less work.
    first, last = int(columns[0]), int(columns[-1]) + 1
    pixels = mask[:, first:last].T.ravel() != 0  # column-major order
    changes = np.flatnonzero(pixels[1:] != pixels[:-1]) + 1  # 0-based positions where a run starts or ends
    if pixels[0]:
        changes = np.concatenate([[0], changes])
    if pixels[-1]:
        changes = np.concatenate([changes, [pixels.size]])
    starts, ends = changes[0::2] + first * mask.shape[0], changes[1::2] + first * mask.shape[0]
    pairs = np.empty(2 * starts.size, dtype=np.int64)
    pairs[0::2] = starts + 1
    pairs[1::2] = ends - starts
    return " ".join(map(str, pairs.tolist()))


def _parse(rle: str) -> tuple[np.ndarray, np.ndarray]:
    text = rle.strip() if isinstance(rle, str) else ""
    if not text:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    try:
        numbers = np.array(text.split(), dtype=np.int64)
    except ValueError as err:
        raise NervesegError(f"RLE {text[:40]!r}... holds something other than integers") from err
    if numbers.size % 2:
        raise NervesegError(f"RLE has {numbers.size} numbers; expected 'start length' pairs (an even count)")
    return numbers[0::2], numbers[1::2]


def validate_rle(rle: str, shape: tuple[int, int] = FULL_SHAPE) -> None:
    """Raise ``NervesegError`` (a ValueError) unless ``rle`` is well formed, in range, ascending and non-overlapping."""
    starts, lengths = _parse(rle)
    if starts.size == 0:
        return
    total = shape[0] * shape[1]
    if (starts < 1).any() or (lengths < 1).any():
        raise NervesegError("RLE starts must be >= 1 and lengths >= 1 (pixels are numbered from 1)")
    ends = starts + lengths - 1
    if (ends > total).any():
        raise NervesegError(f"RLE run ends at pixel {int(ends.max())}, beyond the {total} pixels of a {shape} image")
    if (starts[1:] <= ends[:-1]).any():
        raise NervesegError("RLE runs must be ascending and must not overlap")


def rle_decode(rle: str, shape: tuple[int, int] = FULL_SHAPE) -> np.ndarray:
    """Decode Kaggle's RLE into a (rows, cols) uint8 mask of 0/1; validates the string first."""
    validate_rle(rle, shape)
    starts, lengths = _parse(rle)
    flat = np.zeros(shape[0] * shape[1], dtype=np.uint8)
    for start, stop in zip((starts - 1).tolist(), (starts - 1 + lengths).tolist(), strict=True):
        flat[start:stop] = 1  # a mask has ~100 runs: slicing beats any scatter-and-cumsum trick
    return flat.reshape(shape[1], shape[0]).T
