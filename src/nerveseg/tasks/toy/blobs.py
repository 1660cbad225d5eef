"""The toy task's own data and metric: bright discs on Gaussian noise in two ``.npz`` files, scored by IoU.

``write_blobs(raw_dir)`` makes ``<raw_dir>/train.npz`` (``images`` and ``masks``, (n, size, size) uint8) and
``<raw_dir>/test.npz`` (``images``); ``read_blobs`` reads them back, checked.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from nerveseg.errors import NervesegError
from nerveseg.io_utils import atomic_save_npz

TRAIN, TEST = "train.npz", "test.npz"  # in --raw-dir


def make_blobs(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(images, masks) of ``n`` square noisy images with 0-3 brighter discs each (a quarter of them empty)."""
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, size, size), bool)
    for mask in masks:
        for _ in range(rng.integers(0, 4)):
            (cy, cx), radius = rng.uniform(0, size, 2), rng.uniform(size / 16, size / 6)
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    images = rng.normal(90.0, 25.0, masks.shape) + 60.0 * masks
    return np.clip(images, 0, 255).astype(np.uint8), masks.astype(np.uint8)


def write_blobs(raw_dir: Path, *, n_train: int = 64, n_test: int = 16, size: int = 32, seed: int = 0) -> Path:
    """A new toy data set in ``raw_dir`` (never over an existing one); returns the training file."""
    train, test = Path(raw_dir) / TRAIN, Path(raw_dir) / TEST
    if train.exists() or test.exists():
        raise NervesegError(f"{raw_dir} holds toy data already; write it to a new folder")
    rng = np.random.default_rng(seed)
    images, masks = make_blobs(n_train, size, rng)
    atomic_save_npz(train, images=images, masks=masks)
    atomic_save_npz(test, images=make_blobs(n_test, size, rng)[0])
    return train


def read_blobs(path: Path, *keys: str) -> list[np.ndarray]:
    """The arrays ``keys`` of a toy ``.npz``: (n, h, w) uint8, all of one shape; a one-line error otherwise."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = [npz[key] for key in keys]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise NervesegError(
            f"{path} is no toy data file with {', '.join(keys)} ({err}); write it with write_blobs"
        ) from None
    if any(a.dtype != np.uint8 or a.ndim != 3 or a.shape != arrays[0].shape for a in arrays):
        raise NervesegError(f"{path}: {', '.join(keys)} must be (n, h, w) uint8 arrays of one shape")
    return arrays


def iou_per_image(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """(n,) intersection over union of each image's two masks; 1.0 where both are empty."""
    truth, predicted = truth.reshape(len(truth), -1) != 0, predicted.reshape(len(predicted), -1) != 0
    union = np.count_nonzero(truth | predicted, axis=1)
    return np.where(union == 0, 1.0, np.count_nonzero(truth & predicted, axis=1) / np.maximum(union, 1))
