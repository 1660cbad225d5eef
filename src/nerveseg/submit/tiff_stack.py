"""The ISBI 2012 submission: a 32-bit float TIFF stack of membrane probabilities, one page per slice.

The challenge took ``n`` pages of 512x512 float32 values in [0, 1] (1 = membrane). The file is
encoded in memory, written atomically to a NEW path (never over an existing submission), then read
back and checked, so a file that exists is a file that the challenge would have read.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import tifffile

from nerveseg.errors import NervesegError
from nerveseg.io_utils import atomic_create_bytes

ISBI_SHAPE = (512, 512)


def check_probability_stack(probs: np.ndarray, where: str, shape: tuple[int, int] | None = ISBI_SHAPE) -> None:
    """Raise a one-line ``ValueError`` naming ``where`` unless ``probs`` is (n, h, w) finite float32 in [0, 1]."""
    probs = np.asarray(probs)
    if probs.ndim != 3 or len(probs) == 0 or (shape is not None and probs.shape[1:] != shape):
        wanted = f"(n, {shape[0]}, {shape[1]})" if shape else "(n, h, w)"
        raise ValueError(f"{where}: probability stack has shape {probs.shape}; expected {wanted} with n >= 1")
    if probs.dtype != np.float32:
        raise ValueError(f"{where}: probability stack is {probs.dtype}; the challenge takes 32-bit float (float32)")
    if not np.isfinite(probs).all():
        raise ValueError(f"{where}: probability stack holds {int((~np.isfinite(probs)).sum())} NaN/inf values")
    low, high = float(probs.min()), float(probs.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{where}: probabilities must lie in [0, 1], found values in [{low:.4g}, {high:.4g}]")


def read_probability_stack(path: Path | str, shape: tuple[int, int] | None = ISBI_SHAPE) -> np.ndarray:
    """Read and check a probability stack -> (n, h, w) float32 (a single page reads as n = 1)."""
    path = Path(path)
    try:
        probs = tifffile.imread(path)
    except (OSError, ValueError, tifffile.TiffFileError) as err:
        raise NervesegError(f"{path}: cannot read it as a TIFF stack ({err})") from err
    probs = probs[None] if probs.ndim == 2 else probs
    check_probability_stack(probs, str(path), shape)
    return probs


def write_probability_stack(probs: np.ndarray, path: Path | str, shape: tuple[int, int] | None = ISBI_SHAPE) -> Path:
    """Write ``probs`` (n, 512, 512) float32 to a NEW multi-page TIFF at ``path`` and verify it by reading it back.

    ``ValueError`` (one line) when ``path`` exists, the stack is invalid, or the read-back differs.
    ``shape=None`` accepts any slice size (tests, other data sets).
    """
    path = Path(path)
    if path.exists():
        raise NervesegError(f"submission {path} already exists; submissions are never overwritten, pick a new name")
    check_probability_stack(probs, str(path), shape)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.ascontiguousarray(probs), photometric="minisblack")
    try:
        atomic_create_bytes(path, buffer.getvalue())
    except FileExistsError as err:
        raise NervesegError(f"submission {path} already exists; submissions are never overwritten") from err
    if not np.array_equal(read_probability_stack(path, shape), probs):
        raise ValueError(f"{path}: the written stack does not read back equal to the predictions; do not submit it")
    return path
