"""``compare_runs``: is B (and C...) really better than A? Finished cross-validations compared pairwise with A.

The runs are read through ``RunReader`` (a LocalStore folder or an MLflow run, alike) and checked first: one
task, one data set, and one fold split, which makes the comparison paired by image (the difference of the
reported scores, with subjects resampled: ``evaluate.paired``). Runs on other fold splits (another seed, another
K) are refused with one line unless ``allow_different_folds``; then their subject means are compared, with a
warning. Runs on other data are always refused: their subjects are not the same patients, whatever they are
called.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nerveseg.errors import NervesegError
from nerveseg.evaluate.paired import ImageScores, PairedDifference, Pairing, paired_difference, same_split
from nerveseg.evaluate.uncertainty import DEFAULT_RESAMPLES, DEFAULT_SEED
from nerveseg.run.store import RunReader
from nerveseg.tasks import get_task


@dataclass(frozen=True)
class ComparedRun:
    """One run as compared: how the user named it, its config's name, its per-image scores."""

    run_id: str
    name: str
    scores: ImageScores

    @property
    def score(self) -> float:
        """The mean of the per-image scores: the run's reported score of that metric."""
        return float(self.scores.scores.mean())


@dataclass(frozen=True)
class Comparison:
    """Every run (the baseline A first) and, for each of the others, its paired difference from A."""

    runs: list[ComparedRun]
    differences: list[PairedDifference]  # differences[k] is runs[k + 1] - runs[0]
    metric: str
    higher_is_better: bool
    resamples: int

    @property
    def baseline(self) -> ComparedRun:
        return self.runs[0]


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _label(reader: RunReader) -> str:
    return f"{reader.run_id} ({reader.name})"


def _check_same_task_and_data(readers: Sequence[RunReader]) -> str:
    """The one task of the runs; a one-line error for a mix of tasks or data sets."""
    first = readers[0]
    for other in readers[1:]:
        if other.task != first.task:
            raise NervesegError(
                f"{_label(other)} is a {other.task} run and {_label(first)} a {first.task} run; "
                "compare runs of one task"
            )
        if first.data_fingerprint and other.data_fingerprint and other.data_fingerprint != first.data_fingerprint:
            raise NervesegError(
                f"{_label(other)} was trained on other data than {_label(first)} (data fingerprint "
                f"{other.data_fingerprint[:12]} vs {first.data_fingerprint[:12]}); compare runs on the same data"
            )
    return first.task


def _pairing(a: ComparedRun, b: ComparedRun, allow_different_folds: bool, warn: Callable[[str], None]) -> Pairing:
    """By image when both runs held out the same images in the same folds; else by subject, if allowed."""
    if a.scores.metric != b.scores.metric:
        raise NervesegError(
            f"{b.run_id} ({b.name}) kept per-image {b.scores.metric} and {a.run_id} ({a.name}) {a.scores.metric}; "
            "they score different things"
        )
    if same_split(a.scores, b.scores):
        return "image"
    if not allow_different_folds:
        raise NervesegError(
            f"{b.run_id} ({b.name}) and {a.run_id} ({a.name}) were cross-validated on different fold splits "
            "(another seed or --folds); pass --allow-different-folds to compare their subject means only"
        )
    warn(
        f"warning: {b.name} and {a.name} have different fold splits: comparing subject means only (each subject "
        "weighs the same; less precise than pairing by image)"
    )
    return "subject"


def compare_runs(
    readers: Sequence[RunReader],
    *,
    allow_different_folds: bool = False,
    level: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    warn: Callable[[str], None] = _warn,
) -> Comparison:
    """Each run after the first compared with the first (B - A, C - A...), paired by image where the split allows."""
    if len(readers) < 2:
        raise NervesegError(f"compare needs at least two runs, got {len(readers)}")
    if resamples < 2:
        raise NervesegError(f"--resamples {resamples} is too few; pass at least 2 (10,000 is the default)")
    if seed < 0:
        raise NervesegError(f"--seed {seed} must be 0 or more")
    higher = get_task(_check_same_task_and_data(readers)).higher_is_better
    runs = [ComparedRun(reader.run_id, reader.name, reader.image_scores()) for reader in readers]
    differences = []
    for other in runs[1:]:
        pairing = _pairing(runs[0], other, allow_different_folds, warn)
        options = {"pairing": pairing, "level": level, "resamples": resamples, "seed": seed}
        differences.append(paired_difference(runs[0].scores, other.scores, higher_is_better=higher, **options))
    return Comparison(runs, differences, runs[0].scores.metric, higher, resamples)


__all__ = ["ComparedRun", "Comparison", "compare_runs"]
