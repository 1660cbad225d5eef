"""ISBI 2012 post-processing chosen on the out-of-fold predictions (the folds' scores: ``tasks.isbi2012.summary``).

``decide_isbi_postprocessing`` picks the threshold with the lowest OOF
V_rand error, then keeps a watershed gap closing (``membrane_postprocess``) and a small-cell
clean-up each only when it lowers that error (at that threshold) further. The settings and how they are applied
live in ``membrane_postprocess``: serving (``serving.MembraneSegmenter``) applies them too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from nerveseg.tasks.isbi2012.challenge_metrics import SWEEP_THRESHOLDS, challenge_scores
from nerveseg.tasks.isbi2012.membrane_postprocess import MembranePostprocess, apply_membrane_postprocess
from nerveseg.tasks.isbi2012.metrics import choose_threshold

CELL_AREAS = (0, 16, 64, 256)  # candidate min_cell_area values (0 = no clean-up)
SEED_THRESHOLDS = (0.05, 0.1, 0.2, 0.3)  # candidate watershed seed levels (cell cores: prob below it)
SEED_AREAS = (0, 32, 128)  # candidate smallest seed areas in pixels


def postprocessed_v_rand_error(oof: np.ndarray, membranes: np.ndarray, settings: MembranePostprocess) -> float:
    """V_rand error of the OOF stack after ``settings``, thresholded at ``settings.threshold`` (no sweep: the
    gap closing and clean-up were chosen for that threshold)."""
    processed = apply_membrane_postprocess(oof, settings)
    return challenge_scores(processed, membranes, (settings.threshold,)).v_rand_error


def _best_of(
    oof: np.ndarray,
    membranes: np.ndarray,
    best: tuple[MembranePostprocess, float],
    candidates: Sequence[MembranePostprocess],
) -> tuple[MembranePostprocess, float]:
    """``best`` (settings, OOF V_rand error) replaced by the first candidate with the lowest error below it."""
    for candidate in candidates:
        error = postprocessed_v_rand_error(oof, membranes, candidate)
        if error < best[1]:
            best = (candidate, error)
    return best


def decide_isbi_postprocessing(
    oof: np.ndarray,
    membranes: np.ndarray,
    *,
    thresholds: Sequence[float] = SWEEP_THRESHOLDS[1:-1],
    seed_thresholds: Sequence[float] = SEED_THRESHOLDS,
    seed_min_areas: Sequence[int] = SEED_AREAS,
    min_cell_areas: Sequence[int] = CELL_AREAS,
) -> MembranePostprocess:
    """nnU-Net's rule, step by step on the OOF V_rand error: the best threshold (by default the challenge's
    sweep less 0.0 and 1.0, where everything or nothing is membrane); then the watershed gap closing with
    the best seed settings, kept only if it lowers the error; then the small-cell clean-up, likewise. Ties
    keep the simpler settings (the step off)."""
    threshold, error = choose_threshold(oof, membranes, thresholds)
    best = (MembranePostprocess(threshold), error)
    closings = [
        MembranePostprocess(threshold, 0, float(level), int(area))
        for level in seed_thresholds
        if 0 < level <= threshold
        for area in seed_min_areas
    ]
    best = _best_of(oof, membranes, best, closings)
    chosen = best[0]
    cleanups = [replace(chosen, min_cell_area=int(area)) for area in min_cell_areas if area > 1]
    return _best_of(oof, membranes, best, cleanups)[0]
