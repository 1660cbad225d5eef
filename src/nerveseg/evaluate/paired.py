"""Is run B really better than run A? A paired comparison of two runs' per-image scores, by subject.

Two cross-validations on the same data and the same fold split score the same images, each with a model that
never saw the image's subject. Their difference is then far more precise than either score's interval says:
a hard subject is hard for both runs, and that shared difficulty cancels in the difference. The unit that is
resampled stays the subject (a patient's frames are near-duplicates, see ``evaluate.uncertainty``), with the
same bootstrap as every other interval here, drawn on the per-image differences.

Two pairings:

* ``"image"`` (same data, same folds): the difference of the runs' reported scores, the image-weighted mean of
  the per-image differences, with subjects resampled.
* ``"subject"`` (other fold splits, e.g. two seeds): only the subjects are common ground, so each subject's mean
  score is compared and every subject weighs the same.

The verdict says "better", "worse" or "no detectable difference at this data size", from whether the
interval excludes zero, and beside it the smallest difference the data could detect: a true difference of
``mdd_factor`` bootstrap standard errors is found in 80 % of such comparisons at the 5 % level.

The interval is Hesterberg's *expanded* percentile interval: a plain percentile interval acts as if the spread
of the subjects were known, like a z interval where a t interval is due, and with few subjects it is too narrow
(with 6 subjects its "95 %" covers about 87 %). Its tails are moved so that their normal quantile is
``sqrt(n / (n - 1)) * t(n - 1)``: with 24 subjects the 95 % interval takes the 1.7 and 98.3 % percentiles, with 6
the 0.2 and 99.8 %; with many it is the plain one. A verdict of "better" then means what it says, even for a
small data set (T. Hesterberg, What teachers should know about the bootstrap, The American Statistician, 2015).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np
from scipy.stats import t as student_t

from nerveseg.evaluate.uncertainty import DEFAULT_RESAMPLES, DEFAULT_SEED, bootstrap_means, percentile_bounds

Pairing = Literal["image", "subject"]
BETTER, WORSE, NO_DIFFERENCE = "better", "worse", "no detectable difference at this data size"
POWER = 0.8  # the minimal detectable difference is found this often ...
TIE = 5e-5  # a subject whose difference rounds to 0.0000 "stayed"


def expanded_quantile(level: float, n_groups: int) -> float:
    """The normal quantile the expanded percentile interval reaches: ``sqrt(n / (n - 1))`` times Student's t
    quantile with n - 1 degrees of freedom (the plain normal quantile for one group, whose interval is a point)."""
    tail = 1.0 - (1.0 - level) / 2.0
    if n_groups < 2:
        return NormalDist().inv_cdf(tail)
    return math.sqrt(n_groups / (n_groups - 1)) * float(student_t.ppf(tail, n_groups - 1))


def expanded_level(level: float, n_groups: int) -> float:
    """The percentile level that gives a ``level`` interval for ``n_groups`` resampled groups (see the module)."""
    return 2.0 * NormalDist().cdf(expanded_quantile(level, n_groups)) - 1.0


def mdd_factor(level: float = 0.95, n_groups: int = 1_000_000, power: float = POWER) -> float:
    """Standard errors a true difference must span to be found with ``power`` by the interval of ``n_groups``."""
    return expanded_quantile(level, n_groups) + NormalDist().inv_cdf(power)


@dataclass(frozen=True)
class ImageScores:
    """One run's score of every out-of-fold image: what its headline CV score (``metric``) averages.

    ``ids`` image ids, ``subjects`` each image's subject (ISBI: the slice itself), ``folds`` the fold it was held
    out in, ``scores`` the per-image score (nerve: the cross-fitted post-processed Dice).
    """

    ids: np.ndarray
    subjects: np.ndarray
    folds: np.ndarray
    scores: np.ndarray
    metric: str

    def __post_init__(self) -> None:
        n = len(self.ids)
        if not (len(self.subjects) == len(self.folds) == len(self.scores) == n) or n == 0:
            raise ValueError(
                f"ImageScores needs one subject, fold and score per id and at least one id; got {n} ids, "
                f"{len(self.subjects)} subjects, {len(self.folds)} folds, {len(self.scores)} scores"
            )
        if len(np.unique(self.ids)) != n:
            raise ValueError("ImageScores ids must be unique")
        if not np.isfinite(np.asarray(self.scores, dtype=np.float64)).all():
            raise ValueError("ImageScores scores must be finite")

    def aligned_to(self, ids: np.ndarray) -> ImageScores:
        """The same scores in the order of ``ids`` (which must be exactly this run's ids)."""
        position = {image_id: k for k, image_id in enumerate(self.ids.tolist())}
        if len(ids) != len(position) or any(i not in position for i in ids.tolist()):
            raise ValueError("the two runs scored different images; pair them by subject instead")
        order = np.array([position[i] for i in ids.tolist()])
        return ImageScores(self.ids[order], self.subjects[order], self.folds[order], self.scores[order], self.metric)


def subject_means(scores: ImageScores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(subjects sorted, each subject's mean score, its image count)."""
    subjects, codes = np.unique(np.asarray(scores.subjects).astype(str), return_inverse=True)
    counts = np.bincount(codes)
    means = np.bincount(codes, weights=np.asarray(scores.scores, dtype=np.float64)) / counts
    return subjects, means, counts


def same_split(a: ImageScores, b: ImageScores) -> bool:
    """Whether both runs split the same images into the same groups of held-out images (whatever the groups'
    numbers: a fold is a set of images, and two runs that swap two folds' numbers trained on the same sets)."""
    if set(a.ids.tolist()) != set(b.ids.tolist()):
        return False
    return bool(np.array_equal(_in_order_of_appearance(a.folds), _in_order_of_appearance(b.aligned_to(a.ids).folds)))


def _in_order_of_appearance(folds: np.ndarray) -> np.ndarray:
    """Fold labels renumbered 0, 1, ... in the order they first appear."""
    _, first, codes = np.unique(np.asarray(folds), return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[codes]


@dataclass(frozen=True, eq=False)
class PairedDifference:
    """B - A, with its subject-bootstrap interval; ``share_better`` is the share of draws in which B is better."""

    difference: float
    low: float
    high: float
    share_better: float
    min_detectable: float
    improved: int
    worsened: int
    same: int
    pairing: Pairing
    higher_is_better: bool
    subjects: np.ndarray  # every paired subject, sorted by its difference
    subject_differences: np.ndarray  # B - A of each subject's mean
    level: float = 0.95

    @property
    def n_subjects(self) -> int:
        return len(self.subjects)

    @property
    def verdict(self) -> str:
        """``better`` or ``worse`` when the interval excludes zero, in the metric's direction."""
        if self.low > 0.0 or self.high < 0.0:
            return BETTER if (self.low > 0.0) == self.higher_is_better else WORSE
        return NO_DIFFERENCE

    def describe(self) -> str:
        """``better: +0.0312 (95 % CI +0.0101 to +0.0520, 24 subjects paired by image); the smallest difference
        this data could detect is 0.0290``"""
        return (
            f"{self.verdict}: {self.difference:+.4f} ({self.level * 100:.0f} % CI {self.low:+.4f} to {self.high:+.4f}, "
            f"{self.n_subjects} subjects paired by {self.pairing}); the smallest difference this data could detect "
            f"is {self.min_detectable:.4f}"
        )


def paired_difference(
    a: ImageScores,
    b: ImageScores,
    *,
    higher_is_better: bool,
    pairing: Pairing = "image",
    level: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> PairedDifference:
    """B - A paired by image (same images; the image-weighted mean difference) or by subject (each common
    subject's mean difference, equally weighted). Comparing a run with itself gives exactly 0 and [0, 0]."""
    if pairing == "image":
        b = b.aligned_to(a.ids)
        if not np.array_equal(np.asarray(a.subjects).astype(str), np.asarray(b.subjects).astype(str)):
            raise ValueError("the two runs give one image different subjects; they were not made on the same data")
        differences = np.asarray(b.scores, np.float64) - np.asarray(a.scores, np.float64)
        groups = np.asarray(a.subjects).astype(str)
        subjects, per_subject, _ = subject_means(ImageScores(a.ids, groups, a.folds, differences, a.metric))
    elif pairing == "subject":
        subjects, per_subject = _subject_differences(a, b)
        differences, groups = per_subject, subjects
    else:
        raise ValueError(f"pairing={pairing!r} must be 'image' or 'subject'")
    draws = bootstrap_means(differences, groups, resamples=resamples, seed=seed)
    low, high = percentile_bounds(draws.means, expanded_level(level, draws.n_groups))
    better = draws.means > 0.0 if higher_is_better else draws.means < 0.0
    spread = float(draws.means.std(ddof=1)) if resamples > 1 else 0.0
    sign = 1.0 if higher_is_better else -1.0
    order = np.argsort(per_subject, kind="stable")
    return PairedDifference(
        difference=float(differences.mean()),
        low=low,
        high=high,
        share_better=float(better.mean()),
        min_detectable=mdd_factor(level, draws.n_groups) * spread,
        improved=int(np.sum(sign * per_subject >= TIE)),
        worsened=int(np.sum(sign * per_subject <= -TIE)),
        same=int(np.sum(np.abs(per_subject) < TIE)),
        pairing=pairing,
        higher_is_better=higher_is_better,
        subjects=subjects[order],
        subject_differences=per_subject[order],
        level=level,
    )


def _subject_differences(a: ImageScores, b: ImageScores) -> tuple[np.ndarray, np.ndarray]:
    """The subjects both runs scored and B's mean minus A's mean for each."""
    subjects_a, means_a, _ = subject_means(a)
    subjects_b, means_b, _ = subject_means(b)
    common, in_a, in_b = np.intersect1d(subjects_a, subjects_b, return_indices=True)
    if len(common) == 0:
        raise ValueError("the two runs share no subject; there is nothing to pair")
    return common, means_b[in_b] - means_a[in_a]


__all__ = [
    "BETTER",
    "NO_DIFFERENCE",
    "TIE",
    "WORSE",
    "ImageScores",
    "PairedDifference",
    "Pairing",
    "expanded_level",
    "mdd_factor",
    "paired_difference",
    "same_split",
    "subject_means",
]
