"""Summarising a cross-validation run: per-fold scores, their spread, the pooled OOF score and
the score of predicting nothing at all, which every model must beat to be worth anything
(about 0.59 on Kaggle's training set, the share of empty masks).

Everything is recomputed at 580x420 from the out-of-fold probabilities, so the fold scores,
the OOF score and the baseline come from one code path and one threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nerveseg.data.cache import PreparedData
from nerveseg.evaluate.metrics import dice_per_image
from nerveseg.train.fold import FoldResult, full_resolution_dice


@dataclass
class CVSummary:
    """Scores at full resolution; ``cv_score_std`` is the population std (ddof=0) of the fold scores."""

    fold_scores: dict[int, float]
    cv_score_mean: float
    cv_score_std: float
    oof_score: float  # all out-of-fold images scored together
    empty_baseline_score: float  # empty predictions for the same images


def _assemble_oof(data: PreparedData, folds: np.ndarray, results: list[FoldResult]) -> np.ndarray:
    """(N, h, w) OOF probabilities; NaN for images of folds that are not in ``results``."""
    oof = np.full(data.images.shape, np.nan, dtype=np.float32)
    seen: set[int] = set()
    for result in results:
        if result.fold in seen:
            raise ValueError(f"fold {result.fold} appears twice in the results; pass one FoldResult per fold")
        seen.add(result.fold)
        expected = np.flatnonzero(folds == result.fold)
        if not np.array_equal(np.asarray(result.val_index), expected):
            raise ValueError(
                f"fold {result.fold}'s val_index does not match the folds array; "
                "were these results trained with another folds file?"
            )
        if result.oof_probs.shape != (len(expected), *data.images.shape[1:]):
            raise ValueError(
                f"fold {result.fold}: oof_probs has shape {result.oof_probs.shape}, "
                f"expected {(len(expected), *data.images.shape[1:])}"
            )
        oof[expected] = result.oof_probs
    return oof


def empty_baseline(data: PreparedData, index: np.ndarray, chunk_size: int = 256) -> float:
    """Competition score of predicting an empty mask for every image in ``index``, via the metric."""
    scores = []
    for start in range(0, len(index), chunk_size):
        truth = data.full_masks(index[start : start + chunk_size])
        scores.append(dice_per_image(truth, np.zeros_like(truth)))
    return float(np.concatenate(scores).mean())


def summarize_cv(
    data: PreparedData, folds: np.ndarray, results: list[FoldResult], threshold: float = 0.5
) -> tuple[CVSummary, np.ndarray]:
    """The summary and the (N, h, w) OOF probabilities (NaN rows for folds not in ``results``).

    With only some folds (a one-fold run), the OOF score and the baseline cover those folds' images.
    """
    folds = np.asarray(folds)
    if not results:
        raise ValueError("summarize_cv got no fold results; train at least one fold first")
    if folds.shape != (len(data),):
        raise ValueError(f"folds must have one entry per image ({len(data)}), got shape {folds.shape}")
    oof = _assemble_oof(data, folds, results)
    covered = np.sort(np.concatenate([np.asarray(r.val_index) for r in results]))
    dice = full_resolution_dice(data, covered, oof[covered], threshold)
    fold_of = folds[covered]
    fold_scores = {int(r.fold): float(dice[fold_of == r.fold].mean()) for r in sorted(results, key=lambda r: r.fold)}
    scores = np.array(list(fold_scores.values()))
    summary = CVSummary(
        fold_scores=fold_scores,
        cv_score_mean=float(scores.mean()),
        cv_score_std=float(scores.std()),
        oof_score=float(dice.mean()),
        empty_baseline_score=empty_baseline(data, covered),
    )
    return summary, oof


def format_summary_table(summary: CVSummary) -> str:
    """A plain-text table for the console and the run's log."""
    lines = ["fold        score"]
    lines += [f"{fold:<10d}  {score:.4f}" for fold, score in summary.fold_scores.items()]
    lines += [
        f"mean ± std  {summary.cv_score_mean:.4f} ± {summary.cv_score_std:.4f}",
        f"OOF         {summary.oof_score:.4f}",
        f"all-empty   {summary.empty_baseline_score:.4f}",
    ]
    return "\n".join(lines)
