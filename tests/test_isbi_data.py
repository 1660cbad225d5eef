"""ISBI 2012 reading: both layouts, one-line errors naming the file, contiguous block folds."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from nerveseg.data.raw import DataError
from nerveseg.tasks.isbi2012.data import block_folds, load_isbi

ISBI_SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "isbi2012"


def _stack(n: int = 4, seed: int = 0, size: tuple[int, int] = (16, 12)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, *size), dtype=np.uint8)
    labels = np.where(rng.random((n, *size)) < 0.25, 0, 255).astype(np.uint8)
    test = rng.integers(0, 256, (n + 1, *size), dtype=np.uint8)
    return images, labels, test


def _write_png(root: Path, images: np.ndarray, labels: np.ndarray, test: np.ndarray) -> Path:
    for folder, stack in (("train/image", images), ("train/label", labels), ("test", test)):
        (root / folder).mkdir(parents=True)
        for k, image in enumerate(stack):
            cv2.imwrite(str(root / folder / f"{k}.png"), image)
    return root


def _write_tiff(root: Path, images: np.ndarray, labels: np.ndarray, test: np.ndarray) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, stack in (("train-volume.tif", images), ("train-labels.tif", labels), ("test-volume.tif", test)):
        tifffile.imwrite(root / name, stack)
    return root


def test_both_layouts_give_the_same_data(tmp_path: Path) -> None:
    images, labels, test = _stack(n=12)  # >10 slices: "10.png" must sort after "9.png"
    from_png = load_isbi(_write_png(tmp_path / "png", images, labels, test))
    from_tiff = load_isbi(_write_tiff(tmp_path / "tiff", images, labels, test))
    assert (from_png.source, from_tiff.source) == ("png", "tiff")
    for data in (from_png, from_tiff):
        np.testing.assert_array_equal(data.images, images)
        np.testing.assert_array_equal(data.membranes, (labels == 0).astype(np.uint8))
        np.testing.assert_array_equal(data.test_images, test)
    assert from_png.fingerprint == from_tiff.fingerprint
    assert load_isbi(_write_png(tmp_path / "other", *_stack(n=12, seed=1))).fingerprint != from_png.fingerprint


def _one_line(error: pytest.ExceptionInfo, *needles: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


@pytest.mark.parametrize(
    ("damage", "needles"),
    [
        (lambda r: (r / "train/label/3.png").unlink(), ("train", "4 training images but 3 labels")),
        (lambda r: cv2.imwrite(str(r / "train/label/2.png"), np.full((16, 12), 7, np.uint8)), ("2.png", "0/255")),
        (lambda r: (r / "train/image/1.png").write_bytes(b"not a png"), ("1.png", "cannot be read")),
        (lambda r: cv2.imwrite(str(r / "test/0.png"), np.zeros((16, 12, 3), np.uint8)), ("0.png", "3 channels")),
        (lambda r: cv2.imwrite(str(r / "train/image/2.png"), np.zeros((8, 12), np.uint8)), ("2.png", "size")),
        (lambda r: cv2.imwrite(str(r / "test/0.png"), np.zeros((16, 12), np.uint16)), ("0.png", "8-bit")),
        (lambda r: (r / "test/notes.txt").write_text("x"), ("notes.txt", "<k>.png")),
        (lambda r: [p.unlink() for p in (r / "test").iterdir()], ("test", "empty")),
    ],
)
def test_bad_png_input_is_one_line_naming_the_file(tmp_path: Path, damage: object, needles: tuple[str, ...]) -> None:
    root = _write_png(tmp_path / "isbi", *_stack())
    damage(root)
    with pytest.raises(DataError) as error:
        load_isbi(root)
    _one_line(error, *needles)


def test_bad_tiff_input_is_one_line_naming_the_file(tmp_path: Path) -> None:
    images, labels, test = _stack()
    root = _write_tiff(tmp_path / "a", images, labels[:3], test)
    with pytest.raises(DataError) as error:
        load_isbi(root)
    _one_line(error, "4 training images but 3 labels")
    labels[2, 0, 0] = 128
    root = _write_tiff(tmp_path / "b", images, labels, test)
    with pytest.raises(DataError) as error:
        load_isbi(root)
    _one_line(error, "train-labels.tif page 2", "[128]")
    (root / "test-volume.tif").write_bytes(b"garbage")
    with pytest.raises(DataError) as error:
        load_isbi(root)
    _one_line(error, "test-volume.tif", "cannot be read")
    (root / "test-volume.tif").unlink()
    with pytest.raises(DataError) as error:
        load_isbi(root)
    _one_line(error, "test-volume.tif", "not found")


def test_missing_or_mixed_layouts(tmp_path: Path) -> None:
    with pytest.raises(DataError) as error:
        load_isbi(tmp_path)
    _one_line(error, str(tmp_path), "no ISBI 2012 data")
    root = _write_png(tmp_path / "both", *_stack())
    tifffile.imwrite(root / "train-volume.tif", _stack()[0])
    with pytest.raises(DataError) as error:
        load_isbi(root)
    _one_line(error, "both")


@pytest.mark.parametrize(("n_slices", "n_folds"), [(25, 5), (30, 4), (7, 7), (10, 3)])
def test_block_folds_are_contiguous_and_cover_every_slice_once(n_slices: int, n_folds: int) -> None:
    folds = block_folds(n_slices, n_folds)
    assert folds.shape == (n_slices,)
    assert np.all(np.diff(folds) >= 0), "folds must be contiguous blocks in slice order"
    sizes = np.bincount(folds, minlength=n_folds)
    assert len(sizes) == n_folds and sizes.min() >= 1 and sizes.max() - sizes.min() <= 1


@pytest.mark.parametrize(
    ("n_slices", "n_folds", "message"), [(4, 5, "n_folds <= 4"), (10, 1, ">= 2"), (10, 2.5, "integers")]
)
def test_block_folds_rejects_impossible_splits(n_slices: int, n_folds: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        block_folds(n_slices, n_folds)


def test_real_sample_reads() -> None:
    if not (ISBI_SAMPLE / "train").is_dir():
        pytest.skip(f"ISBI 2012 sample not found at {ISBI_SAMPLE} (it lives beside the repo, never inside it)")
    data = load_isbi(ISBI_SAMPLE)
    assert data.source == "png"
    assert data.images.shape == (25, 512, 512) and data.test_images.shape == (30, 512, 512)
    assert abs(data.images.mean() - 125.3) < 0.5 and abs(data.membranes.mean() - 0.224) < 0.005
