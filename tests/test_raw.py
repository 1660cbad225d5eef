"""Indexing and validated decoding of Kaggle's raw layout, with every kind of broken file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from helpers import SHAPE, nerve_mask, snapshot, structured_image, write_set, write_tif
from nerveseg.data.cache import prepare_train
from nerveseg.data.raw import DataError, index_test, index_train, read_image, read_mask


def test_index_train_sorts_numerically_and_pairs_files(tmp_path: Path) -> None:
    write_set(tmp_path, subjects=(10, 2), images=(10, 1, 2))
    index = index_train(tmp_path)
    assert list(index.columns) == ["id", "subject", "image", "image_path", "mask_path"]
    assert list(index["id"]) == ["2_1", "2_2", "2_10", "10_1", "10_2", "10_10"]
    assert index["subject"].tolist() == [2, 2, 2, 10, 10, 10]
    assert index["image"].tolist() == [1, 2, 10, 1, 2, 10]
    assert index.loc[2, "image_path"] == tmp_path / "train" / "2_10.tif"
    assert index.loc[2, "mask_path"] == tmp_path / "train" / "2_10_mask.tif"


def test_index_test_sorts_ids_numerically(tmp_path: Path) -> None:
    index = index_test(write_set(tmp_path))
    assert index["id"].tolist() == [1, 2, 10]
    assert index.loc[2, "image_path"] == tmp_path / "test" / "10.tif"


def test_hidden_files_are_ignored(tmp_path: Path) -> None:
    write_set(tmp_path)
    (tmp_path / "train" / ".DS_Store").write_bytes(b"x")
    assert len(index_train(tmp_path)) == 6


def test_read_image_and_mask(tmp_path: Path) -> None:
    write_set(tmp_path)
    image = read_image(tmp_path / "train" / "1_1.tif")
    mask = read_mask(tmp_path / "train" / "1_1_mask.tif")
    assert image.shape == SHAPE and image.dtype == np.uint8
    np.testing.assert_array_equal(image, structured_image(1001))
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    np.testing.assert_array_equal(mask, nerve_mask(False, shift=1) // 255)
    assert not read_mask(tmp_path / "train" / "1_3_mask.tif").any()


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# (what breaks the set, the file the message must name, a word it must contain)
BREAKAGES: dict[str, tuple[Callable[[Path], object], str, str]] = {
    "missing mask": (lambda t: (t / "1_2_mask.tif").unlink(), "1_2.tif", "mask"),
    "orphan mask": (lambda t: (t / "1_2.tif").unlink(), "1_2_mask.tif", "missing"),
    "bad name": (lambda t: write_tif(t / "1-4.tif", structured_image(0)), "1-4.tif", "pattern"),
    "upper-case suffix": (lambda t: (t / "1_2.tif").rename(t / "1_2.TIF"), "1_2.TIF", "pattern"),
    "leading zero": (lambda t: write_tif(t / "01_4.tif", structured_image(0)), "01_4.tif", "pattern"),
    "truncated image": (lambda t: _truncate(t / "2_1.tif"), "2_1.tif", "truncated"),
    "garbage bytes": (lambda t: (t / "2_1.tif").write_bytes(b"not a tiff"), "2_1.tif", "readable"),
    "empty file": (lambda t: (t / "2_1.tif").write_bytes(b""), "2_1.tif", "readable"),
    "three channels": (
        lambda t: write_tif(t / "2_2.tif", np.dstack([structured_image(0)] * 3)),
        "2_2.tif",
        "3 channels",
    ),
    "wrong size": (lambda t: write_tif(t / "2_2.tif", structured_image(0)[:400]), "2_2.tif", "580x420"),
    "16-bit": (lambda t: write_tif(t / "2_2.tif", structured_image(0).astype(np.uint16)), "2_2.tif", "8-bit"),
    "mask value 128": (lambda t: write_tif(t / "2_2_mask.tif", nerve_mask(False) // 255 * 128), "2_2_mask.tif", "128"),
    "mask values 0/1": (lambda t: write_tif(t / "2_2_mask.tif", nerve_mask(False) // 255), "2_2_mask.tif", "0 and 255"),
    "truncated mask": (lambda t: _truncate(t / "1_1_mask.tif"), "1_1_mask.tif", "truncated"),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_broken_data_stops_with_one_line_naming_the_file(tmp_path: Path, breakage: str) -> None:
    raw, cache = write_set(tmp_path / "raw"), tmp_path / "cache"
    damage, file_name, word = BREAKAGES[breakage]
    damage(raw / "train")
    before = snapshot(raw)
    with pytest.raises(DataError) as caught:
        prepare_train(raw, cache, height=32, width=40, workers=2, progress=False)
    message = str(caught.value)
    assert f"/{file_name}:" in message and word in message
    assert "\n" not in message
    assert isinstance(caught.value, ValueError)
    assert snapshot(raw) == before, "the raw folder must never be written"
    assert not list(cache.glob("*.npz")), "no cache may be written from broken data"


@pytest.mark.parametrize("state", ["missing", "empty"])
def test_missing_or_empty_folder(tmp_path: Path, state: str) -> None:
    if state == "empty":
        (tmp_path / "train").mkdir()
        (tmp_path / "test").mkdir()
        (tmp_path / "train" / ".gitkeep").touch()
    with pytest.raises(DataError, match=rf"{tmp_path / 'train'}: folder (is empty|not found)"):
        index_train(tmp_path)
    with pytest.raises(DataError, match=rf"{tmp_path / 'test'}: folder (is empty|not found)"):
        index_test(tmp_path)


def test_read_image_of_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nothing\.tif: cannot be read"):
        read_image(tmp_path / "nothing.tif")


def test_real_sample_passes_validation(real_sample: Path) -> None:
    index = index_train(real_sample)
    assert list(index["id"]) == [f"1_{i}" for i in range(1, 9)] + ["10_100"]
    empty = {row.id for row in index.itertuples() if not read_mask(row.mask_path).any()}
    assert empty == {"1_5", "1_6", "1_8"}
    assert read_image(index.loc[0, "image_path"]).shape == SHAPE
    assert index_test(real_sample)["id"].tolist() == [1]
