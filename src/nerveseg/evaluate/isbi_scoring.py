"""ISBI 2012 out-of-fold scoring and the post-processing chosen on it.

``isbi_oof_summary`` scores each block fold's held-out slices with the challenge's three metrics
and averages over folds (the CV numbers, ``cv_<metric>_mean``), next to the trivial "everything is
cell" baseline. ``decide_isbi_postprocessing`` picks the threshold with the lowest OOF Rand error
and keeps a small-cell clean-up only when it lowers that error further.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from skimage.morphology import remove_small_objects

from nerveseg.data.isbi import IsbiData
from nerveseg.evaluate.membrane_metrics import DEFAULT_THRESHOLD, choose_threshold, membrane_scores
from nerveseg.train.fold import FoldResult

METRICS = ("pixel_error", "rand_error", "variation_of_information")  # all lower-is-better
CELL_AREAS = (0, 16, 64, 256)  # candidate min_cell_area values (0 = no clean-up)


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
) -> tuple[dict[str, float], np.ndarray]:
    """Per-fold and CV-mean pixel error / Rand error / VI at ``threshold``, and the OOF stack.

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
    for name, value in membrane_scores(oof, data.membranes, threshold).as_dict().items():
        metrics[f"oof_{name}"] = value
    baseline = membrane_scores(np.zeros_like(oof), data.membranes, threshold).as_dict()
    metrics.update({f"baseline_all_cell_{name}": value for name, value in baseline.items()})
    return metrics, oof


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


@dataclass(frozen=True)
class MembranePostprocess:
    """Membrane where ``prob > threshold``; cell regions smaller than ``min_cell_area`` pixels become membrane."""

    threshold: float = DEFAULT_THRESHOLD
    min_cell_area: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold < 1.0 or int(self.min_cell_area) != self.min_cell_area or self.min_cell_area < 0:
            raise ValueError(
                f"MembranePostprocess needs 0 <= threshold < 1 and an integer min_cell_area >= 0, "
                f"got threshold={self.threshold}, min_cell_area={self.min_cell_area}"
            )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> MembranePostprocess:
        values = json.loads(text)
        if not isinstance(values, dict) or set(values) != {"threshold", "min_cell_area"}:
            raise ValueError(f"membrane post-processing JSON must hold threshold and min_cell_area, got {text!r}")
        return cls(float(values["threshold"]), int(values["min_cell_area"]))


def apply_membrane_postprocess(probs: np.ndarray, settings: MembranePostprocess) -> np.ndarray:
    """``probs`` (n, h, w) with the pixels of too-small cell regions set to 1.0 (certain membrane).

    Still a probability map (what the challenge's submission holds): thresholding it at
    ``settings.threshold`` gives the cleaned segmentation. Cells are 4-connected, as in the metrics.
    """
    probs = np.asarray(probs, dtype=np.float32)
    if settings.min_cell_area <= 1:
        return probs.copy()
    out = probs.copy()
    for index, prob in enumerate(probs.reshape(-1, *probs.shape[-2:])):
        cells = prob <= settings.threshold
        kept = remove_small_objects(cells, max_size=settings.min_cell_area - 1, connectivity=1)
        out.reshape(-1, *probs.shape[-2:])[index][cells & ~kept] = 1.0
    return out


def postprocessed_rand_error(oof: np.ndarray, membranes: np.ndarray, settings: MembranePostprocess) -> float:
    """Mean Rand error of the OOF stack after ``settings``."""
    return membrane_scores(apply_membrane_postprocess(oof, settings), membranes, settings.threshold).rand_error


def decide_isbi_postprocessing(
    oof: np.ndarray,
    membranes: np.ndarray,
    *,
    thresholds: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7),
    min_cell_areas: Sequence[int] = CELL_AREAS,
) -> MembranePostprocess:
    """The OOF threshold with the lowest Rand error, plus the clean-up area only when it lowers that error."""
    threshold, best_error = choose_threshold(oof, membranes, thresholds)
    best = MembranePostprocess(threshold, 0)
    for area in min_cell_areas:
        if area <= 1:
            continue
        candidate = MembranePostprocess(threshold, int(area))
        error = postprocessed_rand_error(oof, membranes, candidate)
        if error < best_error:
            best, best_error = candidate, error
    return best
