"""Post-processing decided on out-of-fold predictions, then applied unchanged to the test set.

nnU-Net's rule: a step is kept only if it RAISES the cross-validation score; the decision is a
small JSON-able dict (``postprocessing.json`` on the CV run) that inference applies later.
The steps are tried greedily in a fixed order, each given the ones already kept:

1. ``threshold`` on the probability (0.5 unless another candidate scores higher),
2. ``largest_component``: keep only the largest 8-connected component (every real nerve mask is
   one component, so stray blobs can only cost Dice),
3. ``min_area``: empty a mask whose area (full resolution, after step 2) is below it — an empty
   prediction scores 1.0 on the 59 % of images without a nerve, a small wrong blob scores 0,
4. ``presence_threshold``: empty a mask when the presence head's probability is below it
   (only for models with a presence head).

Everything is judged at Kaggle's 580x420: probabilities are resized chunk by chunk (so 5635
OOF images never sit in memory at full resolution), and each chunk is resized ONCE; for every
image and candidate threshold we keep four integers (predicted area, its overlap with the truth,
and the same two for the largest component). Every later choice (minimum area, presence gate)
only re-weighs those integers, so the whole grid costs one pass over the pixels.
Speed (``benchmarks/submit_throughput.py``, 2-core CPU): the search costs a few ms per OOF image
(about 5 s per 1000 images, i.e. well under a minute for Kaggle's 5635); applying the decision to a
test image (resize, threshold, largest component inside the mask's bounding box) about 1 ms.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from nerveseg.errors import NervesegError
from nerveseg.evaluate.metrics import dice_from_counts, to_full_resolution
from nerveseg.evaluate.postprocess_settings import (
    DEFAULT_THRESHOLD,
    PostprocessDecision,
    PostprocessSettings,
    as_settings,
)
from nerveseg.logs import progress_bar
from nerveseg.paths import FULL_SHAPE, ORIG_HEIGHT, ORIG_WIDTH

THRESHOLDS: tuple[float, ...] = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)
MIN_AREAS: tuple[int, ...] = (1000, 1500, 2000, 2500, 3000, 3500, 4000, 4500, 5000, 6000)
PRESENCE_THRESHOLDS: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
# A step must beat the current score by more than float noise to count as "raising" it.
MIN_GAIN = 1e-9

MasksGetter = Callable[[np.ndarray], np.ndarray]


# --------------------------------------------------------------------------------------------- apply


def _bounding_box(binary: np.ndarray) -> tuple[slice, slice] | None:
    """The smallest window holding every True pixel of a 2-D mask, or None when it is empty."""
    rows = np.flatnonzero(binary.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(binary.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _largest_label(mask: np.ndarray) -> tuple[np.ndarray, int] | None:
    """Labels of ``mask`` (uint8 0/1) and the label of its largest 8-connected component; None when the
    mask has at most one component (nothing to remove)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 2:  # background plus at most one component
        return None
    return labels, 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def largest_component(mask: np.ndarray) -> np.ndarray:
    """``mask`` (uint8 0/1) reduced to its largest 8-connected component (a new array)."""
    found = _largest_label(mask)
    if found is None:
        return mask.copy()
    labels, keep = found
    return (labels == keep).astype(np.uint8)


def apply_postprocessing(
    probs_full: np.ndarray, settings: PostprocessSettings | Mapping[str, Any], presence: np.ndarray | None = None
) -> np.ndarray:
    """Binary uint8 (n, 420, 580) masks from full-resolution probabilities; the input is not modified.

    ``presence`` (n,) is required when ``settings.presence_threshold`` is set; a parsed JSON mapping
    is accepted for ``settings`` and validated.
    """
    settings = as_settings(settings)
    threshold, largest, min_area = settings.threshold, settings.largest_component, settings.min_area
    presence_threshold = settings.presence_threshold
    probs_full = np.asarray(probs_full)
    if probs_full.ndim == 2:
        probs_full = probs_full[None]
    if probs_full.ndim != 3 or probs_full.shape[1:] != FULL_SHAPE:
        raise NervesegError(
            f"apply_postprocessing takes (n, {ORIG_HEIGHT}, {ORIG_WIDTH}) probabilities, got {probs_full.shape}; "
            "resize model outputs with nerveseg.evaluate.metrics.to_full_resolution first "
            "(min_area is in full-size pixels)"
        )
    if presence_threshold is not None:
        if presence is None:
            raise NervesegError(
                f"post-processing gates on presence >= {presence_threshold}, but no presence probabilities were "
                "given; the model needs its presence head (presence_head: true)"
            )
        presence = np.asarray(presence, dtype=np.float64).reshape(-1)
        if presence.shape[0] != probs_full.shape[0]:
            raise NervesegError(f"presence has {presence.shape[0]} values for {probs_full.shape[0]} images")
    masks = np.zeros(probs_full.shape, dtype=np.uint8)
    for i, prob in enumerate(probs_full):
        binary = prob > threshold  # a Python float compares in the probabilities' dtype
        window = _bounding_box(binary)
        if window is None:
            continue
        # Work inside the mask's bounding box: a trained model's blob covers a few % of the image.
        crop = binary[window].view(np.uint8)
        if largest:
            crop = largest_component(np.ascontiguousarray(crop))
        if min_area > 0 and np.count_nonzero(crop) < min_area:
            continue
        masks[i][window] = crop
    if presence_threshold is not None:
        masks[presence < presence_threshold] = 0
    return masks


