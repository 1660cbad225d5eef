"""ISBI 2012 out-of-fold scoring and the post-processing chosen on it.

``isbi_oof_summary`` scores each block fold's held-out slices with the metrics of
``evaluate.membrane_metrics`` (the challenge's V_rand and V_info errors, the pixel error and skimage's
adapted Rand error) and averages over folds (the CV numbers, ``cv_<metric>_mean``), next to the trivial
"everything is cell" baseline. ``decide_isbi_postprocessing`` picks the threshold with the lowest OOF
V_rand error, then keeps a watershed gap closing (``evaluate.membrane_postprocess``) and a small-cell
clean-up each only when it lowers that error (at that threshold) further.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
from skimage.morphology import remove_small_objects

from nerveseg.data.isbi import IsbiData
from nerveseg.evaluate.challenge_metrics import SWEEP_THRESHOLDS, challenge_scores
from nerveseg.evaluate.membrane_metrics import DEFAULT_THRESHOLD, choose_threshold, membrane_scores
from nerveseg.evaluate.membrane_postprocess import close_membrane_gaps
from nerveseg.names import ADAPTED_RAND_ERROR, PIXEL_ERROR, V_INFO_ERROR, V_RAND_ERROR
from nerveseg.train.fold import FoldResult

METRICS = (PIXEL_ERROR, V_RAND_ERROR, V_INFO_ERROR, ADAPTED_RAND_ERROR)  # all lower-is-better
CELL_AREAS = (0, 16, 64, 256)  # candidate min_cell_area values (0 = no clean-up)
SEED_THRESHOLDS = (0.05, 0.1, 0.2, 0.3)  # candidate watershed seed levels (cell cores: prob below it)
SEED_AREAS = (0, 32, 128)  # candidate smallest seed areas in pixels


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
    """Per-fold and CV-mean metrics (pixel and adapted Rand error at ``threshold``, V_rand and V_info
    errors at each fold's best threshold of the challenge's sweep), and the OOF stack.

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
    """Membrane where ``prob > threshold``, plus the watershed lines between cell cores when
    ``seed_threshold > 0`` (``evaluate.membrane_postprocess``); then cell regions smaller than
    ``min_cell_area`` pixels become membrane. The defaults change nothing but the threshold."""

    threshold: float = DEFAULT_THRESHOLD
    min_cell_area: int = 0
    seed_threshold: float = 0.0  # 0 = no gap closing; else seeds are prob < seed_threshold
    seed_min_area: int = 0  # seeds (cell cores) smaller than this are dropped

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold < 1.0 or not _count(self.min_cell_area) or not _count(self.seed_min_area):
            raise ValueError(
                f"MembranePostprocess needs 0 <= threshold < 1 and integers min_cell_area, seed_min_area >= 0, got "
                f"threshold={self.threshold}, min_cell_area={self.min_cell_area}, seed_min_area={self.seed_min_area}"
            )
        if not 0.0 <= self.seed_threshold <= self.threshold:
            raise ValueError(
                f"MembranePostprocess needs 0 <= seed_threshold <= threshold (cell cores are surely cell), "
                f"got seed_threshold={self.seed_threshold}, threshold={self.threshold}"
            )

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> MembranePostprocess:
        """The settings from ``as_dict``'s keys; the gap-closing keys may be missing (files written before
        they existed load as "no gap closing"). ``KeyError``/``TypeError``/``ValueError`` when malformed."""
        unknown = set(values) - set(POSTPROCESS_FIELDS)
        if unknown:
            raise ValueError(f"unknown membrane post-processing keys {sorted(unknown)}; expected {POSTPROCESS_FIELDS}")
        return cls(
            float(values["threshold"]),
            int(values["min_cell_area"]),
            float(values.get("seed_threshold", 0.0)),
            int(values.get("seed_min_area", 0)),
        )

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> MembranePostprocess:
        values = json.loads(text)
        try:
            if not isinstance(values, dict):
                raise TypeError(f"a JSON object, not {type(values).__name__}")
            return cls.from_dict(values)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"membrane post-processing JSON must hold threshold and min_cell_area ({err}), got {text!r}"
            ) from err

    def describe(self) -> str:
        closing = (
            f", watershed gap closing (seeds prob < {self.seed_threshold}, >= {self.seed_min_area} px)"
            if self.seed_threshold
            else ""
        )
        return f"threshold {self.threshold}{closing}, min_cell_area {self.min_cell_area}"


POSTPROCESS_FIELDS = tuple(field.name for field in fields(MembranePostprocess))


def _count(value: Any) -> bool:
    return int(value) == value and value >= 0


def apply_membrane_postprocess(probs: np.ndarray, settings: MembranePostprocess) -> np.ndarray:
    """``probs`` (n, h, w) with the watershed lines (if on) and too-small cell regions set to 1.0.

    Still a probability map (what the challenge's submission holds): thresholding it at
    ``settings.threshold`` gives the cleaned segmentation. Cells are 4-connected, as in the metrics.
    """
    out = close_membrane_gaps(probs, settings.seed_threshold, settings.seed_min_area)
    if settings.min_cell_area <= 1:
        return out
    for prob in out.reshape(-1, *out.shape[-2:]):
        cells = prob <= settings.threshold
        kept = remove_small_objects(cells, max_size=settings.min_cell_area - 1, connectivity=1)
        prob[cells & ~kept] = 1.0
    return out


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
