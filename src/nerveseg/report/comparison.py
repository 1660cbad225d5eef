"""A comparison of runs as people read it: the table, one verdict line per run, each subject's means, the plot.

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
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from nerveseg.evaluate.paired import TIE, subject_means
from nerveseg.io_utils import atomic_create_bytes, atomic_write_bytes
from nerveseg.report.markdown import aligned_columns
from nerveseg.report.plots import figure_png
from nerveseg.run.comparison import Comparison

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
