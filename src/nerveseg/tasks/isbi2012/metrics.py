"""The ISBI 2012 metrics of membrane probability maps, per slice and averaged over slices.

- V_rand error and V_info error: the challenge's final metrics (``tasks.isbi2012.challenge_metrics``): 1 - the
  foreground-restricted Rand / information-theoretic score after border thinning, at the best threshold of
  the sweep 0.0, 0.1, ..., 1.0. The V_rand error ranks runs (lower is better).
- pixel error: 1 - pixel accuracy of the map thresholded at ``threshold`` (membrane where ``prob > threshold``);
- adapted Rand error: ``skimage.metrics.adapted_rand_error`` between the 4-connected cell regions of the
  thresholded map and of the label, at ``threshold``. Not the challenge's number: skimage ignores label 0 only
  in the truth, so the predicted membrane counts as one segment that merges with every cell, and there is no
  border thinning and no threshold sweep; it is kept beside the challenge's numbers for comparison with the
  numbers this project reported before issue 23 (then called "Rand error").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from skimage.metrics import adapted_rand_error

from nerveseg.names import ADAPTED_RAND_ERROR, PIXEL_ERROR, V_INFO_ERROR, V_RAND_ERROR
from nerveseg.tasks.isbi2012.challenge_metrics import (
    SWEEP_THRESHOLDS,
    ChallengeScores,
    as_stack,
    cell_regions,
    challenge_scores,
)
from nerveseg.tasks.isbi2012.membrane_postprocess import DEFAULT_THRESHOLD


@dataclass(frozen=True)
class MembraneScores:
    """Per-slice pixel and adapted Rand errors at one threshold, and the challenge's sweep."""

    pixel_errors: np.ndarray
    adapted_rand_errors: np.ndarray  # skimage's, at the threshold
    challenge: ChallengeScores

    @property
    def pixel_error(self) -> float:
        return float(self.pixel_errors.mean())

    @property
    def adapted_rand_error(self) -> float:
        return float(self.adapted_rand_errors.mean())

    @property
    def v_rand_error(self) -> float:
        return self.challenge.v_rand_error

    @property
    def v_info_error(self) -> float:
        return self.challenge.v_info_error

    def as_dict(self) -> dict[str, float]:
        """The averaged metrics under the names runs log them with."""
        return {
            PIXEL_ERROR: self.pixel_error,
            V_RAND_ERROR: self.v_rand_error,
            V_INFO_ERROR: self.v_info_error,
            ADAPTED_RAND_ERROR: self.adapted_rand_error,
        }


def membrane_scores(
    probs: np.ndarray,
    membranes: np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
    sweep: Sequence[float] = SWEEP_THRESHOLDS,
) -> MembraneScores:
    """Score membrane probabilities ``(n, h, w)`` against 0/1 membrane targets of the same shape.

    Pixel and adapted Rand errors at ``threshold``; V_rand / V_info at the best of ``sweep``.
    """
    probs, membranes = as_stack("probs", probs), as_stack("membranes", membranes)
    if probs.shape != membranes.shape:
        raise ValueError(f"probs {probs.shape} and membranes {membranes.shape} must have the same shape")
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    rows = [_slice_scores(prob > threshold, truth.astype(bool)) for prob, truth in zip(probs, membranes, strict=True)]
    pixel, adapted = (np.array(column, dtype=np.float64) for column in zip(*rows, strict=True))
    return MembraneScores(pixel, adapted, challenge_scores(probs, membranes, sweep))


def _slice_scores(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    pixel_error = float(np.mean(predicted != truth))
    true_cells, predicted_cells = cell_regions(truth), cell_regions(predicted)
    if not true_cells.any():  # an all-membrane label has no cells to compare (skimage would divide by zero)
        return pixel_error, 0.0 if not predicted_cells.any() else 1.0
    error, _, _ = adapted_rand_error(true_cells, predicted_cells, ignore_labels=(0,))
    return pixel_error, float(error)


def choose_threshold(
    oof_probs: np.ndarray, membranes: np.ndarray, thresholds: Sequence[float] = SWEEP_THRESHOLDS[:-1]
) -> tuple[float, float]:
    """The threshold with the lowest mean V_rand error on out-of-fold predictions, and that error.

    Ties go to the earlier candidate in ``thresholds``. The default leaves out 1.0 (nothing is membrane
    there), so the result is a valid ``MembranePostprocess`` threshold.
    """
    if len(thresholds) == 0:
        raise ValueError("choose_threshold needs at least one candidate threshold")
    scores = challenge_scores(oof_probs, membranes, thresholds)
    return scores.v_rand_threshold, scores.v_rand_error
