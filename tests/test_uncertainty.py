"""The subject bootstrap: deterministic, covers the truth about 95 % of the time, and grouping matters."""

from __future__ import annotations

import numpy as np
import pytest

from nerveseg.evaluate.uncertainty import bootstrap_mean_interval, interval_for_ids, prediction_interval


def clustered_scores(rng: np.random.Generator, subjects: int = 20, per_subject: int = 15, true_mean: float = 0.6):
    """Per-image scores whose subjects differ (sd 0.1) more than what one more frame adds (sd 0.05)."""
    subject_means = true_mean + rng.normal(0.0, 0.1, subjects)
    scores = np.repeat(subject_means, per_subject) + rng.normal(0.0, 0.05, subjects * per_subject)
    return scores, np.repeat(np.arange(subjects), per_subject)


def test_same_seed_same_interval_and_estimate_is_the_mean() -> None:
    scores, groups = clustered_scores(np.random.default_rng(0))
    first = bootstrap_mean_interval(scores, groups, seed=5)
    assert first == bootstrap_mean_interval(scores, groups, seed=5)
    assert first != bootstrap_mean_interval(scores, groups, seed=6)
    assert first.estimate == pytest.approx(scores.mean())
    assert first.low < first.estimate < first.high
    assert (first.n_groups, first.unit) == (20, "subject")
    assert "95 % CI" in first.describe() and "20 subjects" in first.describe()


@pytest.mark.slow
def test_subject_interval_covers_the_truth_about_95_percent_and_image_interval_does_not() -> None:
    rng = np.random.default_rng(1)
    by_subject = by_image = 0
    trials = 200
    for trial in range(trials):
        scores, groups = clustered_scores(rng)
        by_subject += bootstrap_mean_interval(scores, groups, resamples=1000, seed=trial).contains(0.6)
        by_image += bootstrap_mean_interval(scores, None, resamples=1000, seed=trial).contains(0.6)
    # percentile bootstrap with 20 groups covers a little under 95 %; per image it ignores the clusters
    assert 0.85 <= by_subject / trials <= 0.99
    assert by_image / trials < 0.6


def test_grouping_widens_the_interval_when_subjects_differ() -> None:
    scores, groups = clustered_scores(np.random.default_rng(2))
    by_subject = bootstrap_mean_interval(scores, groups)
    by_image = bootstrap_mean_interval(scores)
    assert by_image.unit == "image" and by_image.n_groups == len(scores)
    assert (by_subject.high - by_subject.low) > 2 * (by_image.high - by_image.low)


def test_a_subject_counts_with_its_images() -> None:
    """The statistic is the image mean of the drawn subjects: one subject of all 1s and one of 0s."""
    scores = np.array([1.0, 1.0, 1.0, 0.0])
    interval = bootstrap_mean_interval(scores, np.array([0, 0, 0, 1]), resamples=2000)
    assert interval.estimate == 0.75
    assert interval.low == pytest.approx(0.0) and interval.high == pytest.approx(1.0)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="groups"):
        bootstrap_mean_interval(np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="finite"):
        bootstrap_mean_interval(np.array([0.5, np.nan]))
    with pytest.raises(ValueError, match="level"):
        bootstrap_mean_interval(np.zeros(3), level=95)


def test_interval_for_ids_uses_subjects_only_when_every_id_has_one() -> None:
    scores, groups = clustered_scores(np.random.default_rng(3), subjects=6, per_subject=4)
    ids = np.arange(1, len(scores) + 1)
    subject_of = dict(zip(ids.tolist(), groups.tolist(), strict=True))
    assert interval_for_ids(scores, ids, subject_of).unit == "subject"
    del subject_of[1]
    assert interval_for_ids(scores, ids, subject_of).unit == "image"
    assert interval_for_ids(scores, ids, None).unit == "image"


def test_prediction_interval_covers_the_mean_of_new_subjects_about_95_percent_and_the_ci_does_not() -> None:
    """Draw 20 CV subjects and 8 NEW ones from one population: the PI must cover the new subjects' mean
    about 95 % of the time; the CI of the mean (which ignores their own spread) covers it far less often."""
    rng = np.random.default_rng(3)
    by_pi = by_ci = 0
    trials = 200
    for trial in range(trials):
        scores, groups = clustered_scores(rng)
        new_scores, _ = clustered_scores(rng, subjects=8)
        new_mean = float(new_scores.mean())
        by_pi += prediction_interval(scores, groups, 8, resamples=1000, seed=trial).contains(new_mean)
        by_ci += bootstrap_mean_interval(scores, groups, resamples=1000, seed=trial).contains(new_mean)
    assert 0.88 <= by_pi / trials <= 0.99
    assert by_ci / trials < 0.8


def test_prediction_interval_narrows_towards_the_ci_as_the_new_set_grows() -> None:
    scores, groups = clustered_scores(np.random.default_rng(4))
    ci = bootstrap_mean_interval(scores, groups)
    widths = [
        prediction_interval(scores, groups, m).high - prediction_interval(scores, groups, m).low for m in (2, 8, 500)
    ]
    assert widths[0] > widths[1] > widths[2] > ci.high - ci.low
    assert widths[2] == pytest.approx(ci.high - ci.low, rel=0.1)  # m -> infinity leaves the mean's uncertainty


def test_prediction_interval_is_seeded_and_says_what_it_predicts() -> None:
    scores, groups = clustered_scores(np.random.default_rng(5))
    first = prediction_interval(scores, groups, 8, seed=1)
    assert first == prediction_interval(scores, groups, 8, seed=1)
    assert first.estimate == pytest.approx(scores.mean()) and first.new_groups == 8
    assert "95 % PI" in first.describe() and "for 8 new subjects, from 20 subjects" in first.describe()


@pytest.mark.parametrize("new_groups", [0, -1, 2.5, True])
def test_prediction_interval_refuses_a_bad_count_of_new_subjects(new_groups) -> None:
    with pytest.raises(ValueError, match="new_groups"):
        prediction_interval(np.zeros(4), np.array([0, 0, 1, 1]), new_groups)
