"""RLE: round trips, edge cases, and Kaggle's own rows reproduced exactly."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from nerveseg.submit.rle import rle_decode, rle_encode, validate_rle

SMALL = (5, 4)


def test_known_small_encoding_is_column_major_and_one_based() -> None:
    mask = np.zeros(SMALL, np.uint8)
    mask[4, 0] = 1  # last pixel of the first column -> pixel 5
    mask[0, 1] = 1  # first pixel of the second column -> pixel 6: one run crossing the column boundary
    mask[2, 3] = 255  # pixel 3*5 + 3 = 18
    assert rle_encode(mask) == "5 2 18 1"


@pytest.mark.parametrize(
    "name",
    ["empty", "full", "first_pixel", "last_pixel", "one_pixel", "column_crossing", "checkerboard"],
)
def test_edge_cases_round_trip(name: str) -> None:
    mask = np.zeros((420, 580), np.uint8)
    if name == "full":
        mask[:] = 1
    elif name == "first_pixel":
        mask[0, 0] = 1
    elif name == "last_pixel":
        mask[-1, -1] = 1
    elif name == "one_pixel":
        mask[200, 300] = 1
    elif name == "column_crossing":
        mask[400:, 10] = 1
        mask[:30, 11] = 1
    elif name == "checkerboard":
        mask[::2, ::2] = 1
    rle = rle_encode(mask)
    validate_rle(rle)
    np.testing.assert_array_equal(rle_decode(rle), mask)
    if name == "empty":
        assert rle == ""
    if name == "full":
        assert rle == f"1 {420 * 580}"
    if name == "last_pixel":
        assert rle == f"{420 * 580} 1"


def test_random_masks_round_trip() -> None:
    rng = np.random.default_rng(0)
    for density in (0.001, 0.1, 0.5, 0.9):
        mask = (rng.random((420, 580)) < density).astype(np.uint8)
        np.testing.assert_array_equal(rle_decode(rle_encode(mask)), mask)


def test_transposed_mask_gives_a_different_encoding() -> None:
    mask = np.zeros((6, 6), np.uint8)
    mask[1, 3:5] = 1
    assert rle_encode(mask) != rle_encode(mask.T)


@pytest.mark.parametrize(
    ("rle", "message"),
    [
        ("1 2 3", "pairs"),
        ("0 3", ">= 1"),
        ("5 0", ">= 1"),
        ("10 5 3 2", "ascending"),
        ("1 5 4 2", "overlap"),
        ("19 5", "beyond"),
        ("1 a", "integers"),
    ],
)
def test_malformed_rle_is_rejected(rle: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_rle(rle, SMALL)


def test_golden_rows_from_kaggle(real_sample) -> None:
    """Encoding the real masks reproduces Kaggle's own train_masks.csv rows byte for byte."""
    rows = pd.read_csv(real_sample / "train_masks_sample.csv", keep_default_na=False)
    assert len(rows) == 9
    for row in rows.itertuples():
        path = real_sample / "train" / f"{row.subject}_{row.img}_mask.tif"
        mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert rle_encode(mask) == row.pixels.strip(), path.name
        np.testing.assert_array_equal(rle_decode(row.pixels), mask // 255)
