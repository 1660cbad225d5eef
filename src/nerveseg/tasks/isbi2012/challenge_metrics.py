"""The ISBI 2012 challenge's final metrics: V_rand and V_info after border thinning, best over a threshold sweep.

What the challenge computes (its Fiji script "Segmentation evaluation after border thinning" by Ignacio
Arganda-Carreras, which calls ``RandError.getMaximalVRandAfterThinning(0.0, 1.0, 0.1, true)`` and
``VariationOfInformation.getMaximalVInfoAfterThinning(0.0, 1.0, 0.1)`` of Trainable_Segmentation's
``trainableSegmentation.metrics``; definitions in Arganda-Carreras et al. 2015, Front. Neuroanat. 9:142), and
how this module reproduces it with scikit-image:

1. truth: the 4-connected cell regions of the label (``skimage.measure.label``); its zero label (membrane)
   is DROPPED: only pixels that are cell in the truth are counted (foreground restriction), n of them.
2. proposal, per threshold: membrane where ``prob > threshold``; its 4-connected cells seed a watershed of
   the binary map with watershed lines (``skimage.segmentation.watershed``), as the script's
   ``WatershedTransform2D(binary, 4)`` does. That is the "border thinning": every predicted border pixel
   joins its nearest cell, except a one-pixel line where two cells meet, so a thick predicted border costs
   nothing while a gap that merges two cells still does. (``skimage.morphology.thin`` would differ: it
   keeps spurs and isolated specks as border.) With no cell at all the whole map is one segment (the
   script's watershed makes the flat image one basin). On a border of even width the line's side is a tie
   that each implementation's flooding order breaks its own way: on real slices that moves V by ~1e-4.
3. proposal zero label (the remaining one-pixel lines) is "pruned" the script's way: each such pixel
   inside the truth's cells counts as a SINGLETON segment, not as one shared segment (skimage's
   ``adapted_rand_error`` makes them one segment that merges with everything). Lines lying on truth
   membrane are dropped with it.
4. over the contingency table p_ij (fraction of the n pixels in truth cell i and proposal segment j):
   V_rand = sum p_ij^2 / (0.5 sum_i s_i^2 + 0.5 sum_j t_j^2) (the F-score of the Rand split and merge
   scores, s_i and t_j the row and column sums); V_info = I(S;T) / (0.5 H(S) + 0.5 H(T)) (the F-score of
   I/H(S) and I/H(T)). A slice whose truth or proposal has zero entropy gets V_info = 0 (the script's rule).
5. per threshold the slice scores are averaged over the slices (the script's macro average); the reported
   score is the best threshold's, for V_rand and V_info separately. Thresholds 0.0, 0.1, ..., 1.0.

Our maps are membrane probabilities (the script thresholds a cell probability, cell where ``p > t``): a
cell-probability threshold t is our membrane threshold 1 - t, and the sweep is symmetric, so only pixels
exactly on a threshold can differ. Errors are reported as 1 - V (lower is better).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_dilation, generate_binary_structure
from skimage.measure import label as connected_components
from skimage.segmentation import watershed

SWEEP_THRESHOLDS = tuple(round(0.1 * step, 1) for step in range(11))  # the challenge's 0.0:0.1:1.0
_CROSS = generate_binary_structure(2, 1)  # 4-connectivity, the script's


def cell_regions(membrane: np.ndarray) -> np.ndarray:
    """Label the 4-connected cell regions of a 2-D 0/1 (or bool) membrane map; membrane gets 0.

    4-connected as in the challenge's script: with 8-connectivity a one-pixel diagonal gap in a membrane
    would already merge two cells.
    """
    membrane = np.asarray(membrane)
    if membrane.ndim != 2:
        raise ValueError(f"cell_regions takes one 2-D membrane map, got shape {membrane.shape}")
    return connected_components(membrane == 0, background=0, connectivity=1)


def as_stack(name: str, array: np.ndarray) -> np.ndarray:
    """``array`` as an (n, h, w) stack (a single (h, w) slice gets n = 1)."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ValueError(f"{name} must be (h, w) or (n, h, w), got shape {array.shape}")
    return array


def thinned_segments(membrane: np.ndarray) -> np.ndarray:
    """(h, w) segment labels of a 2-D 0/1 membrane map after border thinning; 0 = a one-pixel border line."""
    membrane = np.asarray(membrane, dtype=bool)
    cells = cell_regions(membrane)
    if cells.max() == 0:  # all border: the watershed's only basin is the whole image
        return np.ones(membrane.shape, dtype=np.int32)
    # flood only the border and the cell pixels touching it (3x faster): a cell's inner pixels are its
    # own marker and pass nothing on, so leaving them out changes no label
    region = binary_dilation(membrane, _CROSS)
    flooded = watershed(membrane.astype(np.uint8), markers=cells, mask=region, connectivity=1, watershed_line=True)
    return np.where(region, flooded, cells)