def iter_postprocessed(
    probs: np.ndarray,
    settings: PostprocessSettings | Mapping[str, Any],
    presence: np.ndarray | None = None,
    *,
    chunk_size: int = 64,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, masks)`` for model-size probabilities (N, h, w), chunk by chunk at full resolution.

    5508 test masks at 580x420 are 1.3 GB; callers encode each chunk and let it go.
    """
    settings = as_settings(settings)
    if chunk_size < 1:
        raise NervesegError(f"chunk_size={chunk_size} must be >= 1")
    for start in range(0, len(probs), chunk_size):
        stop = min(start + chunk_size, len(probs))
        chunk_presence = None if presence is None else np.asarray(presence)[start:stop]
        yield start, apply_postprocessing(to_full_resolution(probs[start:stop]), settings, chunk_presence)


# -------------------------------------------------------------------------------------------- decide


def _image_stats(prob: np.ndarray, truth: np.ndarray, thresholds: np.ndarray, out: np.ndarray) -> None:
    """Fill ``out`` (T, 4) with area, overlap, largest-component area and its overlap per threshold.

    Works on the bounding box of ``prob > min(thresholds)`` (a superset of every candidate mask),
    which is small for a trained model's blobs, so connected components stay cheap.
    """
    out[:] = 0
    window = _bounding_box(prob > float(thresholds[0]))
    if window is None:
        return
    prob_crop, truth_crop = prob[window], truth[window] != 0
    for j, threshold in enumerate(thresholds.tolist()):
        # a Python float compares in the probabilities' dtype, exactly as apply_postprocessing does
        binary = prob_crop > threshold
        area = np.count_nonzero(binary)
        if area == 0:
            break  # thresholds ascend: every higher one is empty too
        inter = np.count_nonzero(binary & truth_crop)
        found = _largest_label(binary.view(np.uint8))
        if found is None:
            out[j] = (area, inter, area, inter)
        else:
            kept = found[0] == found[1]
            out[j] = (area, inter, np.count_nonzero(kept), np.count_nonzero(kept & truth_crop))


def _validate_decide_inputs(oof_probs: np.ndarray, oof_presence: np.ndarray | None) -> None:
    if oof_probs.ndim != 3 or len(oof_probs) == 0:
        raise NervesegError(
            f"decide_postprocessing takes (N, h, w) OOF probabilities with N > 0, got {oof_probs.shape}"
        )
    if not np.isfinite(oof_probs).all() or oof_probs.min() < 0.0 or oof_probs.max() > 1.0:
        raise NervesegError("OOF probabilities must be finite and in [0, 1]; were they logits or a failed fold?")
    if oof_presence is not None and np.asarray(oof_presence).reshape(-1).shape[0] != len(oof_probs):
        raise NervesegError(
            f"oof_presence has {np.asarray(oof_presence).size} values for {len(oof_probs)} OOF images; "
            "they must be aligned with oof_probs"
        )


def _masks_getter(full_masks: MasksGetter | np.ndarray) -> MasksGetter:
    if callable(full_masks):
        return full_masks
    array = np.asarray(full_masks)
    return lambda index: array[index]


def _candidate_step(
    name: str, scores: dict[Any, float], current_score: float, current_value: Any
) -> tuple[dict[str, Any], Any, float]:
    """Pick the best candidate and keep it only if it raises ``current_score``."""
    best_value = max(scores, key=lambda v: (scores[v], -abs(float(v) - float(current_value or 0))))
    best_score = scores[best_value]
    kept = best_score > current_score + MIN_GAIN
    step = {
        "step": name,
        "score_before": current_score,
        "candidates": {str(k): v for k, v in scores.items()},
        "best": best_value,
        "best_score": best_score,
        "kept": bool(kept),
        "score_after": best_score if kept else current_score,
    }
    return step, (best_value if kept else current_value), (best_score if kept else current_score)


def _collect_stats(
    oof_probs: np.ndarray, get_masks: MasksGetter, candidates: np.ndarray, chunk_size: int, progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The one pass over the pixels: per image and threshold (area, overlap, LC area, LC overlap), and
    the true area per image."""
    n = len(oof_probs)
    stats = np.zeros((n, len(candidates), 4), dtype=np.int64)
    truth_area = np.zeros(n, dtype=np.int64)
    starts = range(0, n, chunk_size)
    for start in progress_bar(starts, desc="post-processing search", unit="chunk", disable=not progress, leave=False):
        index = np.arange(start, min(start + chunk_size, n))
        probs_full = to_full_resolution(oof_probs[index])
        truths = np.asarray(get_masks(index))
        if truths.shape != probs_full.shape:
            raise NervesegError(
                f"full_masks returned shape {truths.shape} for {len(index)} images; expected {probs_full.shape} "
                "(ground truth at 580x420, aligned with the OOF probabilities)"
            )
        truth_area[index] = np.count_nonzero(truths.reshape(len(index), -1), axis=1)
        for k, i in enumerate(index):
            _image_stats(probs_full[k], truths[k], candidates, stats[i])
    return stats, truth_area


