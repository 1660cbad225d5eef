"""Synthetic serial-section EM slices with membrane labels, in the ISBI 2012 PNG layout.

A stand-in for the demo and the tests when the real data is absent. Each stack is a volume of
consecutive "sections": cells are a Voronoi tessellation of seed points in a smoothly warped
plane (so walls curve), and both the seeds and the warp drift slowly from slice to slice, so
neighbouring slices are strongly correlated, like 50 nm sections. Membranes are dark walls of
varying thickness; inside the cells sit distractors that are NOT membrane in the labels, as in the
real data: mitochondria-like dark textured ellipses and vesicles (small dark rings). Blur and
noise finish the slice.

Calibrated against the real sample (``../shared/isbi2012/README.md``: image mean 125.3, std 43.7,
membrane share 0.224) at the default 512x512 size; ``tests/test_isbi_synthetic.py`` checks it.
Labels: 255 = cell, 0 = membrane, like the challenge.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.segmentation import find_boundaries

from nerveseg.data.synthetic_anatomy import smooth_noise
from nerveseg.data.synthetic_frames import ar1
from nerveseg.errors import NervesegError
from nerveseg.io_utils import atomic_write_bytes
from nerveseg.logs import progress_bar

CELL_AREA = 2200.0  # mean cell area in pixels (at 512x512: ~120 cells; the real sample has ~114)
WARP_PX = 8.0  # sd of the plane warp that curves the Voronoi walls
SEED_DRIFT_PX = 1.5  # sd of each seed's slice-to-slice step
THICKNESS_PX = (2.3, 0.9)  # membrane half-width: mean, sd of its smooth variation
MEMBRANE_LEVEL, CELL_LEVEL = 52.0, 148.5  # gray levels before blur and noise
MITO_LEVEL, VESICLE_LEVEL = 95.0, 80.0
NOISE_SD, BLUR_SIGMA = (40.0, 16.0), 1.0  # noise sd before and after the blur
SLICE_SD = 8.0  # slice-to-slice brightness variation (real sample: sd of slice means 10.3)


def _seed_tracks(rng: np.random.Generator, n_slices: int, size: int) -> np.ndarray:
    """``(n_slices, n_seeds, 2)`` seed positions: uniform at first, then a slow random walk (reflected)."""
    n_seeds = max(2, round(size * size / CELL_AREA))
    start = rng.uniform(0, size, (n_seeds, 2))
    steps = rng.normal(0, SEED_DRIFT_PX, (n_slices, n_seeds, 2))
    steps[0] = 0
    tracks = start + np.cumsum(steps, axis=0)
    return np.abs(np.mod(tracks + size, 2 * size) - size)  # reflect at the borders: seeds stay inside


def _cells(seeds: np.ndarray, warp: np.ndarray, size: int) -> np.ndarray:
    """Voronoi labels (1..n_seeds) of the warped pixel grid."""
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    points = np.stack([rows + warp[0], cols + warp[1]], axis=-1).reshape(-1, 2)
    _, nearest = cKDTree(seeds).query(points, workers=1)
    return (nearest + 1).reshape(size, size).astype(np.int32)


def _membrane(cells: np.ndarray, thickness: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Membrane mask (walls widened to a varying half-width) and each pixel's distance to a wall."""
    walls = find_boundaries(cells, mode="inner")
    distance = ndimage.distance_transform_edt(~walls)
    return distance < thickness, distance


def _paint_organelles(rng: np.random.Generator, image: np.ndarray, distance: np.ndarray, membrane: np.ndarray) -> None:
    """Mitochondria (dark textured ellipses) and vesicles (dark rings) well inside cells, in place."""
    size = image.shape[0]
    inside = np.argwhere(distance > 12)
    if len(inside) == 0:
        return
    scale = size * size / 512**2
    for _ in range(rng.poisson(14 * scale)):  # mitochondria: a dark double-membrane outline, striped inside
        row, col = inside[rng.integers(len(inside))]
        room = int(distance[row, col]) - 3
        axes = (min(int(rng.uniform(9, 20)), room), min(int(rng.uniform(6, 11)), room))
        if min(axes) < 4:
            continue
        stamp = np.zeros_like(image)
        angle = rng.uniform(0, 180)
        cv2.ellipse(stamp, (int(col), int(row)), axes, angle, 0, 360, 1.0, -1)
        cristae = 1 + 0.2 * np.sin(np.arange(size, dtype=np.float32) * rng.uniform(0.6, 1.2))[None, :]
        image[stamp > 0] = np.broadcast_to(MITO_LEVEL * cristae, image.shape)[stamp > 0]
        cv2.ellipse(image, (int(col), int(row)), axes, angle, 0, 360, MEMBRANE_LEVEL + 10, 2)
    for _ in range(rng.poisson(120 * scale)):  # vesicles
        row, col = inside[rng.integers(len(inside))]
        radius = int(rng.integers(2, 5))
        cv2.circle(image, (int(col), int(row)), radius, VESICLE_LEVEL, 1)
    image[membrane] = MEMBRANE_LEVEL  # organelles never paint over a membrane


