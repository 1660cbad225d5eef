"""Is the synthetic set a fair stand-in? Scores of baselines that must stay well below a trained U-Net.

    .venv/bin/python benchmarks/synthetic_baselines.py                       # generates 24 subjects x 60 images
    .venv/bin/python benchmarks/synthetic_baselines.py --data data/raw       # an existing set in Kaggle's layout

Prints the competition score (mean Dice at 580x420, Dice = 1 when both masks are empty) of:

(a) the all-empty submission -- on the real data ~0.51-0.53, here about the empty share;
(b) the best plain intensity-threshold segmenter: smooth, threshold (bright or dark side), optionally keep the
    largest component inside the nerve's usual region, call the frame empty unless the kept area lies in a size
    window. Every setting is chosen on one half of the subjects and scored on the other half, then the halves
    swap; the mean of both is reported;
(c) the "average nerve" (pixels inside >= half of the chosen half's masks) predicted on every image.

On the real data a good U-Net reaches ~0.65-0.70, so (b) should stay within a few points of (a): intensity alone
must not find the nerve. The threshold search runs at 1/4 resolution for speed; the reported scores are full-res.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import cv2
import numpy as np

from nerveseg.paths import ORIG_HEIGHT, ORIG_WIDTH

try:  # the project's metric when present; the local copy below is the same definition
    from nerveseg.evaluate.metrics import dice_per_image
except ImportError:  # pragma: no cover - only while metrics.py does not exist yet

    def dice_per_image(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        truth = y_true.reshape(len(y_true), -1) != 0
        pred = y_pred.reshape(len(y_pred), -1) != 0
        inter = np.count_nonzero(truth & pred, axis=1)
        total = np.count_nonzero(truth, axis=1) + np.count_nonzero(pred, axis=1)
        return np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))


FACTOR = 4  # search resolution: 145 x 105
SMALL = (ORIG_WIDTH // FACTOR, ORIG_HEIGHT // FACTOR)  # cv2 order (w, h)
PIXEL_AREA = FACTOR * FACTOR  # full-res pixels per search pixel


@dataclass(frozen=True)
class SearchGrid:
    """Settings tried by the threshold search (areas in full-res pixels)."""

    sigmas: tuple[float, ...] = (1.0, 2.0, 4.0)  # smoothing at search resolution (4-16 full-res pixels)
    quantiles: tuple[float, ...] = tuple(float(q) for q in np.linspace(0.04, 0.96, 13))
    min_areas: tuple[float, ...] = (0, 2000, 4000, 6000)  # smaller kept regions -> empty
    max_areas: tuple[float, ...] = (12000, 25000, np.inf)  # larger kept regions -> empty


QUICK_GRID = SearchGrid(sigmas=(2.0,), quantiles=(0.1, 0.3, 0.7, 0.9), min_areas=(0, 4000), max_areas=(12000, np.inf))


@dataclass(frozen=True)
class ThresholdSetting:
    """One point of the search: smoothing, side, threshold, region of interest, component and area rules."""

    sigma: float
    bright: bool
    per_image: bool  # threshold is a quantile of each image (robust to gain) rather than a fixed grey level
    threshold: float  # grey level, or quantile in [0, 1] when per_image
    roi: bool
    largest: bool
    min_area: float
    max_area: float


def load_train(raw_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images (N,420,580) uint8, masks (N,420,580) {0,1} and subject ids from ``raw_dir/train``."""
    paths = sorted((raw_dir / "train").glob("*_mask.tif"))
    if not paths:
        raise SystemExit(f"error: no *_mask.tif in {raw_dir / 'train'}; pass --data pointing at Kaggle's layout")
    images = np.empty((len(paths), ORIG_HEIGHT, ORIG_WIDTH), np.uint8)
    masks = np.empty_like(images)
    subjects = np.empty(len(paths), np.int64)
    for i, mask_path in enumerate(paths):
        images[i] = cv2.imread(str(mask_path).replace("_mask.tif", ".tif"), cv2.IMREAD_GRAYSCALE)
        masks[i] = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) > 127
        subjects[i] = int(mask_path.name.split("_")[0])
    return images, masks, subjects


def _small(batch: np.ndarray, interpolation: int) -> np.ndarray:
    return np.stack([cv2.resize(x, SMALL, interpolation=interpolation) for x in batch])


