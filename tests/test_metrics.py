"""The competition metric: per-image Dice, empty-empty = 1, full-resolution resizing."""

from __future__ import annotations

import numpy as np
import pytest

from nerveseg.evaluate.metrics import competition_score, dice_per_image, to_full_resolution


def test_dice_values() -> None:
    truth = np.zeros((4, 10, 10), np.uint8)
    pred = np.zeros_like(truth)
    truth[1, :5] = 1  # 50 px, predicted empty -> 0
    truth[2, :5] = 1
    pred[2, :5] = 1  # perfect -> 1
    truth[3, :4] = 1  # 40 px
    pred[3, 2:6] = 1  # 40 px, overlap 20 -> 0.5
    # image 0: both empty -> 1
    np.testing.assert_allclose(dice_per_image(truth, pred), [1.0, 0.0, 1.0, 0.5])
    assert competition_score(truth, pred) == pytest.approx(0.625)


def test_false_positive_on_empty_truth_scores_zero() -> None:
    truth = np.zeros((1, 8, 8), bool)
    pred = np.zeros_like(truth)
    pred[0, 0, 0] = True
    assert dice_per_image(truth, pred)[0] == 0.0


def test_mean_is_over_images_not_pixels() -> None:
    truth = np.zeros((2, 10, 10), np.uint8)
    pred = np.zeros_like(truth)
    truth[0] = 1
    pred[0] = 1  # big perfect image
    truth[1, 0, 0] = 1  # tiny missed image
    assert competition_score(truth, pred) == pytest.approx(0.5)


def test_shape_mismatch_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="one shape"):
        dice_per_image(np.zeros((1, 4, 4)), np.zeros((1, 4, 5)))


def test_to_full_resolution_keeps_values_and_orientation() -> None:
    probs = np.zeros((2, 64, 80), np.float32)
    probs[0, :32, :40] = 1.0  # top-left quadrant
    probs[1] = 0.25
    full = to_full_resolution(probs)
    assert full.shape == (2, 420, 580)
    assert full.dtype == np.float32
    assert full[0, 10, 10] == pytest.approx(1.0)
    assert full[0, 400, 570] == pytest.approx(0.0)
    np.testing.assert_allclose(full[1], 0.25)
    assert (full[0] > 0.5).mean() == pytest.approx(0.25, abs=0.01)


def test_resize_probabilities_keeps_arrays_at_the_size_and_resizes_others() -> None:
    from nerveseg.evaluate.metrics import resize_probabilities

    probs = np.random.default_rng(0).random((2, 16, 20)).astype(np.float32)
    assert resize_probabilities(probs, (16, 20)) is probs
    resized = resize_probabilities(probs, (32, 40))
    assert resized.shape == (2, 32, 40) and resized.dtype == np.float32
