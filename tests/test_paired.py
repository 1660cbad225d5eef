"""The paired comparison's statistics (``evaluate.paired``) and the per-image scores file, on hand-made scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nerveseg.errors import NervesegError
from nerveseg.evaluate.paired import (
    BETTER,
    NO_DIFFERENCE,
    WORSE,
    ImageScores,
    expanded_level,
    mdd_factor,
    paired_difference,
    same_split,
    subject_means,
)
from nerveseg.evaluate.uncertainty import bootstrap_mean_interval, bootstrap_means
from nerveseg.run.fold_files import load_image_scores, save_image_scores


def cv_scores(seed: int = 0, subjects: int = 24, images: int = 16, folds: int = 5) -> ImageScores:
    """Per-image Dice-like scores with a strong subject effect (hard and easy patients), as a CV gives them."""
    rng = np.random.default_rng(seed)
    subject = np.repeat(np.arange(1, subjects + 1), images)
    level = rng.uniform(0.3, 0.95, subjects)[subject - 1]
    scores = np.clip(level + rng.normal(0, 0.15, len(subject)), 0.0, 1.0)
    ids = np.array([f"{s}_{k}" for s, k in zip(subject, np.tile(np.arange(1, images + 1), subjects), strict=True)])
    return ImageScores(ids, subject.astype(str), (subject - 1) % folds, scores, "oof_score_postprocessed")


def with_scores(run: ImageScores, scores: np.ndarray) -> ImageScores:
    return ImageScores(run.ids, run.subjects, run.folds, scores, run.metric)


def test_a_run_compared_with_itself_differs_by_exactly_zero() -> None:
    a = cv_scores()
    diff = paired_difference(a, a, higher_is_better=True)
    assert (diff.difference, diff.low, diff.high) == (0.0, 0.0, 0.0)
    assert diff.share_better == 0.0 and diff.min_detectable == 0.0
    assert (diff.improved, diff.worsened, diff.same) == (0, 0, 24)
    assert diff.verdict == NO_DIFFERENCE
    assert "no detectable difference at this data size" in diff.describe()


def test_swapping_a_and_b_negates_the_difference() -> None:
    a, b = cv_scores(0), cv_scores(1)
    forward = paired_difference(a, b, higher_is_better=True)
    backward = paired_difference(b, a, higher_is_better=True)
    assert forward.difference == -backward.difference != 0.0
    assert forward.low == pytest.approx(-backward.high, abs=1e-12)
    assert forward.high == pytest.approx(-backward.low, abs=1e-12)
    assert forward.share_better + backward.share_better == pytest.approx(1.0)  # no draw is exactly 0
    assert (forward.improved, forward.worsened) == (backward.worsened, backward.improved)
    assert {forward.verdict, backward.verdict} in ({NO_DIFFERENCE}, {BETTER, WORSE})


@pytest.mark.parametrize("shift", [0.05, -0.02])
def test_a_constant_shift_is_found_with_its_sign_and_size(shift: float) -> None:
    a = cv_scores()
    diff = paired_difference(a, with_scores(a, a.scores + shift), higher_is_better=True)
    assert diff.difference == pytest.approx(shift, abs=1e-12)
    assert diff.low == pytest.approx(shift, abs=1e-12) and diff.high == pytest.approx(shift, abs=1e-12)
    assert diff.verdict == (BETTER if shift > 0 else WORSE)
    assert diff.share_better == (1.0 if shift > 0 else 0.0)
    assert (diff.improved, diff.worsened) == ((24, 0) if shift > 0 else (0, 24))
    lower = paired_difference(a, with_scores(a, a.scores + shift), higher_is_better=False)  # an error, say
    assert lower.verdict == (WORSE if shift > 0 else BETTER) and lower.difference == diff.difference


def test_noise_is_no_difference_and_twice_the_detectable_difference_is_found() -> None:
    a = cv_scores()
    rng = np.random.default_rng(5)
    noise = rng.normal(0, 0.03, 24)[a.subjects.astype(int) - 1] + rng.normal(0, 0.05, len(a.ids))
    same = paired_difference(a, with_scores(a, a.scores + noise - noise.mean()), higher_is_better=True)
    assert same.verdict == NO_DIFFERENCE and same.low < 0.0 < same.high
    assert 0.0 < same.min_detectable < 0.1
    # the paired interval is far narrower than either run's own interval, which holds the subject effect
    alone = bootstrap_mean_interval(a.scores, a.subjects)
    assert same.high - same.low < (alone.high - alone.low) / 3
    shifted = paired_difference(
        a, with_scores(a, a.scores + noise - noise.mean() + 2 * same.min_detectable), higher_is_better=True
    )
    assert shifted.verdict == BETTER and shifted.low <= 2 * same.min_detectable <= shifted.high
    assert shifted.share_better > 0.99


def test_pairing_by_subject_weighs_every_subject_the_same() -> None:
    ids = np.array(["1_1", "1_2", "1_3", "1_4", "2_1"])
    a = ImageScores(ids, np.array(["1", "1", "1", "1", "2"]), np.array([0, 0, 0, 0, 1]), np.zeros(5), "m")
    b = ImageScores(ids, a.subjects, np.array([0, 1, 0, 1, 0]), np.array([0.4, 0.4, 0.4, 0.4, 0.0]), "m")
    assert not same_split(a, b) and same_split(a, a)
    swapped = ImageScores(ids, a.subjects, 1 - a.folds, a.scores, "m")  # the same two folds, numbered the other way
    assert same_split(a, swapped) and not same_split(a, ImageScores(ids, a.subjects, np.zeros(5), a.scores, "m"))
    by_subject = paired_difference(a, b, higher_is_better=True, pairing="subject")
    assert by_subject.difference == pytest.approx(0.2)  # (0.4 + 0) / 2 subjects
    assert paired_difference(a, b, higher_is_better=True).difference == pytest.approx(0.32)  # 1.6 / 5 images
    assert by_subject.subjects.tolist() == ["2", "1"]  # sorted by difference
    assert (by_subject.improved, by_subject.same) == (1, 1)


def test_image_pairing_needs_the_same_images() -> None:
    a = cv_scores()
    fewer = ImageScores(a.ids[1:], a.subjects[1:], a.folds[1:], a.scores[1:], a.metric)
    with pytest.raises(ValueError, match="different images"):
        paired_difference(a, fewer, higher_is_better=True)
    assert not same_split(a, fewer)
    diff = paired_difference(a, fewer, higher_is_better=True, pairing="subject")
    assert diff.n_subjects == 24
    disjoint = ImageScores(a.ids, np.char.add("x", a.subjects), a.folds, a.scores, a.metric)
    with pytest.raises(ValueError, match="share no subject"):
        paired_difference(a, disjoint, higher_is_better=True, pairing="subject")


def test_shuffled_rows_are_paired_by_image_id() -> None:
    a, b = cv_scores(0), cv_scores(1)
    order = np.random.default_rng(0).permutation(len(b.ids))
    shuffled = ImageScores(b.ids[order], b.subjects[order], b.folds[order], b.scores[order], b.metric)
    assert same_split(a, shuffled)
    paired, in_order = (paired_difference(a, run, higher_is_better=True) for run in (shuffled, b))
    assert (paired.difference, paired.low, paired.high) == (in_order.difference, in_order.low, in_order.high)
    assert np.array_equal(paired.subject_differences, in_order.subject_differences)


def test_subject_means_and_the_detectable_difference_factor() -> None:
    scores = ImageScores(np.array(["a", "b", "c"]), np.array(["2", "10", "2"]), np.zeros(3), np.array([1, 0.5, 0]), "m")
    subjects, means, counts = subject_means(scores)
    assert subjects.tolist() == ["10", "2"] and means.tolist() == [0.5, 0.5] and counts.tolist() == [1, 2]
    assert mdd_factor() == pytest.approx(1.95996 + 0.84162, abs=1e-4)  # many subjects: the z test's 2.80


def test_few_subjects_widen_the_interval_as_a_t_interval_would() -> None:
    assert expanded_level(0.95, 1000) == pytest.approx(0.95, abs=1e-3)
    assert expanded_level(0.95, 24) == pytest.approx(0.9654, abs=1e-4)  # the 1.7 and 98.3 % percentiles
    assert expanded_level(0.95, 6) > 0.995
    assert mdd_factor(0.95, 6) > mdd_factor(0.95, 24) > mdd_factor(0.95, 1000)
    # six subject differences, two of them large: the plain percentile interval would exclude 0
    a = ImageScores(np.arange(6).astype(str), np.arange(6).astype(str), np.arange(6) % 2, np.zeros(6), "m")
    b = ImageScores(a.ids, a.subjects, a.folds, np.array([0.03, -0.37, 0.04, -0.87, 0.0, -0.75]), "m")
    diff = paired_difference(a, b, higher_is_better=True)
    plain = bootstrap_mean_interval(b.scores, b.subjects)
    assert plain.high < 0.0 < diff.high and diff.low < plain.low
    assert diff.verdict == NO_DIFFERENCE


def test_image_scores_refuse_inconsistent_arrays() -> None:
    with pytest.raises(ValueError, match="one subject, fold and score per id"):
        ImageScores(np.array(["a"]), np.array(["1", "2"]), np.zeros(1), np.zeros(1), "m")
    with pytest.raises(ValueError, match="unique"):
        ImageScores(np.array(["a", "a"]), np.array(["1", "1"]), np.zeros(2), np.zeros(2), "m")
    with pytest.raises(ValueError, match="finite"):
        ImageScores(np.array(["a"]), np.array(["1"]), np.zeros(1), np.array([np.nan]), "m")


def test_bootstrap_means_are_the_draws_behind_the_interval() -> None:
    a = cv_scores()
    draws = bootstrap_means(a.scores, a.subjects, resamples=2000, seed=3)
    interval = bootstrap_mean_interval(a.scores, a.subjects, resamples=2000, seed=3)
    assert (draws.n_groups, draws.unit) == (24, "subject")
    assert np.quantile(draws.means, [0.025, 0.975]).tolist() == [interval.low, interval.high]


def test_the_scores_file_round_trips_exactly_and_refuses_a_bad_one(tmp_path: Path) -> None:
    a = cv_scores()
    path = save_image_scores(tmp_path / "scores.csv", a)
    back = load_image_scores(path, source="scores.csv")
    assert back.metric == a.metric and back.ids.tolist() == a.ids.tolist()
    assert back.subjects.tolist() == a.subjects.tolist() and back.folds.tolist() == a.folds.tolist()
    assert np.array_equal(back.scores, a.scores)  # every float exactly
    for text in ("id,subject,fold,m\n1_1,1,0\n", "image,subject,fold,m\n1_1,1,0,0.5\n", "id,subject,fold,m\n", ""):
        path.write_text(text)
        with pytest.raises(NervesegError, match="is not a per-image scores file"):
            load_image_scores(path, source=str(path))