@dataclass(frozen=True)
class _Contingency:
    """The truth's cell pixels tabulated against the proposal, as fractions of their count ``n``."""

    n: int
    joint: np.ndarray  # p_ij of the non-empty (truth cell, proposal segment > 0) pairs
    rows: np.ndarray  # s_i: each truth cell's share (border-line pixels included)
    columns: np.ndarray  # t_j: each proposal segment's share (segments > 0)
    line_share: float  # share of the pixels on a proposal border line (each its own singleton segment)


def _contingency(true_cells: np.ndarray, segments: np.ndarray) -> _Contingency:
    inside = true_cells > 0
    cells, segs = true_cells[inside].astype(np.int64), segments[inside].astype(np.int64)
    n = cells.size
    kept = segs > 0
    width = int(segs.max(initial=0)) + 1
    _, pair_counts = np.unique(cells[kept] * width + segs[kept], return_counts=True)
    return _Contingency(
        n,
        pair_counts / n,
        np.bincount(cells)[1:] / n,
        np.bincount(segs[kept], minlength=1)[1:] / n,
        float(np.count_nonzero(~kept)) / n if n else 0.0,
    )


def slice_scores(true_cells: np.ndarray, segments: np.ndarray) -> tuple[float, float]:
    """(V_rand, V_info) of one slice: truth cell labels (0 dropped) against proposal segments (0 = singletons).

    A truth without cells has nothing to score: (1.0, 1.0).
    """
    table = _contingency(true_cells, segments)
    if table.n == 0:
        return 1.0, 1.0
    singletons = table.line_share / table.n  # each line pixel is its own segment: (1/n)^2 per pixel
    sum_joint = float(np.sum(table.joint**2)) + singletons
    v_rand = 2.0 * sum_joint / (float(np.sum(table.rows**2)) + float(np.sum(table.columns**2)) + singletons)
    return v_rand, _v_info(table)


def _entropy(probabilities: np.ndarray) -> float:
    nonzero = probabilities[probabilities > 0]
    return float(-np.sum(nonzero * np.log(nonzero)))


def _v_info(table: _Contingency) -> float:
    """I / (0.5 H(truth) + 0.5 H(proposal)), border-line pixels as singletons of mass 1/n each."""
    lines = table.line_share * np.log(table.n)  # the singletons' entropy: line_share/(1/n) terms of -(1/n) log(1/n)
    h_truth = _entropy(table.rows)
    h_proposal = _entropy(table.columns) + lines
    if h_truth == 0 or h_proposal == 0:  # the script: precision or recall 0, so the F-score is 0
        return 0.0
    mutual = h_truth + h_proposal - (_entropy(table.joint) + lines)
    return float(max(0.0, 2.0 * mutual / (h_truth + h_proposal)))


@dataclass(frozen=True)
class ChallengeScores:
    """V_rand and V_info per threshold and slice, ``(len(thresholds), n_slices)``; properties pick the best."""

    thresholds: tuple[float, ...]
    v_rand: np.ndarray
    v_info: np.ndarray

    @property
    def v_rand_threshold(self) -> float:
        """The threshold with the best mean V_rand (the first of equals)."""
        return self.thresholds[int(np.argmax(self.v_rand.mean(axis=1)))]

    @property
    def v_rand_error(self) -> float:
        """1 - the best threshold's mean V_rand over the slices."""
        return float(1.0 - self.v_rand.mean(axis=1).max())

    @property
    def v_info_error(self) -> float:
        return float(1.0 - self.v_info.mean(axis=1).max())

    def v_rand_errors(self) -> np.ndarray:
        """Per-slice V_rand errors at the stack's best V_rand threshold."""
        return 1.0 - self.v_rand[self.thresholds.index(self.v_rand_threshold)]


def challenge_scores(
    probs: np.ndarray, membranes: np.ndarray, thresholds: Sequence[float] = SWEEP_THRESHOLDS
) -> ChallengeScores:
    """Score membrane probabilities ``(n, h, w)`` against 0/1 membrane labels of that shape at each threshold."""
    probs, membranes = as_stack("probs", probs), as_stack("membranes", membranes)
    if probs.shape != membranes.shape:
        raise ValueError(f"probs {probs.shape} and membranes {membranes.shape} must have the same shape")
    if len(thresholds) == 0:
        raise ValueError("challenge_scores needs at least one threshold")
    true_cells = [cell_regions(truth.astype(bool)) for truth in membranes]
    scores = np.array(
        [
            [
                slice_scores(cells, thinned_segments(prob > threshold))
                for prob, cells in zip(probs, true_cells, strict=True)
            ]
            for threshold in thresholds
        ],
        dtype=np.float64,
    )
    return ChallengeScores(tuple(float(t) for t in thresholds), scores[..., 0], scores[..., 1])