@dataclass
class _Search:
    """The per-image integers of :func:`_collect_stats` and the steps kept so far."""

    stats: np.ndarray
    truth_area: np.ndarray
    candidates: np.ndarray
    steps: list[dict[str, Any]] = field(default_factory=list)

    def dice(self, threshold: float, largest: bool) -> tuple[np.ndarray, np.ndarray]:
        """Per-image Dice and predicted area at ``threshold`` (with or without the largest component)."""
        t_index = int(np.flatnonzero(np.isclose(self.candidates, threshold))[0])
        offset = 2 if largest else 0
        area, inter = self.stats[:, t_index, offset], self.stats[:, t_index, offset + 1]
        return dice_from_counts(inter, area + self.truth_area), area

    def step(self, name: str, scores: dict[Any, float], score: float, value: Any) -> tuple[Any, float]:
        record, value, score = _candidate_step(name, scores, score, value)
        self.steps.append(record)
        return value, score


def _choose_settings(
    search: _Search, oof_presence: np.ndarray | None, min_areas: tuple[int, ...], presence_thresholds: tuple[float, ...]
) -> tuple[PostprocessSettings, float, float]:
    """The greedy steps (threshold, largest component, minimum area, presence gate); returns the settings,
    the raw score (threshold 0.5) and the score with the kept steps."""
    raw_score = float(search.dice(DEFAULT_THRESHOLD, False)[0].mean())
    scores = {float(t): float(search.dice(t, False)[0].mean()) for t in search.candidates}
    threshold, score = search.step("threshold", scores, raw_score, DEFAULT_THRESHOLD)
    lc_score = float(search.dice(threshold, True)[0].mean())
    largest, score = search.step("largest_component", {True: lc_score}, score, False)
    kept_dice, area = search.dice(threshold, largest)
    empty_dice = (search.truth_area == 0).astype(np.float64)  # what an emptied prediction scores
    scores = {int(m): float(np.where(area < m, empty_dice, kept_dice).mean()) for m in min_areas if m > 0}
    min_area = 0
    if scores:
        min_area, score = search.step("min_area", scores, score, 0)
    kept_dice = np.where(area < min_area, empty_dice, kept_dice)
    presence_threshold: float | None = None
    if oof_presence is None:
        search.steps.append({"step": "presence_threshold", "skipped": "the model has no presence head", "kept": False})
    else:
        presence = np.asarray(oof_presence, dtype=np.float64).reshape(-1)
        scores = {float(p): float(np.where(presence < p, empty_dice, kept_dice).mean()) for p in presence_thresholds}
        presence_threshold, score = search.step("presence_threshold", scores, score, None)
    settings = PostprocessSettings(float(threshold), bool(largest), int(min_area), presence_threshold)
    return settings, raw_score, float(score)


def decide_postprocessing(
    oof_probs: np.ndarray,
    full_masks: MasksGetter | np.ndarray,
    oof_presence: np.ndarray | None = None,
    *,
    thresholds: tuple[float, ...] = THRESHOLDS,
    min_areas: tuple[int, ...] = MIN_AREAS,
    presence_thresholds: tuple[float, ...] = PRESENCE_THRESHOLDS,
    chunk_size: int = 128,
    progress: bool = True,
) -> PostprocessDecision:
    """Choose threshold, largest component, minimum area and presence gate on OOF predictions.

    ``oof_probs`` (N, h, w) are model-size probabilities in the order of ``full_masks(index)``,
    which returns (n, 420, 580) ground truth (``PreparedData.full_masks``; an array also works).
    Returns the settings for :func:`apply_postprocessing` with ``oof_score_raw`` (threshold 0.5,
    nothing else), ``oof_score`` (with the kept steps) and the steps tried.
    """
    started = time.perf_counter()
    oof_probs = np.asarray(oof_probs)
    _validate_decide_inputs(oof_probs, oof_presence)
    if chunk_size < 1:
        raise NervesegError(f"chunk_size={chunk_size} must be >= 1")
    candidates = np.array(sorted({float(t) for t in (*thresholds, DEFAULT_THRESHOLD)}), dtype=np.float64)
    stats, truth_area = _collect_stats(oof_probs, _masks_getter(full_masks), candidates, chunk_size, progress)
    search = _Search(stats, truth_area, candidates)
    settings, raw_score, score = _choose_settings(search, oof_presence, min_areas, presence_thresholds)
    return PostprocessDecision(
        settings=settings,
        oof_score_raw=raw_score,
        oof_score=score,
        n_images=len(oof_probs),
        steps=tuple(search.steps),
        seconds=round(time.perf_counter() - started, 3),
    )
