"""The ISBI 2012 submission: a 32-bit float TIFF stack of membrane probabilities, one page per slice.

The challenge took ``n`` pages of 512x512 float32 values in [0, 1] (1 = membrane). The file is
encoded in memory, written atomically to a NEW path (never over an existing submission), then read
back and checked, so a file that exists is a file that the challenge would have read.

``write_submission_stack`` also writes each slice's thresholded membrane map as ``<stem>/<k>.png``
beside the stack (0 = membrane, 255 = cell, as the training labels): the form the old Keras U-Net
users looked at. The folder appears whole or not at all (written under a temporary name, renamed).
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import tifffile

from nerveseg.errors import NervesegError
from nerveseg.io_utils import atomic_create_bytes, current_umask
from nerveseg.tasks.isbi2012.data import CELL_VALUE, MEMBRANE_VALUE

ISBI_SHAPE = (512, 512)
PAGE_OVERHEAD_BYTES = 1024  # one page's tags, generously


def expected_stack_bytes(n_slices: int, shape: tuple[int, int] = ISBI_SHAPE) -> int:
    """The size of an uncompressed float32 stack of ``n_slices`` pages (for the free-space check)."""
    return n_slices * (shape[0] * shape[1] * 4 + PAGE_OVERHEAD_BYTES)


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


def membrane_png(prob: np.ndarray, threshold: float) -> np.ndarray:
    """(h, w) uint8 of one slice's thresholded map in the labels' convention: 0 membrane, 255 cell."""
    return np.where(np.asarray(prob) > threshold, MEMBRANE_VALUE, CELL_VALUE).astype(np.uint8)


def write_membrane_pngs(probs: np.ndarray, folder: Path | str, threshold: float) -> Path:
    """Write ``<folder>/<k>.png`` (k = 0..n-1), each slice thresholded at ``threshold``, to a NEW folder.

    The PNGs are written and read back in a temporary folder beside ``folder``, which is then renamed
    into place: an interrupted run leaves no half folder, and an existing ``folder`` is never touched.
    """
    folder = Path(folder)
    if folder.exists():
        raise NervesegError(f"{folder} already exists; submissions are never overwritten, pick a new name")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    try:
        for index, prob in enumerate(np.asarray(probs)):
            png = membrane_png(prob, threshold)
            ok, encoded = cv2.imencode(".png", png)
            if not ok:
                raise ValueError(f"{folder}: cv2 could not encode slice {index} as PNG")
            (staging / f"{index}.png").write_bytes(encoded.tobytes())
            if not np.array_equal(cv2.imread(str(staging / f"{index}.png"), cv2.IMREAD_UNCHANGED), png):
                raise ValueError(f"{folder}: slice {index}'s PNG does not read back equal to the thresholded map")
        os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes 0700 folders; give it the usual permissions
        try:
            os.rename(staging, folder)  # fails if a non-empty folder appeared meanwhile
        except OSError as err:
            raise NervesegError(f"{folder} already exists; submissions are never overwritten") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def write_submission_stack(
    probs: np.ndarray, path: Path | str, *, threshold: float, shape: tuple[int, int] | None = ISBI_SHAPE
) -> tuple[Path, Path]:
    """The TIFF stack at ``path`` (``write_probability_stack``) and its PNG folder; (stack path, folder).

    Both must be new: they are checked before anything is written.
    """
    path = Path(path)
    folder = path.with_suffix("")  # submissions/<name>.tif -> submissions/<name>: where its per-slice PNGs go
    for existing in (path, folder):
        if existing.exists():
            raise NervesegError(f"{existing} already exists; submissions are never overwritten, pick a new name")
    written = write_probability_stack(probs, path, shape)
    return written, write_membrane_pngs(probs, folder, threshold)
