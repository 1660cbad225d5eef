"""Membrane probability maps cleaned up as a decision says (``MembranePostprocess``): gaps closed by a seeded
watershed, then too-small cells made membrane. Applied when serving (``tasks.isbi2012.serving``) and decided on OOF
predictions (``tasks.isbi2012.postprocess``).

Why close gaps: one gap of a few pixels in a membrane merges two cells, which costs the V_rand error far more than
its pixels cost the pixel error. The step here draws a one-pixel membrane line wherever two cell
CORES meet:

1. seeds: the 4-connected components of ``prob < seed_threshold`` (pixels that are surely cell),
   keeping only those of at least ``seed_min_area`` pixels (a speck of low probability inside a
   cell would otherwise cut that cell in two);
2. ``skimage.segmentation.watershed`` floods the membrane probability from those seeds
   (4-connected, with watershed lines), so neighbouring basins meet on the ridge of the probability,
   i.e. on the membrane the model saw, however faint it is in the gap;
3. the watershed lines become membrane, added to the thresholded map (nothing is removed from it).

Why this rather than hysteresis thresholding with a small closing: hysteresis only bridges a gap
whose pixels still exceed its low threshold, and a closing bridges gaps up to its radius while it
thickens every membrane and swallows small cells (pixel error and splits both rise). The watershed
closes a gap of any width, follows the ridge rather than a straight line, and adds one pixel per
boundary, so it changes little where the membranes were already closed. Its failure mode (two seeds
in one cell cut it) is exactly what ``seed_threshold`` and ``seed_min_area`` control, and both are
chosen on out-of-fold predictions, kept only when they lower the OOF V_rand error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from skimage.measure import label as connected_components
from skimage.morphology import remove_small_objects
from skimage.segmentation import watershed

DEFAULT_THRESHOLD = 0.5  # membrane where prob > 0.5 unless the OOF chose another threshold


def cell_seeds(prob: np.ndarray, seed_threshold: float, seed_min_area: int) -> np.ndarray:
    """(h, w) int32 labels of the cell cores: 4-connected ``prob < seed_threshold`` of >= ``seed_min_area`` px."""
    cores = prob < seed_threshold
    if seed_min_area > 1:
        cores = remove_small_objects(cores, max_size=seed_min_area - 1, connectivity=1)
    return connected_components(cores, background=0, connectivity=1).astype(np.int32)


def watershed_lines(prob: np.ndarray, seed_threshold: float, seed_min_area: int) -> np.ndarray:
    """(h, w) bool: the one-pixel lines where the basins flooded from neighbouring cell cores meet."""
    prob = np.asarray(prob, dtype=np.float32)
    if prob.ndim != 2:
        raise ValueError(f"watershed_lines takes one (h, w) probability map, got shape {prob.shape}")
    seeds = cell_seeds(prob, seed_threshold, seed_min_area)
    if seeds.max() < 2:  # one basin or none: nothing to separate
        return np.zeros(prob.shape, bool)
    basins = watershed(prob, markers=seeds, connectivity=1, watershed_line=True)
    return basins == 0


def close_membrane_gaps(probs: np.ndarray, seed_threshold: float, seed_min_area: int) -> np.ndarray:
    """``probs`` (n, h, w) or (h, w) with every watershed-line pixel set to 1.0 (certain membrane).

    A new array (the input is not modified); still a probability map, so thresholding it at any
    threshold in [0, 1) gives the old membranes plus the lines. ``seed_threshold == 0`` changes nothing.
    """
    probs = np.asarray(probs, dtype=np.float32)
    out = probs.copy()
    if seed_threshold <= 0:
        return out
    flat = out.reshape(-1, *probs.shape[-2:])
    for prob in flat:
        prob[watershed_lines(prob, seed_threshold, seed_min_area)] = 1.0
    return out


@dataclass(frozen=True)
class MembranePostprocess:
    """Membrane where ``prob > threshold``, plus the watershed lines between cell cores when
    ``seed_threshold > 0`` (``close_membrane_gaps``); then cell regions smaller than
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
