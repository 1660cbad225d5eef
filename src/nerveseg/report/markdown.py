"""The cross-validation table as Markdown, for the parent run's description (``mlflow.note.content``).

The MLflow UI renders a run's description as Markdown, so the answer to "how good is this run" sits on the run
page instead of only in ``summary.json`` and the terminal. Numbers are rounded here, for reading only; the
logged metrics keep full precision. The inputs are plain values (not the ``CVSummary`` dataclass) so the
table does not change shape when the summary gains fields.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

DECIMALS = 4


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.{DECIMALS}f}"


def _interval(interval: tuple[float, float] | None) -> str:
    if interval is None:
        return ""
    low, high = interval
    if low > high:
        raise ValueError(f"an interval runs from low to high, got ({low}, {high}); pass (low, high)")
    return f"{_score(low)} – {_score(high)}"


def aligned_columns(rows: list[list[str]]) -> list[str]:
    """Rows of cells as text columns, two spaces apart (the widest cell sets each column's width)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


def _fold_rows(
    fold_scores: Mapping[int, float],
    kept_epochs: Mapping[int, int] | None,
    fold_intervals: Mapping[int, tuple[float, float]] | None,
) -> list[list[str]]:
    header = ["fold", "score"]
    if fold_intervals:
        header.append("95 % interval")
    if kept_epochs:
        header.append("kept epoch")
    rows = [header]
    for fold, score in sorted(fold_scores.items()):
        cells = [str(fold), _score(score)]
        if fold_intervals:
            cells.append(_interval(fold_intervals.get(fold)) or "n/a")
        if kept_epochs:
            epoch = kept_epochs.get(fold)
            cells.append("n/a" if epoch is None else str(epoch))
        rows.append(cells)
    return rows


def cv_markdown(
    fold_scores: Mapping[int, float],
    *,
    mean: float,
    std: float | None = None,
    interval: tuple[float, float] | None = None,
    oof: float | None = None,
    empty_baseline: float | None = None,
    postprocessed: float | None = None,
    kept_epochs: Mapping[int, int] | None = None,
    fold_intervals: Mapping[int, tuple[float, float]] | None = None,
    checkpoint_rule: str | None = None,
    title: str = "Cross-validation",
    notes: Sequence[str] = (),
) -> str:
    """A Markdown description: the summary rows that are given (mean ± std, 95 % interval of the mean, pooled OOF,
    all-empty baseline, OOF after post-processing), the per-fold table (score, optional 95 % interval, kept
    epoch), then the checkpoint rule and any ``notes`` as bullet points. ``None`` rows are left out.

    The tables are aligned text in a code block, not pipe tables: MLflow 3.17 renders pipe tables in a run's
    description without any cell padding, so "0.6847" and a kept epoch "12" read as "0.684712".
    Scores are the competition's Dice at 580x420; rounded to ``DECIMALS`` places for reading only.
    """
    if not fold_scores:
        raise ValueError("cv_markdown needs at least one fold score, got none")
    summary = [["mean over folds", _score(mean) + ("" if std is None else f" ± {_score(std)} (std)")]]
    if interval is not None:
        summary.append(["95 % interval of the mean", _interval(interval)])
    if oof is not None:
        summary.append(["OOF (all held-out images pooled)", _score(oof)])
    if empty_baseline is not None:
        summary.append(["all-empty prediction (the bar to beat)", _score(empty_baseline)])
    if postprocessed is not None:
        summary.append(["OOF after post-processing", _score(postprocessed)])
    # the summary first: MLflow shows only the first few lines of a description until "Show more" is clicked
    lines = [f"### {title}", "", "```text", *aligned_columns(summary), ""]
    lines += [*aligned_columns(_fold_rows(fold_scores, kept_epochs, fold_intervals)), "```", ""]
    bullets = [f"checkpoint rule: {checkpoint_rule}"] if checkpoint_rule else []
    bullets += list(notes)
    bullets.append(f"scores: competition Dice at 580x420, {DECIMALS} decimals here; metrics keep full precision")
    lines += [f"- {bullet}" for bullet in bullets]
    return "\n".join(lines) + "\n"
