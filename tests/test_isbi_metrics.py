"""ISBI membrane metrics: zero for a perfect map, errors for splits/merges, agreement with skimage."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import label
from skimage.metrics import adapted_rand_error

from nerveseg.tasks.isbi2012.metrics import cell_regions, choose_threshold, membrane_scores


def _grid(size: int = 40, step: int = 10) -> np.ndarray:
    """Membranes on a grid: 16 square cells (1 = membrane)."""
    membrane = np.zeros((size, size), np.uint8)
    membrane[::step] = 1
    membrane[:, ::step] = 1
    return membrane


def test_perfect_prediction_scores_zero() -> None:
    truth = np.stack([_grid(), _grid(step=8)])
    scores = membrane_scores(truth.astype(np.float32), truth)
    assert scores.as_dict() == pytest.approx(
        {"pixel_error": 0, "v_rand_error": 0, "v_info_error": 0, "adapted_rand_error": 0}, abs=1e-12
    )
    assert scores.adapted_rand_errors.shape == (2,) and scores.challenge.v_rand.shape == (11, 2)


def test_split_and_merge_give_errors() -> None:
    truth = _grid()
    split = truth.copy()
    split[15, :] = 1  # a new membrane cuts four cells in two
    merged = truth.copy()
    merged[10, 1:10] = 0  # a gap in a membrane merges two cells
    split_scores = membrane_scores(split[None].astype(float), truth[None])
    merged_scores = membrane_scores(merged[None].astype(float), truth[None])
    for scores in (split_scores, merged_scores):
        assert 0.0 < scores.adapted_rand_error < 1.0 and scores.pixel_error > 0.0
        assert 0.0 < scores.v_rand_error < 1.0 and 0.0 < scores.v_info_error < 1.0
    # skimage's adapted Rand error counts the new membrane as one segment merging everything it touches:
    # it scores the split worse than the challenge's V_rand error does
    assert split_scores.adapted_rand_error > split_scores.v_rand_error


def test_agrees_with_skimage_on_random_maps() -> None:
    rng = np.random.default_rng(0)
    truth = (rng.random((3, 32, 32)) < 0.3).astype(np.uint8)
    probs = np.clip(truth + rng.normal(0, 0.4, truth.shape), 0, 1)
    scores = membrane_scores(probs, truth, threshold=0.5)
    for k in range(3):
        true_cells = label(truth[k] == 0, connectivity=1)
        pred_cells = label(probs[k] <= 0.5, connectivity=1)
        assert scores.adapted_rand_errors[k] == pytest.approx(adapted_rand_error(true_cells, pred_cells)[0])
        assert scores.pixel_errors[k] == pytest.approx(np.mean((probs[k] > 0.5) != truth[k]))


def test_cells_are_four_connected() -> None:
    membrane = np.array([[0, 1], [1, 0]])
    assert cell_regions(membrane).max() == 2  # a diagonal gap does not merge two cells


def test_choose_threshold_finds_the_best_v_rand_error() -> None:
    truth = _grid()[None]
    probs = np.where(truth == 1, 0.65, 0.2)  # membranes only survive thresholds below 0.65
    threshold, error = choose_threshold(probs, truth, thresholds=(0.7, 0.6, 0.5))
    assert threshold == 0.6 and error == 0.0
    assert choose_threshold(probs, truth, thresholds=(0.7,))[1] > 0.5


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="same shape"):
        membrane_scores(np.zeros((2, 8, 8)), np.zeros((2, 8, 9)))
    with pytest.raises(ValueError, match="threshold"):
        membrane_scores(np.zeros((8, 8)), np.zeros((8, 8)), threshold=1.5)
    with pytest.raises(ValueError, match="at least one"):
        choose_threshold(np.zeros((8, 8)), np.zeros((8, 8)), thresholds=())
