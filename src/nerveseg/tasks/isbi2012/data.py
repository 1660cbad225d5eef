"""Reading the ISBI 2012 EM membrane data, validated, in either of its two layouts.

Under one root folder (default ``data/raw/isbi2012``) the data comes either as the challenge's
multi-page TIFF stacks (``train-volume.tif``, ``train-labels.tif``, ``test-volume.tif``) or as
folders of PNG slices (``train/image/<k>.png``, ``train/label/<k>.png``, ``test/<k>.png``, k
numeric). Labels are 255 = cell interior, 0 = membrane; the model predicts membrane, so the
labels are returned as membrane targets (``label == 0``) in 0/1.

Any problem stops with a one-line ``DataError`` naming the file and the fix, as for the nerve
data: a silently mis-decoded slice would change every score computed later. Folds are contiguous
blocks of slices (``block_folds``) because adjacent 50 nm sections are near-duplicates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile

from nerveseg.data.cache import fingerprint
from nerveseg.data.raw import DataError
from nerveseg.paths import RAW_DIR

ISBI_DIR = RAW_DIR / "isbi2012"
TIFF_NAMES = ("train-volume.tif", "train-labels.tif", "test-volume.tif")
SLICE_RE = re.compile(r"(0|[1-9]\d*)\.png")
MEMBRANE_VALUE, CELL_VALUE = 0, 255


@dataclass(frozen=True)
class IsbiData:
    """Slices as ``(n, h, w)`` uint8; ``membranes`` is 1 where the label marks membrane."""

    images: np.ndarray
    membranes: np.ndarray
    test_images: np.ndarray
    source: str  # "tiff" or "png"
    fingerprint: str  # SHA-256 of the decoded pixels (layout-independent)

    @property
    def ids(self) -> np.ndarray:
        """Slice ids "0", "1", ... (str, as the nerve task's image ids), for fold files and OOF artifacts."""
        return np.array([str(k) for k in range(len(self.images))])

    def __len__(self) -> int:
        return len(self.images)


def load_isbi(root: Path | str = ISBI_DIR) -> IsbiData:
    """Read and validate the data under ``root`` in whichever layout it holds."""
    root = Path(root)
    has_tiff = any((root / name).exists() for name in TIFF_NAMES)
    has_png = (root / "train").exists() or (root / "test").exists()
    if has_tiff and has_png:
        raise DataError(f"{root}: holds both the TIFF stacks and train/ test/ PNG folders; keep one layout")
    if has_tiff:
        images, labels, test = (_read_stack(root / name) for name in TIFF_NAMES)
        label_names = [f"{root / TIFF_NAMES[1]} page {k}" for k in range(len(labels))]
        source = "tiff"
    elif has_png:
        images, _ = _read_png_folder(root / "train" / "image")
        labels, label_paths = _read_png_folder(root / "train" / "label")
        test, _ = _read_png_folder(root / "test")
        label_names = [str(p) for p in label_paths]
        source = "png"
    else:
        raise DataError(
            f"{root}: no ISBI 2012 data found; put {', '.join(TIFF_NAMES)} there, or train/image, train/label "
            "and test/ PNG folders (or run src/make_synthetic_em.py)"
        )
    _check_pairs(root, images, labels, test)
    membranes = _membrane_targets(labels, label_names)
    return IsbiData(images, membranes, test, source, fingerprint(images, membranes, test))


def _read_stack(path: Path) -> np.ndarray:
    """One multi-page 8-bit grayscale TIFF as ``(n, h, w)``."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; the TIFF layout needs all of {', '.join(TIFF_NAMES)}")
    try:
        stack = tifffile.imread(path)
    except Exception as error:  # tifffile raises many types for a damaged file; the user needs the path
        raise DataError(f"{path}: cannot be read as a TIFF stack ({type(error).__name__}); replace the file") from None
    if stack.ndim == 2:
        stack = stack[None]
    if stack.ndim != 3 or stack.dtype != np.uint8:
        raise DataError(
            f"{path}: expected a stack of 8-bit grayscale pages, got shape {stack.shape} dtype {stack.dtype}; "
            "save it as single-channel uint8 pages"
        )
    return stack


def _slice_paths(folder: Path) -> list[Path]:
    """``<k>.png`` files of ``folder`` sorted by k numerically (hidden files skipped)."""
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found; the PNG layout needs train/image, train/label and test")
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if not entries:
        raise DataError(f"{folder}: folder is empty; put the <k>.png slices there")
    for path in entries:
        if not SLICE_RE.fullmatch(path.name):
            raise DataError(f"{path}: name does not follow the pattern <k>.png (k = 0, 1, ...); rename or remove it")
    return sorted(entries, key=lambda p: int(p.stem))


def _read_png(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DataError(f"{path}: cannot be read as an image; replace the file")
    if image.ndim != 2:
        raise DataError(f"{path}: has {image.shape[2]} channels, expected 1; save it as 8-bit grayscale")
    if image.dtype != np.uint8:
        raise DataError(f"{path}: has dtype {image.dtype}, expected 8-bit; save it as 8-bit grayscale")
    return image


def _read_png_folder(folder: Path) -> tuple[np.ndarray, list[Path]]:
    paths = _slice_paths(folder)
    slices = [_read_png(path) for path in paths]
    for path, image in zip(paths, slices, strict=True):
        if image.shape != slices[0].shape:
            raise DataError(
                f"{path}: size {image.shape} differs from {paths[0].name}'s {slices[0].shape}; all slices must match"
            )
    return np.stack(slices), paths


def _check_pairs(root: Path, images: np.ndarray, labels: np.ndarray, test: np.ndarray) -> None:
    if len(images) != len(labels):
        raise DataError(f"{root}: {len(images)} training images but {len(labels)} labels; every image needs its label")
    if images.shape[1:] != labels.shape[1:]:
        raise DataError(
            f"{root}: training images are {images.shape[1:]} but labels {labels.shape[1:]}; they must match"
        )
    if test.shape[1:] != images.shape[1:]:
        raise DataError(
            f"{root}: test slices are {test.shape[1:]} but training slices {images.shape[1:]}; they must match"
        )


def _membrane_targets(labels: np.ndarray, label_names: list[str]) -> np.ndarray:
    bad = (labels != MEMBRANE_VALUE) & (labels != CELL_VALUE)
    if bad.any():
        index = int(np.flatnonzero(bad.any(axis=(1, 2)))[0])
        values = np.unique(labels[index][bad[index]])[:5].tolist()
        raise DataError(
            f"{label_names[index]}: label values {values} are neither 0 (membrane) nor 255 (cell); "
            "threshold the label to 0/255"
        )
    return (labels == MEMBRANE_VALUE).astype(np.uint8)


def block_folds(n_slices: int, n_folds: int) -> np.ndarray:
    """Fold index per slice: ``n_folds`` contiguous blocks of near-equal size, in slice order.

    Adjacent sections are near-duplicates, so a random split would leak a slice's neighbour into
    its validation fold; blocks keep all but the block edges apart.
    """
    if int(n_slices) != n_slices or int(n_folds) != n_folds:
        raise ValueError(f"block_folds needs integers, got n_slices={n_slices!r}, n_folds={n_folds!r}")
    if n_folds < 2:
        raise DataError(f"block_folds needs n_folds >= 2 for cross-validation, got {n_folds}")
    if n_folds > n_slices:
        raise DataError(f"block_folds cannot make {n_folds} folds of {n_slices} slices; use n_folds <= {n_slices}")
    return np.repeat(np.arange(n_folds), [len(b) for b in np.array_split(np.arange(n_slices), n_folds)])