def render_slice(
    rng: np.random.Generator, seeds: np.ndarray, warp: np.ndarray, thickness: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """One section: ``(image uint8, label uint8 with 255 = cell, 0 = membrane)``."""
    cells = _cells(seeds, warp, size)
    membrane, distance = _membrane(cells, thickness)
    shade = rng.normal(0, 15, cells.max() + 1).astype(np.float32)  # cytoplasm density varies per cell
    image = CELL_LEVEL + shade[cells] + 10 * smooth_noise(rng, (size, size), 3, 3)
    image[membrane] = MEMBRANE_LEVEL
    _paint_organelles(rng, image, distance, membrane)
    image += rng.normal(0, NOISE_SD[0], image.shape).astype(np.float32)  # grain: blurred below
    image = cv2.GaussianBlur(image, (0, 0), BLUR_SIGMA)
    image += rng.normal(0, NOISE_SD[1], image.shape).astype(np.float32) + rng.normal(0, SLICE_SD)
    label = np.where(membrane, 0, 255).astype(np.uint8)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), label


def render_stack(seed: np.random.SeedSequence, n_slices: int, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(image, label)`` for ``n_slices`` consecutive, correlated sections."""
    rng = np.random.default_rng(seed)
    tracks = _seed_tracks(rng, n_slices, size)
    weights = ar1(rng, n_slices, rho=0.95, sd=1.0, size=(3,))  # mix of 3 fixed fields: a slowly drifting warp
    warp_basis = [np.stack([smooth_noise(rng, (size, size), 20, 20) for _ in range(2)]) for _ in range(4)]
    thick_basis = [smooth_noise(rng, (size, size), 16, 16) for _ in range(3)]
    for k in range(n_slices):
        mix = weights[k] / math.sqrt(3)
        warp = WARP_PX * (warp_basis[0] + sum(w * b for w, b in zip(mix, warp_basis[1:], strict=True)))
        thickness = THICKNESS_PX[0] + THICKNESS_PX[1] * sum(w * b for w, b in zip(mix, thick_basis, strict=True))
        yield render_slice(rng, tracks[k], warp, np.clip(thickness, 1.0, None), size)


def _write_png(path: Path, image: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError(f"cv2 could not encode {path}")
    atomic_write_bytes(path, encoded.tobytes())


def _check_arguments(out_dir: Path, n_train: int, n_test: int, size: int, seed: int) -> None:
    for name, value, minimum in (("n_train", n_train, 1), ("n_test", n_test, 0), ("size", size, 32), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
            raise NervesegError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise NervesegError(
            f"{out_dir} is not empty; generate_em never overwrites or mixes data: delete it or pick another"
        )


def generate_em(
    out_dir: Path | str, n_train: int = 30, n_test: int = 30, size: int = 512, seed: int = 0, progress: bool = True
) -> None:
    """Write ``out_dir/train/image/<k>.png``, ``train/label/<k>.png`` and ``test/<k>.png``.

    Training and test slices are two separate stacks (as in the challenge), each internally
    correlated. Same arguments -> identical files. Written into a hidden partial folder that is
    renamed into place at the end, so an interrupted run leaves no half data set behind.
    """
    out_dir = Path(out_dir)
    _check_arguments(out_dir, n_train, n_test, size, seed)
    partial = out_dir.parent / f".{out_dir.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    train_seed, test_seed = np.random.SeedSequence(seed).spawn(2)
    bar = progress_bar(total=n_train + n_test, desc="synthetic EM", unit="slice", disable=not progress)
    for folder in ("train/image", "train/label", "test"):
        (partial / folder).mkdir(parents=True)
    for k, (image, label) in enumerate(render_stack(train_seed, n_train, size)):
        _write_png(partial / "train" / "image" / f"{k}.png", image)
        _write_png(partial / "train" / "label" / f"{k}.png", label)
        bar.update()
    for k, (image, _) in enumerate(render_stack(test_seed, n_test, size)):
        _write_png(partial / "test" / f"{k}.png", image)
        bar.update()
    bar.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    for folder in ("train", "test"):
        (partial / folder).rename(out_dir / folder)
    partial.rmdir()
