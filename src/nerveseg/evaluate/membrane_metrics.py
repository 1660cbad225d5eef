"""The ISBI 2012 challenge's metrics on membrane probability maps, per slice and averaged.

- pixel error: 1 - pixel accuracy of the thresholded map (membrane where ``prob > threshold``);
- Rand error: ``skimage.metrics.adapted_rand_error`` between the connected CELL regions of the
  thresholded map and those of the label (1 - the foreground-restricted Rand F-score);
- variation of information: ``skimage.metrics.variation_of_information``, split + merge entropies.

Cells are the 4-connected components of the non-membrane pixels (``skimage.measure.label``):
with 8-connectivity a one-pixel diagonal gap in a membrane would already merge two cells.
Membrane pixels get label 0, which both skimage metrics ignore in the true image, as the challenge
did. Rand error ranks runs; ``choose_threshold`` picks the threshold on out-of-fold predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from skimage.measure import label as connected_components
from skimage.metrics import adapted_rand_error, variation_of_information

RANKING_METRIC = "rand_error"  # lower is better
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class MembraneScores:
    """Per-slice arrays (length n) of the three metrics; the properties average them."""

    pixel_errors: np.ndarray
    rand_errors: np.ndarray
    vi_splits: np.ndarray  # H(prediction | truth): over-segmentation
    vi_merges: np.ndarray  # H(truth | prediction): under-segmentation

    @property
    def pixel_error(self) -> float:
        return float(self.pixel_errors.mean())

    @property
    def rand_error(self) -> float:
        return float(self.rand_errors.mean())

    @property
    def variation_of_information(self) -> float:
        return float((self.vi_splits + self.vi_merges).mean())

    def as_dict(self) -> dict[str, float]:
        """The averaged metrics under the names runs log them with."""
        return {
            "pixel_error": self.pixel_error,
            "rand_error": self.rand_error,
            "variation_of_information": self.variation_of_information,
        }


def cell_regions(membrane: np.ndarray) -> np.ndarray:
    """Label the 4-connected cell regions of a 2-D 0/1 (or bool) membrane map; membrane gets 0."""
    membrane = np.asarray(membrane)
    if membrane.ndim != 2:
        raise ValueError(f"cell_regions takes one 2-D membrane map, got shape {membrane.shape}")
    return connected_components(membrane == 0, background=0, connectivity=1)


def _as_stack(name: str, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"{name} must be (h, w) or (n, h, w), got shape {array.shape}")
    return array


def membrane_scores(probs: np.ndarray, membranes: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> MembraneScores:
    """Score membrane probabilities ``(n, h, w)`` against 0/1 membrane targets of the same shape."""
    probs, membranes = _as_stack("probs", probs), _as_stack("membranes", membranes)
    if probs.shape != membranes.shape:
        raise ValueError(f"probs {probs.shape} and membranes {membranes.shape} must have the same shape")
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    rows = [_slice_scores(prob > threshold, truth.astype(bool)) for prob, truth in zip(probs, membranes, strict=True)]
    pixel, rand, split, merge = (np.array(column, dtype=np.float64) for column in zip(*rows, strict=True))
    return MembraneScores(pixel, rand, split, merge)


def _slice_scores(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float, float, float]:
    pixel_error = float(np.mean(predicted != truth))
    true_cells, predicted_cells = cell_regions(truth), cell_regions(predicted)
    if not true_cells.any():  # an all-membrane label has no cells to compare (skimage would divide by zero)
        return pixel_error, 0.0 if not predicted_cells.any() else 1.0, 0.0, 0.0
    rand_error, _, _ = adapted_rand_error(true_cells, predicted_cells, ignore_labels=(0,))
    split, merge = variation_of_information(true_cells, predicted_cells, ignore_labels=(0,))
    return pixel_error, float(rand_error), float(split), float(merge)


def choose_threshold(
    oof_probs: np.ndarray, membranes: np.ndarray, thresholds: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7)
) -> tuple[float, float]:
    """The threshold with the lowest mean Rand error on out-of-fold predictions, and that error.

    Ties go to the earlier candidate in ``thresholds``.
    """
    if len(thresholds) == 0:
        raise ValueError("choose_threshold needs at least one candidate threshold")
    errors = [membrane_scores(oof_probs, membranes, float(t)).rand_error for t in thresholds]
    best = int(np.argmin(errors))
    return float(thresholds[best]), float(errors[best])
