"""``compare_runs``: is B (and C...) really better than A? Finished cross-validations compared pairwise with A,
and the comparison as people read it.

The runs are read through ``RunReader`` (a LocalStore folder or an MLflow run, alike) and checked first: one
task, one data set, and one fold split, which makes the comparison paired by image (the difference of the
reported scores, with subjects resampled: ``evaluate.paired``). Runs on other fold splits (another seed, another
K) are refused with one line unless ``allow_different_folds``; then their subject means are compared, with a
warning. Runs on other data are always refused: their subjects are not the same patients, whatever they are
called.

The table gives every run's score and, for each run after the baseline A, the paired difference from A with its
95 % interval, the share of bootstrap draws in which that run is better and how many subjects improved, worsened
or stayed; the verdict lines say what that means ("no detectable difference at this data size" included) and
the smallest difference the data could have detected. The plot shows the per-subject differences, sorted, with
the mean difference and its interval, so one subject that carries a whole "improvement" is seen at once.
"""

from __future__ import annotations

import csv
import io
import string
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from nerveseg.errors import NervesegError
from nerveseg.evaluate.paired import (
    TIE,
    ImageScores,
    PairedDifference,
    Pairing,
    paired_difference,
    same_split,
    subject_means,
)
from nerveseg.evaluate.uncertainty import DEFAULT_RESAMPLES, DEFAULT_SEED
from nerveseg.io_utils import atomic_create_bytes, atomic_write_bytes
from nerveseg.report.markdown import aligned_columns
from nerveseg.report.plots import figure_png
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


# ------------------------------------------------------------------------------------- the comparison as read

LETTERS = string.ascii_uppercase
IMPROVED_COLOUR, WORSENED_COLOUR, SAME_COLOUR = "#2ca02c", "#d62728", "#7f7f7f"
DPI = 110
MAX_SUBJECT_TICKS = 60  # more subjects than this: no subject labels under the bars


def letter(position: int) -> str:
    """A, B, ... Z, then R27, R28 ...: how the table names the run at ``position`` (0 = the baseline)."""
    return LETTERS[position] if position < len(LETTERS) else f"R{position + 1}"


def _rows(comparison: Comparison) -> list[list[str]]:
    header = ["run", "name", "score", "minus A", "95 % CI", "better in", "subjects +/-/=", "paired by"]
    a = comparison.baseline
    rows = [header, ["A", a.name, f"{a.score:.4f}", "", "", "", "", ""]]
    for position, (run, diff) in enumerate(zip(comparison.runs[1:], comparison.differences, strict=True), 1):
        rows.append(
            [
                letter(position),
                run.name,
                f"{run.score:.4f}",
                f"{diff.difference:+.4f}",
                f"{diff.low:+.4f} to {diff.high:+.4f}",
                f"{diff.share_better * 100:.0f} %",
                f"{diff.improved}/{diff.worsened}/{diff.same}",
                diff.pairing,
            ]
        )
    return rows


def direction(comparison: Comparison) -> str:
    return "higher is better" if comparison.higher_is_better else "lower is better"


def verdict_lines(comparison: Comparison) -> list[str]:
    """``B vs A: better: +0.0312 (95 % CI ...); the smallest difference this data could detect is 0.0290``"""
    return [f"{letter(position)} vs A: {diff.describe()}" for position, diff in enumerate(comparison.differences, 1)]


def format_comparison(comparison: Comparison) -> str:
    """The plain-text comparison: what is compared, the table, the runs' ids and one verdict line per run."""
    lines = [
        f"per-image {comparison.metric} ({direction(comparison)}), compared with A; intervals: subject bootstrap, "
        f"{comparison.resamples:,} draws",
        *aligned_columns(_rows(comparison)),
        "",
        *(f"{letter(k)} = {run.run_id}" for k, run in enumerate(comparison.runs)),
        "",
        *verdict_lines(comparison),
    ]
    return "\n".join(lines)


