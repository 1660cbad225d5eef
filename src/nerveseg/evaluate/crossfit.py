"""An honest score for post-processing: decide it on the other folds, score it on this one.

``decide_postprocessing`` picks a threshold, a minimum area and a presence gate that maximise the
OOF score; scoring those settings on the same OOF predictions is in-sample and optimistic (a
dozen candidates, each tuned to the noise of the images it is scored on). Cross-fitting removes
that: for each fold k the settings are decided on the OOF predictions of the OTHER folds and
applied to fold k, so no image is scored by settings that saw it. The per-image scores it returns
feed the subject bootstrap (``nerveseg.evaluate.uncertainty``).

The settings a submission uses are still decided on ALL the OOF predictions (more data, the same
procedure); this module only measures how well that procedure generalises.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nerveseg.evaluate.metrics import dice_per_image
from nerveseg.evaluate.postprocess import MasksGetter, decide_postprocessing, iter_postprocessed
from nerveseg.evaluate.postprocess_settings import PostprocessDecision, PostprocessSettings


@dataclass
class CrossfitResult:
    """Per-image Dice (in the order of the OOF arrays) and the settings each fold was scored with."""

    per_image: np.ndarray  # (N,) float64
    decisions_by_fold: dict[int, PostprocessDecision]

    @property
    def score(self) -> float:
        return float(self.per_image.mean())


def _decide_on(
    oof_probs: np.ndarray, full_masks: MasksGetter, index: np.ndarray, presence: np.ndarray | None
) -> PostprocessDecision:
    """Post-processing decided on the images at ``index`` only (the one call into postprocess)."""
    return decide_postprocessing(
        oof_probs[index],
        lambda positions: full_masks(index[positions]),
        None if presence is None else presence[index],
        progress=False,
    )


def postprocessed_dice(
    oof_probs: np.ndarray,
    full_masks: MasksGetter,
    index: np.ndarray,
    presence: np.ndarray | None,
    settings: PostprocessSettings,
) -> np.ndarray:
    """Per-image Dice at full resolution of the images at ``index`` post-processed with ``settings``."""
    scores = np.empty(len(index), dtype=np.float64)
    chunk_presence = None if presence is None else presence[index]
    for start, masks in iter_postprocessed(oof_probs[index], settings, chunk_presence):
        part = index[start : start + len(masks)]
        scores[start : start + len(masks)] = dice_per_image(full_masks(part), masks)
    return scores


def crossfit_postprocessing(
    oof_probs: np.ndarray,
    full_masks: MasksGetter,
    folds: np.ndarray,
    presence: np.ndarray | None = None,
) -> CrossfitResult:
    """Cross-fitted per-image scores of the post-processing procedure.

    ``oof_probs`` (N, h, w) model-size OOF probabilities, ``full_masks(index)`` their (n, 420, 580)
    ground truth, ``folds`` (N,) the fold of each image (at least two folds), ``presence`` (N,) the
    presence head's OOF output or None. Costs about (k - 1) times one ``decide_postprocessing``.
    """
    oof_probs, folds = np.asarray(oof_probs), np.asarray(folds).reshape(-1)
    if folds.shape != (len(oof_probs),):
        raise ValueError(f"folds has {folds.size} entries for {len(oof_probs)} OOF images; pass one fold per image")
    fold_ids = np.unique(folds)
    if len(fold_ids) < 2:
        raise ValueError(f"cross-fitting needs OOF predictions of at least 2 folds, got folds {fold_ids.tolist()}")
    if presence is not None:
        presence = np.asarray(presence, dtype=np.float32).reshape(-1)
    per_image = np.empty(len(oof_probs), dtype=np.float64)
    decisions_by_fold: dict[int, PostprocessDecision] = {}
    for fold in fold_ids.tolist():
        scored = np.flatnonzero(folds == fold)
        decision = _decide_on(oof_probs, full_masks, np.flatnonzero(folds != fold), presence)
        per_image[scored] = postprocessed_dice(oof_probs, full_masks, scored, presence, decision.settings)
        decisions_by_fold[int(fold)] = decision
    return CrossfitResult(per_image, decisions_by_fold)


__all__ = ["CrossfitResult", "crossfit_postprocessing", "postprocessed_dice"]