def prior_roi(masks_small: np.ndarray) -> np.ndarray:
    """Region where the nerve lies in the given masks: the 2-98 % box of their pixels (search resolution)."""
    ys, xs = np.nonzero(masks_small.any(axis=0) if masks_small.any() else np.ones(masks_small.shape[1:]))
    weights = masks_small.sum(axis=0)[ys, xs].astype(np.float64)
    roi = np.zeros(masks_small.shape[1:], bool)

    def bounds(values: np.ndarray) -> tuple[int, int]:
        order = np.argsort(values)
        cumulative = np.cumsum(weights[order]) / max(weights.sum(), 1)
        return int(values[order][np.searchsorted(cumulative, 0.02)]), int(
            values[order][np.searchsorted(cumulative, 0.98)]
        )

    y0, y1 = bounds(ys)
    x0, x1 = bounds(xs)
    roi[y0 : y1 + 1, x0 : x1 + 1] = True
    return roi


def binarize(smooth: np.ndarray, levels: np.ndarray, bright: bool, roi: np.ndarray | None, largest: bool) -> np.ndarray:
    """Binary (N,h,w) prediction of a threshold rule on smoothed images; ``levels``: one grey level or one per image."""
    levels = np.asarray(levels, dtype=np.float32).reshape(-1, 1, 1)
    binary = smooth > levels if bright else smooth < levels
    if roi is not None:
        binary &= roi
    if largest:
        kept = np.zeros_like(binary)
        for i, b in enumerate(binary):
            n, labels, stats, _ = cv2.connectedComponentsWithStats(b.astype(np.uint8), connectivity=8)
            if n > 1:
                kept[i] = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        binary = kept
    return binary


def _smooth(images_small: np.ndarray, sigma: float) -> np.ndarray:
    return np.stack([cv2.GaussianBlur(x.astype(np.float32), (0, 0), sigma) for x in images_small])


def search_threshold(
    images_small: np.ndarray, masks_small: np.ndarray, grid: SearchGrid = SearchGrid()
) -> tuple[ThresholdSetting, float]:
    """Best setting on these images by mean Dice at search resolution (area gates evaluated in closed form)."""
    truth = masks_small.astype(bool)
    true_area = truth.sum(axis=(1, 2)) * PIXEL_AREA
    roi = prior_roi(masks_small)
    best: tuple[float, ThresholdSetting] | None = None
    for sigma in grid.sigmas:
        smooth = _smooth(images_small, sigma)
        grey_levels = np.quantile(smooth[:, ::3, ::3], grid.quantiles)
        image_levels = np.quantile(smooth.reshape(len(smooth), -1), grid.quantiles, axis=1)  # (Q, N)
        rules = [(False, float(t), t) for t in grey_levels]
        rules += [(True, float(q), levels) for q, levels in zip(grid.quantiles, image_levels, strict=True)]
        for (per_image, threshold, levels), bright, use_roi, largest in itertools.product(
            rules, (True, False), (False, True), (False, True)
        ):
            binary = binarize(smooth, levels, bright, roi if use_roi else None, largest)
            area = binary.sum(axis=(1, 2)) * PIXEL_AREA
            inter = (binary & truth).sum(axis=(1, 2)) * PIXEL_AREA
            for min_area, max_area in itertools.product(grid.min_areas, grid.max_areas):
                keep = (area >= min_area) & (area <= max_area) & (area > 0)
                total = true_area + np.where(keep, area, 0)
                dice = np.where(total == 0, 1.0, 2.0 * np.where(keep, inter, 0) / np.maximum(total, 1))
                score = float(dice.mean())
                if best is None or score > best[0]:
                    setting = ThresholdSetting(
                        sigma, bright, per_image, threshold, use_roi, largest, min_area, max_area
                    )
                    best = (score, setting)
    if best is None:
        raise ValueError("empty search grid")
    return best[1], best[0]


def apply_threshold(images_small: np.ndarray, setting: ThresholdSetting, roi: np.ndarray) -> np.ndarray:
    """Full-resolution masks (N,420,580) {0,1} from a threshold setting (computed small, upsampled nearest)."""
    smooth = _smooth(images_small, setting.sigma)
    if setting.per_image:
        levels = np.quantile(smooth.reshape(len(smooth), -1), setting.threshold, axis=1)
    else:
        levels = np.array([setting.threshold])
    binary = binarize(smooth, levels, setting.bright, roi if setting.roi else None, setting.largest).astype(np.uint8)
    out = np.zeros((len(images_small), ORIG_HEIGHT, ORIG_WIDTH), np.uint8)
    for i, b in enumerate(binary):
        area = int(b.sum()) * PIXEL_AREA
        if area and setting.min_area <= area <= setting.max_area:
            out[i] = cv2.resize(b, (ORIG_WIDTH, ORIG_HEIGHT), interpolation=cv2.INTER_NEAREST)
    return out


