"""The ISBI 2012 challenge's V_rand / V_info after border thinning, on hand-computed cases and real slices."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage.metrics import adapted_rand_error, contingency_table

from nerveseg.tasks.isbi2012.challenge_metrics import (
    SWEEP_THRESHOLDS,
    cell_regions,
    challenge_scores,
    slice_scores,
    thinned_segments,
)
from nerveseg.tasks.isbi2012.metrics import membrane_scores

ISBI_SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "isbi2012"


def _columns() -> np.ndarray:
    """6 x 11, membranes (1) in columns 3 and 7: three cells of 18 pixels each."""
    membrane = np.zeros((6, 11), np.uint8)
    membrane[:, [3, 7]] = 1
    return membrane


def _entropy(*shares: float) -> float:
    return -sum(share * np.log(share) for share in shares)


def test_sweep_is_the_challenges() -> None:
    assert SWEEP_THRESHOLDS == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def test_identical_segmentations_score_zero() -> None:
    crossed = _columns()
    crossed[3] = 1  # a second layout: six cells
    truth = np.stack([_columns(), crossed])
    scores = challenge_scores(truth.astype(np.float32), truth)
    assert scores.v_rand_error == pytest.approx(0, abs=1e-12) and scores.v_info_error == pytest.approx(0, abs=1e-12)
    assert scores.v_rand.shape == scores.v_info.shape == (11, 2)


def test_a_one_pixel_gap_merging_two_cells_costs_what_the_hand_count_says() -> None:
    truth = _columns()
    merged = truth.copy()
    merged[2, 3] = 0  # one pixel of the first membrane missing: cells 1 and 2 become one segment
    v_rand, v_info = slice_scores(cell_regions(truth), thinned_segments(merged))
    # n = 54 truth cell pixels; truth segments 18, 18, 18; proposal 36, 18 (the gap pixel is truth membrane: dropped)
    assert v_rand == pytest.approx(2 * 3 * 18**2 / (3 * 18**2 + 36**2 + 18**2))  # 0.75
    h_truth, h_proposal = np.log(3), _entropy(2 / 3, 1 / 3)  # a pure merge: I = H(proposal)
    assert v_info == pytest.approx(2 * h_proposal / (h_truth + h_proposal))
    before = challenge_scores(truth.astype(float), truth).v_rand_error
    after = challenge_scores(merged.astype(float), truth).v_rand_error
    assert after - before == pytest.approx(0.25)


def test_predicted_border_pixels_are_singletons_not_one_segment() -> None:
    truth = np.zeros((5, 7), np.uint8)
    truth[:, 3] = 1  # cells A (columns 0-2) and B (4-6), 15 pixels each
    proposal = truth.copy()
    proposal[2, :3] = 1  # a one-pixel line across A: A splits into 6 + 6 pixels and 3 line pixels
    segments = thinned_segments(proposal)
    assert (segments[2, :3] == 0).all()  # the line survives thinning (it separates two cells)
    v_rand, v_info = slice_scores(cell_regions(truth), segments)
    # n = 30; the 3 line pixels are 3 segments of 1 pixel: sum p_ij^2 = (36 + 36 + 3 + 225) / 30^2
    assert v_rand == pytest.approx(2 * 300 / (450 + 300))  # 0.8; as one segment it would be 612 / 756
    h_truth = np.log(2)
    h_proposal = _entropy(0.2, 0.2, 0.5) + 3 * _entropy(1 / 30)  # every proposal segment lies in one truth cell
    assert v_info == pytest.approx(2 * h_truth / (h_truth + h_proposal))


def test_border_thinning_makes_a_thick_border_free() -> None:
    truth = _columns()
    thick = truth.copy()
    thick[:, [2, 4, 6, 8]] = 1  # every membrane three pixels wide
    assert challenge_scores(thick.astype(float), truth).v_rand_error == pytest.approx(0, abs=1e-12)
    assert membrane_scores(thick.astype(float), truth).adapted_rand_error > 0.1  # skimage's: one merging segment


def test_all_border_is_one_segment() -> None:
    truth = _columns()
    assert (thinned_segments(np.ones_like(truth)) == 1).all()
    v_rand, v_info = slice_scores(cell_regions(truth), thinned_segments(np.ones_like(truth)))
    assert v_rand == pytest.approx(2 * (1 / 3) / (1 / 3 + 1)) and v_info == 0.0  # zero proposal entropy


def test_the_sweep_picks_the_best_threshold_common_to_all_slices() -> None:
    truth = _columns()
    gap = np.where(truth == 1, 0.9, 0.05)
    gap[2, 3] = 0.45  # a faint membrane pixel: right below 0.45, a merge from 0.5 on
    scores = challenge_scores(gap, truth)
    expected = [0.5, 1, 1, 1, 1, 0.75, 0.75, 0.75, 0.75, 0.5, 0.5]  # 0.0: all membrane; 0.9, 1.0: none
    assert scores.v_rand[:, 0] == pytest.approx(expected)
    assert scores.v_rand_threshold == 0.1 and scores.v_rand_error == pytest.approx(0, abs=1e-12)
    assert challenge_scores(gap, truth, thresholds=(0.5,)).v_rand_error == pytest.approx(0.25)
    dim = np.where(truth == 1, 0.9, 0.6)  # cells 0.6: right only from 0.6 on
    both = challenge_scores(np.stack([gap, dim]), np.stack([truth, truth]))
    assert both.v_rand_threshold == 0.6  # mean (0.75 + 1) / 2 beats 0.1's (1 + 0.5) / 2
    assert both.v_rand_error == pytest.approx(0.125)
    assert both.v_rand_errors() == pytest.approx([0.25, 0.0])


def test_v_rand_is_the_n2_formula_over_skimages_contingency_with_border_pixels_as_singletons() -> None:
    rng = np.random.default_rng(3)
    for _ in range(3):
        truth = (rng.random((24, 24)) < 0.35).astype(np.uint8)
        proposal = (rng.random((24, 24)) < 0.35).astype(np.uint8)
        true_cells, segments = cell_regions(truth), thinned_segments(proposal)
        singled = segments.copy()
        lines = singled == 0
        singled[lines] = segments.max() + 1 + np.arange(lines.sum())  # each line pixel its own label
        table = contingency_table(true_cells, singled, ignore_labels=(0,)).toarray()
        expected = 2 * np.sum(table**2) / (np.sum(table.sum(1) ** 2) + np.sum(table.sum(0) ** 2))
        assert slice_scores(true_cells, segments)[0] == pytest.approx(expected)
        # skimage's adapted Rand counts pairs (n^2 - n), the script squares (n^2): close, not equal
        assert 1 - adapted_rand_error(true_cells, singled, ignore_labels=(0,))[0] == pytest.approx(expected, abs=0.01)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="same shape"):
        challenge_scores(np.zeros((2, 8, 8)), np.zeros((2, 8, 9)))
    with pytest.raises(ValueError, match="at least one"):
        challenge_scores(np.zeros((8, 8)), np.zeros((8, 8)), thresholds=())


@pytest.fixture(scope="module")
def real_labels() -> np.ndarray:
    """Five real ISBI label slices as 0/1 membrane maps; skips when ../shared/isbi2012 is absent."""
    if not (ISBI_SAMPLE / "train" / "label").is_dir():
        pytest.skip(f"ISBI 2012 sample not found at {ISBI_SAMPLE} (it lives beside the repo, never inside it)")
    labels = [cv2.imread(str(ISBI_SAMPLE / "train" / "label" / f"{k}.png"), cv2.IMREAD_GRAYSCALE) for k in range(5)]
    return (np.stack(labels) == 0).astype(np.uint8)


def test_real_slices_score_zero_against_themselves_and_worse_for_no_membrane(real_labels: np.ndarray) -> None:
    assert challenge_scores(real_labels.astype(np.float32), real_labels).v_rand_error == pytest.approx(0, abs=1e-12)
    baseline = challenge_scores(np.zeros(real_labels.shape, np.float32), real_labels)
    assert baseline.v_rand_error > 0.5 and baseline.v_info_error == pytest.approx(1.0)
