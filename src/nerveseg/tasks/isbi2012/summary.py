"""ISBI 2012 cross-validation numbers: the block folds' out-of-fold slices scored, per fold and over folds.

``isbi_oof_summary`` scores each block fold's held-out slices with the metrics of
``tasks.isbi2012.metrics`` (the challenge's V_rand and V_info errors, the pixel error and skimage's
adapted Rand error) and averages over folds (the CV numbers, ``cv_<metric>_mean``), next to the trivial
"everything is cell" baseline. The nerve task's counterpart is ``tasks.nerve.summary``; each lives in its
task's package.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nerveseg.names import ADAPTED_RAND_ERROR, PIXEL_ERROR, V_INFO_ERROR, V_RAND_ERROR
from nerveseg.tasks.isbi2012.challenge_metrics import ChallengeScores
from nerveseg.tasks.isbi2012.data import IsbiData
from nerveseg.tasks.isbi2012.metrics import DEFAULT_THRESHOLD, membrane_scores
from nerveseg.train.fold_result import FoldResult

METRICS = (PIXEL_ERROR, V_RAND_ERROR, V_INFO_ERROR, ADAPTED_RAND_ERROR)  # all lower-is-better


def assemble_oof(n_slices: int, results: Sequence[FoldResult]) -> np.ndarray:
    """The (n, h, w) float32 OOF stack from the folds' held-out predictions; every slice exactly once."""
    if not results:
        raise ValueError("isbi_oof_summary needs at least one FoldResult")
    oof = np.full((n_slices, *results[0].oof_probs.shape[1:]), np.nan, dtype=np.float32)
    for result in results:
        oof[result.val_index] = result.oof_probs
    seen = np.concatenate([r.val_index for r in results])
    if len(seen) != n_slices or len(np.unique(seen)) != n_slices:
        raise ValueError(
            f"the folds' held-out slices must cover all {n_slices} slices exactly once; got {sorted(seen)}"
        )
    return oof


def isbi_oof_summary(
    data: IsbiData, folds: np.ndarray, results: Sequence[FoldResult], threshold: float = DEFAULT_THRESHOLD
) -> tuple[dict[str, float], np.ndarray, ChallengeScores]:
    """Per-fold and CV-mean metrics (pixel and adapted Rand error at ``threshold``, V_rand and V_info
    errors at each fold's best threshold of the challenge's sweep), the OOF stack, and the pooled stack's
    sweep (each slice's V_rand at each threshold: the task's per-slice scores, without sweeping again).

    Keys: ``fold_<k>_<metric>``, ``cv_<metric>_mean``/``_std`` (over folds), ``oof_<metric>`` (over
    all slices pooled) and ``baseline_all_cell_<metric>`` (predicting no membrane at all).
    """
    folds = np.asarray(folds)
    oof = assemble_oof(len(data.membranes), results)
    metrics: dict[str, float] = {}
    per_fold = {name: [] for name in METRICS}
    for result in sorted(results, key=lambda r: r.fold):
        if not np.all(folds[result.val_index] == result.fold):
            raise ValueError(f"fold {result.fold}'s val_index does not match the folds array")
        scores = membrane_scores(oof[result.val_index], data.membranes[result.val_index], threshold).as_dict()
        for name in METRICS:
            metrics[f"fold_{result.fold}_{name}"] = scores[name]
            per_fold[name].append(scores[name])
    for name in METRICS:
        metrics[f"cv_{name}_mean"] = float(np.mean(per_fold[name]))
        metrics[f"cv_{name}_std"] = float(np.std(per_fold[name]))
    pooled = membrane_scores(oof, data.membranes, threshold)
    metrics.update({f"oof_{name}": value for name, value in pooled.as_dict().items()})
    baseline = membrane_scores(np.zeros_like(oof), data.membranes, threshold).as_dict()
    metrics.update({f"baseline_all_cell_{name}": value for name, value in baseline.items()})
    return metrics, oof, pooled.challenge


def format_isbi_table(metrics: dict[str, float]) -> str:
    """A plain-text table: one row per fold, then the CV mean +- std, the pooled OOF and the baseline."""
    folds = sorted({int(key.split("_")[1]) for key in metrics if key.startswith("fold_")})
    header = f"{'':<18}" + "".join(f"{name:>26}" for name in METRICS)
    rows = [header]
    for fold in folds:
        rows.append(f"{f'fold {fold}':<18}" + "".join(f"{metrics[f'fold_{fold}_{n}']:>26.4f}" for n in METRICS))
    cv = "".join(f"{metrics[f'cv_{n}_mean']:>17.4f} +- {metrics[f'cv_{n}_std']:.4f}" for n in METRICS)
    rows.append(f"{'CV mean +- std':<18}{cv}")
    rows.append(f"{'OOF pooled':<18}" + "".join(f"{metrics[f'oof_{n}']:>26.4f}" for n in METRICS))
    rows.append(f"{'all-cell baseline':<18}" + "".join(f"{metrics[f'baseline_all_cell_{n}']:>26.4f}" for n in METRICS))
    return "\n".join(rows)
