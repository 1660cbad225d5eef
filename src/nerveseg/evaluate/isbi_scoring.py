"""ISBI 2012 post-processing chosen on the out-of-fold predictions (the folds' scores: ``train.isbi_summary``).

``decide_isbi_postprocessing`` picks the threshold with the lowest OOF
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

from nerveseg.evaluate.challenge_metrics import SWEEP_THRESHOLDS, challenge_scores
from nerveseg.evaluate.membrane_metrics import DEFAULT_THRESHOLD, choose_threshold
from nerveseg.evaluate.membrane_postprocess import close_membrane_gaps

CELL_AREAS = (0, 16, 64, 256)  # candidate min_cell_area values (0 = no clean-up)
SEED_THRESHOLDS = (0.05, 0.1, 0.2, 0.3)  # candidate watershed seed levels (cell cores: prob below it)
SEED_AREAS = (0, 32, 128)  # candidate smallest seed areas in pixels


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