def format_markdown(comparison: Comparison, links: list[str]) -> str:
    """The comparison run's description: the verdicts, the table (aligned text: MLflow pads no pipe-table cell,
    see ``report.markdown``) and ``links`` (one per run, A first)."""
    return "\n".join(
        [
            f"**Paired comparison** of per-image `{comparison.metric}` ({direction(comparison)}), subject bootstrap "
            f"of {comparison.resamples:,} draws.",
            "",
            *(f"- {line}" for line in verdict_lines(comparison)),
            "",
            "```text",
            *aligned_columns(_rows(comparison)),
            "```",
            "",
            *(f"- {letter(k)}: {link}" for k, link in enumerate(links)),
        ]
    )


def subject_table(comparison: Comparison) -> list[list[str]]:
    """Rows of: subject, then each run's mean score of that subject ("" where a run did not score it)."""
    means = []
    for run in comparison.runs:
        subjects, values, _ = subject_means(run.scores)
        means.append(dict(zip(subjects.tolist(), values.tolist(), strict=True)))
    everyone = sorted(set().union(*means), key=_natural)
    header = ["subject", *(f"{letter(k)} {run.name}" for k, run in enumerate(comparison.runs))]
    return [header, *([s, *(f"{m[s]:.4f}" if s in m else "" for m in means)] for s in everyone)]


def _natural(subject: str) -> tuple[int, str]:
    return (int(subject), "") if subject.isdigit() else (1 << 62, subject)


def format_subject_table(comparison: Comparison) -> str:
    return "\n".join(aligned_columns(subject_table(comparison)))


def subject_csv(comparison: Comparison) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(subject_table(comparison))
    return buffer.getvalue()


def comparison_figure(comparison: Comparison) -> Figure:
    """One panel per run compared with A: its per-subject differences sorted, the mean and its interval."""
    count = len(comparison.differences)
    fig = Figure(figsize=(9, 3.2 * count), layout="constrained")
    for position, (run, diff) in enumerate(zip(comparison.runs[1:], comparison.differences, strict=True), 1):
        ax = fig.add_subplot(count, 1, position)
        sign = 1.0 if diff.higher_is_better else -1.0
        gain = sign * diff.subject_differences
        colours = np.where(gain >= TIE, IMPROVED_COLOUR, np.where(gain <= -TIE, WORSENED_COLOUR, SAME_COLOUR))
        x = np.arange(diff.n_subjects)
        ax.bar(x, diff.subject_differences, color=colours)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.axhspan(diff.low, diff.high, color="#1f77b4", alpha=0.2, label=f"{diff.level * 100:.0f} % CI of the mean")
        ax.axhline(diff.difference, color="#1f77b4", linestyle="--", label=f"mean {diff.difference:+.4f}")
        if diff.n_subjects <= MAX_SUBJECT_TICKS:
            ax.set_xticks(x, diff.subjects.tolist(), rotation=90, fontsize=7)
        ax.set_xlabel("subject (sorted by difference)")
        ax.set_ylabel(f"{letter(position)} - A")
        ax.set_title(f"{run.name} - {comparison.baseline.name}: {diff.verdict} ({direction(comparison)})", fontsize=9)
        ax.legend(loc="best", fontsize=7)
    return fig


def plot_comparison(comparison: Comparison, path: Path | str, *, new: bool = False) -> Path:
    """Draw :func:`comparison_figure` to a PNG at ``path``, written atomically; ``new``: never replace a file
    (``FileExistsError`` when ``path`` exists)."""
    png = figure_png(comparison_figure(comparison), DPI)
    (atomic_create_bytes if new else atomic_write_bytes)(path, png)
    return Path(path)


__all__ = [
    "ComparedRun",
    "Comparison",
    "compare_runs",
    "comparison_figure",
    "format_comparison",
    "format_markdown",
    "format_subject_table",
    "letter",
    "plot_comparison",
    "subject_csv",
    "subject_table",
    "verdict_lines",
]
