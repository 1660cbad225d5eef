"""Elastic deformation, the U-Net paper's augmentation for the ISBI EM slices.

"Random displacement vectors on a coarse 3 by 3 grid, sampled from a Gaussian with 10 pixels standard
deviation; per-pixel displacements by bicubic interpolation" (Ronneberger et al. 2015, sec. 3.1). One
field moves every channel of a crop: the image is resampled with cubic splines, the 0/1 label with the
NEAREST neighbour (so it stays exactly binary and on the same pixels as the image), and the weight
map with the nearest neighbour too (each pixel keeps the weight of the label pixel it came from, so a
cell pixel never gets a membrane's border weight).

It runs as a numpy/scipy step inside the tf.data stream (``tf.numpy_function``, seeded from the
stream's own random draws, so the crops are reproducible). scipy's ``map_coordinates`` is the
well-kept resampler with true cubic interpolation; Keras' ``ops.image.map_coordinates`` stops at
linear. Cost: see ``benchmarks/isbi_steps.py --elastic-speed`` (measured numbers in docs/isbi.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from scipy import ndimage

GRID = 3  # the coarse grid of random displacement vectors (the paper's 3x3)
IMAGE_ORDER, LABEL_ORDER, WEIGHT_ORDER = 3, 0, 0  # spline orders: cubic image, nearest label and weights


def random_displacement(shape: tuple[int, int], sigma: float, rng: np.random.Generator, grid: int = GRID) -> np.ndarray:
    """(2, h, w) float32 per-pixel displacements (rows, cols): a ``grid`` x ``grid`` field of N(0, sigma)
    vectors, bicubically interpolated to the crop (the grid's corners sit on the crop's corners)."""
    coarse = rng.normal(0.0, sigma, size=(2, grid, grid)).astype(np.float32)
    height, width = shape
    # align the corners: cv2's resize maps pixel centres, so interpolate on a (grid-1)-cell lattice by hand
    rows = np.linspace(0.0, grid - 1.0, height, dtype=np.float32)
    cols = np.linspace(0.0, grid - 1.0, width, dtype=np.float32)
    map_cols, map_rows = np.meshgrid(cols, rows)
    return np.stack(
        [cv2.remap(c, map_cols, map_rows, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE) for c in coarse]
    )


def deform(channels: np.ndarray, displacement: np.ndarray, orders: Sequence[int]) -> np.ndarray:
    """(h, w, c) float32: each channel sampled at ``x + displacement`` with its spline order (reflecting
    at the edges). A zero displacement returns the input (up to float rounding for cubic channels)."""
    channels = np.asarray(channels, dtype=np.float32)
    if channels.ndim != 3 or channels.shape[-1] != len(orders):
        raise ValueError(f"deform takes (h, w, c) channels with one spline order each, got {channels.shape}, {orders}")
    if displacement.shape != (2, *channels.shape[:2]):
        raise ValueError(f"displacement must be (2, h, w) = (2, {channels.shape[:2]}), got {displacement.shape}")
    grid = np.indices(channels.shape[:2], dtype=np.float32)
    coords = grid + displacement
    out = [
        ndimage.map_coordinates(channels[..., k], coords, order=order, mode="reflect").astype(np.float32)
        for k, order in enumerate(orders)
    ]
    return np.stack(out, axis=-1)


def elastic_crop(channels: np.ndarray, sigma: float, seed: int, orders: Sequence[int]) -> np.ndarray:
    """One random elastic deformation of (h, w, c) ``channels`` with displacement std ``sigma`` px,
    drawn from ``seed``; ``sigma == 0`` returns them unchanged."""
    if sigma == 0:
        return np.asarray(channels, dtype=np.float32)
    displacement = random_displacement(channels.shape[:2], sigma, np.random.default_rng(seed))
    return deform(channels, displacement, orders)