def average_nerve(masks: np.ndarray) -> np.ndarray:
    """Pixels inside at least half of the non-empty masks (the position prior alone), full resolution."""
    positive = masks[masks.reshape(len(masks), -1).any(axis=1)]
    if len(positive) == 0:
        return np.zeros(masks.shape[1:], np.uint8)
    frequency = positive.mean(axis=0, dtype=np.float32)
    return (frequency >= 0.5 * frequency.max()).astype(np.uint8)


@dataclass(frozen=True)
class BaselineScores:
    """Competition scores (mean Dice at 580x420) of the baselines on one set."""

    images: int
    subjects: int
    empty_share: float
    all_empty: float  # (a)
    threshold: float  # (b), mean over the two held-out halves
    threshold_on_search_half: float  # (b) on the half its settings were chosen on (optimistic)
    average_nerve: float  # (c), held-out halves
    settings: tuple[ThresholdSetting, ...]


def evaluate(
    images: np.ndarray, masks: np.ndarray, subjects: np.ndarray, grid: SearchGrid = SearchGrid()
) -> BaselineScores:
    """Two-fold (by subject) scores of the baselines."""
    unique = np.unique(subjects)
    if len(unique) < 2:
        raise ValueError("need at least 2 subjects to choose settings on one half and score the other")
    half = np.isin(subjects, unique[: len(unique) // 2])
    images_small = _small(images, cv2.INTER_AREA)
    masks_small = (_small(masks, cv2.INTER_AREA) > 0).astype(np.uint8)
    threshold_scores, search_scores, prior_scores, settings = [], [], [], []
    for fit, held in ((half, ~half), (~half, half)):
        setting, search_score = search_threshold(images_small[fit], masks_small[fit], grid)
        predictions = apply_threshold(images_small[held], setting, prior_roi(masks_small[fit]))
        threshold_scores.append(dice_per_image(masks[held], predictions).mean())
        search_scores.append(search_score)
        settings.append(setting)
        prior = np.broadcast_to(average_nerve(masks[fit]), masks[held].shape)
        prior_scores.append(dice_per_image(masks[held], prior).mean())
    return BaselineScores(
        images=len(images),
        subjects=len(unique),
        empty_share=float((~masks.reshape(len(masks), -1).any(axis=1)).mean()),
        all_empty=float(dice_per_image(masks, np.zeros_like(masks)).mean()),
        threshold=float(np.mean(threshold_scores)),
        threshold_on_search_half=float(np.mean(search_scores)),
        average_nerve=float(np.mean(prior_scores)),
        settings=tuple(settings),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="existing set in Kaggle's layout (reads DATA/train)")
    parser.add_argument("--subjects", type=int, default=24)
    parser.add_argument("--images-per-subject", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="small search grid (seconds instead of minutes)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="synthetic-baselines-") as tmp:
        raw_dir = args.data
        if raw_dir is None:
            from nerveseg.data.synthetic import generate

            raw_dir = Path(tmp) / "raw"
            start = time.perf_counter()
            generate(raw_dir, args.subjects, args.images_per_subject, 0, args.seed, test_masks_dir=Path(tmp) / "tm")
            seconds = time.perf_counter() - start
            n = args.subjects * args.images_per_subject
            print(f"generated {n} images in {seconds:.1f} s ({n / seconds:.1f} images/s)", file=sys.stderr)
        images, masks, subjects = load_train(raw_dir)
    start = time.perf_counter()
    result = evaluate(images, masks, subjects, QUICK_GRID if args.quick else SearchGrid())
    print(f"data: {raw_dir if args.data else f'synthetic, seed {args.seed}'}")
    print(f"images {result.images}, subjects {result.subjects}, empty share {result.empty_share:.3f}")
    print(f"(a) all-empty submission          {result.all_empty:.4f}")
    print(
        f"(b) best intensity threshold      {result.threshold:.4f}  (held-out halves; "
        f"{result.threshold_on_search_half:.4f} on the halves it was tuned on)"
    )
    print(f"(c) average nerve on every image  {result.average_nerve:.4f}")
    for setting in result.settings:
        print(f"    chosen: {setting}")
    print(f"(search and scoring took {time.perf_counter() - start:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
