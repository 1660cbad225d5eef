"""Did the CV predict the leaderboard? Every recorded submission's CV estimate beside its Kaggle scores.

The estimate is the CV run's cross-fitted post-processed OOF score; its 95 % prediction interval is sized for
Kaggle's test set, not for a CV fold: 5,508 test images whose subjects Kaggle does not give. Assumed here: the
test subjects have as many frames each as the training subjects (5,635 / 47 = 120), so the test set is about
5,508 / 120 = 46 new subjects (:func:`subjects_in_test_set`), and the interval is
``evaluate.uncertainty.prediction_interval`` of the run's per-image OOF scores for that many subjects. Both
leaderboards are drawn against that one interval. Assumed: Kaggle split the test images between its public and
private leaderboards at random, image by image (its usual way; the split is not published), so each holds frames
of nearly every test subject and the spread between subjects, which dominates the interval, is the same for both;
the smaller image count of each part adds a little noise the interval leaves out.

The plot: x is the CV estimate, y the leaderboard score; each submission's interval is the vertical bar at its
estimate (where the score was predicted to land), the dotted line y = x is a perfect prediction, and a score on
its bar lies inside the interval. The table says the same in numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from nerveseg.evaluate.uncertainty import Interval, prediction_interval
from nerveseg.report.markdown import aligned_columns

KAGGLE_TEST_IMAGES = 5508  # the competition's test set (sample_submission.csv's rows)
PUBLIC_COLOUR, PRIVATE_COLOUR, INTERVAL_COLOUR = "#1f77b4", "#d62728", "#9e9e9e"
DPI = 110


@dataclass(frozen=True)
class LeaderboardEntry:
    """One submission: its CV run's name, the estimate's interval for the test set (None without one: an ensemble
    of several runs has no single estimate) and its leaderboard scores (None until recorded)."""

    name: str
    submission_run_id: str
    interval: Interval | None
    public: float | None
    private: float | None


def subjects_in_test_set(test_images: int, train_images: int, train_subjects: int) -> int:
    """How many subjects ``test_images`` make at the training set's frames per subject (Kaggle: 46)."""
    if test_images < 1 or train_images < 1 or train_subjects < 1:
        raise ValueError(f"counts must be >= 1, got {test_images}, {train_images}, {train_subjects}")
    return max(1, round(test_images * train_subjects / train_images))


def interval_for_test_set(
    scores: np.ndarray, subjects: np.ndarray, test_images: int, new_subjects: int = 0
) -> Interval:
    """The 95 % prediction interval of the mean score on a test set of ``test_images`` images, from per-image OOF
    ``scores`` of ``subjects``: for ``new_subjects`` subjects, or (0) as many as the test images make at the
    training set's frames per subject."""
    scores, subjects = np.asarray(scores, dtype=np.float64), np.asarray(subjects)
    n = new_subjects or subjects_in_test_set(test_images, len(scores), len(np.unique(subjects)))
    return prediction_interval(scores, subjects, n)


def submission_message(name: str, interval: Interval | None) -> str:
    """The description a Kaggle submission gets by default: the run and its CV estimate with the interval."""
    if interval is None:
        return f"{name} (nerveseg)"
    return (
        f"{name}: CV estimate {interval.estimate:.4f}, 95 % PI {interval.low:.4f}-{interval.high:.4f} "
        f"for {interval.new_groups} test subjects (nerveseg)"
    )


def _inside(interval: Interval | None, score: float | None) -> str:
    if interval is None or score is None:
        return "-"
    return "yes" if interval.contains(score) else "NO"


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def leaderboard_table(entries: Sequence[LeaderboardEntry]) -> str:
    """One row per submission: run, submission run, estimate, PI (for how many subjects), public, private, and
    whether each score lies inside the interval."""
    rows = [["run", "submission run", "CV estimate", "95 % PI (test set)", "public", "private", "inside PI"]]
    for entry in entries:
        interval = entry.interval
        estimate = "-" if interval is None else f"{interval.estimate:.4f}"
        pi = "-" if interval is None else f"{interval.low:.4f}-{interval.high:.4f} ({interval.new_groups} subj.)"
        inside = f"{_inside(interval, entry.public)} / {_inside(interval, entry.private)}"
        scores = [_score(entry.public), _score(entry.private)]
        rows.append([entry.name, entry.submission_run_id[:12], estimate, pi, *scores, inside])
    lines = aligned_columns(rows)
    lines.append("(inside PI: public / private; PI: where the test set's score was predicted to land)")
    return "\n".join(lines)


def plottable(entries: Sequence[LeaderboardEntry]) -> list[LeaderboardEntry]:
    """The entries the plot can draw: an estimate and at least one leaderboard score."""
    return [e for e in entries if e.interval is not None and (e.public is not None or e.private is not None)]


def trust_your_cv_figure(entries: Sequence[LeaderboardEntry]) -> Figure:
    """x: CV estimate, y: leaderboard score; each submission's interval as a bar at its estimate, y = x dotted."""
    drawn = plottable(entries)
    if not drawn:
        raise ValueError("no entry has both a CV estimate and a leaderboard score; record a score first")
    fig = Figure(figsize=(6.4, 5.6), layout="constrained")
    ax = fig.add_subplot()
    values = []
    for i, entry in enumerate(drawn):
        interval = entry.interval
        assert interval is not None
        x = interval.estimate
        ax.plot([x, x], [interval.low, interval.high], color=INTERVAL_COLOUR, linewidth=6, alpha=0.6,
                solid_capstyle="butt", label="95 % PI for the test set" if i == 0 else None)  # fmt: skip
        for score, colour, marker, label in (
            (entry.public, PUBLIC_COLOUR, "o", "public leaderboard"),
            (entry.private, PRIVATE_COLOUR, "s", "private leaderboard"),
        ):
            if score is not None:
                ax.scatter([x], [score], color=colour, marker=marker, zorder=3, label=label if i == 0 else None)
                values.append(score)
        ax.annotate(entry.name, (x, interval.high), textcoords="offset points", xytext=(4, 2), fontsize=8)
        values += [interval.low, interval.high, x]
    low, high = min(values), max(values)
    pad = max(0.02, 0.08 * (high - low))
    limits = (low - pad, high + pad)
    ax.plot(limits, limits, linestyle=":", color="black", linewidth=1, label="y = x (CV predicts the leaderboard)")
    ax.set_xlim(limits)
    ax.set_ylim(limits)
    ax.set_aspect("equal")
    ax.set_xlabel("CV estimate (cross-fitted OOF + post-processing)")
    ax.set_ylabel("Kaggle leaderboard score (mean Dice)")
    subjects = sorted({e.interval.new_groups for e in drawn if e.interval is not None})
    ax.set_title(f"Trust your CV? {len(drawn)} submission(s); PI for {', '.join(map(str, subjects))} test subjects")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return fig


__all__ = [
    "KAGGLE_TEST_IMAGES",
    "LeaderboardEntry",
    "interval_for_test_set",
    "leaderboard_table",
    "plottable",
    "subjects_in_test_set",
    "submission_message",
    "trust_your_cv_figure",
]
