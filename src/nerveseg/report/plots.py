"""Figures logged with every cross-validation run: learning curves and an all-folds progress figure.

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas, never through pyplot,
so nothing depends on a display or on global pyplot state, and training processes can draw safely.
Each decision a figure makes (where to clip the loss axis, whether the learning rate deserves a line)
is a small pure function, so it can be tested without looking at pixels. The nerve CV's OOF gallery,
its error breakdown and the per-subject scores are in ``nerveseg.tasks.nerve.gallery``.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from nerveseg.io_utils import atomic_write_bytes

LR_COLOUR = "#7f7f7f"
# Tukey's "far out" fence: a loss above q3 + 3 IQR (an epoch-1 val_loss of 15.8 among values near 1) is
# drawn at the top edge instead of stretching the axis so far that the rest of the curve looks flat.
FENCE_IQR = 3.0


def figure_png(fig: Figure, dpi: int) -> bytes:
    """``fig`` rendered with the Agg canvas as PNG bytes."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_figure(fig: Figure, path: Path | str, dpi: int) -> Path:
    """Render ``fig`` and write it as a PNG atomically (a crash never leaves half a figure)."""
    path = Path(path)
    atomic_write_bytes(path, figure_png(fig, dpi))
    return path


# ------------------------------------------------------------------------------------- learning curves


def loss_axis_top(values: Sequence[float] | np.ndarray) -> float | None:
    """Where to cut the loss axis, or None when every value fits: just above q3 + 3 IQR of the finite values.

    Only outliers far above the bulk are cut (a diverged first epoch); a curve that simply falls from 1.2 to 0.3
    keeps its full range. Fewer than four values are never cut: there is no bulk to compare with.
    """
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size < 4:
        return None
    q1, q3 = np.percentile(finite, [25, 75])
    fence = q3 + FENCE_IQR * max(q3 - q1, 1e-12)
    if finite.max() <= fence:
        return None
    below = finite[finite <= fence]
    low = float(below.min())
    return float(below.max() + 0.08 * (below.max() - low) + 1e-12)


def learning_rate_changes(learning_rates: Sequence[float] | None, *, rtol: float = 1e-6) -> bool:
    """True when the learning rate varies over the epochs: only then is it worth a line."""
    if not learning_rates:
        return False
    lr = np.asarray(learning_rates, dtype=np.float64)
    return bool(np.ptp(lr) > rtol * np.max(np.abs(lr)))


def _clip_loss_axis(ax: Axes, values: list[float]) -> str:
    """Cut the loss axis at ``loss_axis_top``; returns the note for the title ("" when nothing was cut)."""
    top = loss_axis_top(values)
    if top is None:
        return ""
    low = min(v for v in values if np.isfinite(v))
    ax.set_ylim(min(0.0, low), top)
    return f"loss axis cut at {top:.3g} (max {max(values):.3g})"


def _loss_panel(ax: Axes, history: Mapping[str, Sequence[float]]) -> str:
    """Train and validation loss, clipped, with the learning rate on a secondary axis when it changes."""
    plotted: list[float] = []
    for name, label, style in (("loss", "train_loss", "-"), ("val_loss", "val_loss", "--")):
        values = list(history.get(name) or [])
        if values:
            ax.plot(np.arange(1, len(values) + 1), values, style, marker="o", markersize=3, label=label)
            plotted += values
    ax.set_ylabel("loss")
    note = _clip_loss_axis(ax, plotted) if plotted else ""
    lr = history.get("learning_rate")
    if lr and not learning_rate_changes(lr):
        note = "; ".join(part for part in (note, f"learning rate {lr[0]:.3g} throughout") if part)
    if learning_rate_changes(lr):
        lr_ax = ax.twinx()
        lr_ax.plot(np.arange(1, len(lr) + 1), lr, color=LR_COLOUR, linewidth=1, label="learning rate")
        lr_ax.set_yscale("log")
        lr_ax.set_ylabel("learning rate", color=LR_COLOUR)
        lr_ax.tick_params(axis="y", colors=LR_COLOUR, labelsize=7)
        lines, labels = lr_ax.get_legend_handles_labels()
        ax.legend(ax.get_legend_handles_labels()[0] + lines, ax.get_legend_handles_labels()[1] + labels, fontsize=8)
    elif plotted:
        ax.legend(fontsize=8)
    return note


def plot_learning_curves(
    history: Mapping[str, Sequence[float]],
    path: Path | str,
    *,
    kept_epoch: int | None = None,
    best_epoch: int | None = None,
    title: str = "",
) -> Path:
    """Loss (left) and Dice (right) per epoch for training and validation, the kept epoch marked.

    Epochs are numbered from 1 as Keras prints them. ``kept_epoch`` (1-based, as ``FoldResult.best_epoch``;
    ``best_epoch`` is its older name) gets a dotted line and its val_dice a star: the weights that were kept.
    The learning rate appears, on a secondary axis of the loss panel, only when it changes.
    """
    kept = kept_epoch if kept_epoch is not None else best_epoch
    return save_figure(learning_curves_figure(history, kept_epoch=kept, title=title), path, dpi=100)


def learning_curves_figure(
    history: Mapping[str, Sequence[float]], *, kept_epoch: int | None = None, title: str = ""
) -> Figure:
    """The figure ``plot_learning_curves`` saves (axes: loss, Dice, and the learning rate's when it changes)."""
    kept = kept_epoch
    fig = Figure(figsize=(9.0, 3.5), layout="constrained")
    loss_ax, dice_ax = fig.subplots(1, 2)
    note = _loss_panel(loss_ax, history)
    for name, label, style in (("dice", "train_dice", "-"), ("val_dice", "val_dice", "--")):
        values = history.get(name)
        if values:
            dice_ax.plot(np.arange(1, len(values) + 1), values, style, marker="o", markersize=3, label=label)
    val_dice = history.get("val_dice")
    if kept is not None and val_dice and 1 <= kept <= len(val_dice):
        dice_ax.plot([kept], [val_dice[kept - 1]], "*", color="black", markersize=11,
                     label=f"kept epoch {kept}: val_dice {val_dice[kept - 1]:.3f}")  # fmt: skip
    dice_ax.set_ylabel("Dice (threshold 0.5)")
    for ax in (loss_ax, dice_ax):
        if kept is not None:
            ax.axvline(kept, color="grey", linewidth=1, linestyle=":")
    if dice_ax.get_legend_handles_labels()[0]:
        dice_ax.legend(fontsize=8)
    return _epoch_axes(fig, (loss_ax, dice_ax), title, note)


def _epoch_axes(fig: Figure, axes: Sequence[Axes], title: str, note: str) -> Figure:
    """Both figures' finish: epochs on integer ticks, a light grid, the title and the axis note as heading."""
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    heading = "; ".join(part for part in (title, note) if part)
    if heading:
        fig.suptitle(heading, fontsize=10)
    return fig


def plot_progress(
    histories: Mapping[int, Mapping[str, Sequence[float]]],
    kept_epochs: Mapping[int, int],
    path: Path | str,
    title: str = "",
) -> Path:
    """One figure for the whole cross-validation, like nnU-Net's progress.png: every fold's training (solid)
    and validation (dashed) loss on the left, its val_dice on the right, the kept epoch starred; one colour per fold.
    """
    return save_figure(progress_figure(histories, kept_epochs, title=title), path, dpi=100)


def progress_figure(
    histories: Mapping[int, Mapping[str, Sequence[float]]], kept_epochs: Mapping[int, int], *, title: str = ""
) -> Figure:
    """The figure ``plot_progress`` saves (axes: loss, val_dice)."""
    if not histories:
        raise ValueError("plot_progress needs the history of at least one fold")
    fig = Figure(figsize=(11.0, 4.0), layout="constrained")
    loss_ax, dice_ax = fig.subplots(1, 2)
    colours = [f"C{i % 10}" for i in range(len(histories))]
    losses: list[float] = []
    for colour, (fold, history) in zip(colours, sorted(histories.items()), strict=True):
        for name, style in (("loss", "-"), ("val_loss", "--")):
            values = list(history.get(name) or [])
            if values:
                loss_ax.plot(np.arange(1, len(values) + 1), values, style, color=colour, linewidth=1.2,
                             label=f"fold {fold}" if name == "loss" else None)  # fmt: skip
                losses += values
        val_dice = list(history.get("val_dice") or [])
        if val_dice:
            dice_ax.plot(np.arange(1, len(val_dice) + 1), val_dice, "-", color=colour, linewidth=1.2,
                         label=f"fold {fold}")  # fmt: skip
            kept = kept_epochs.get(fold)
            if kept is not None and 1 <= kept <= len(val_dice):
                dice_ax.plot([kept], [val_dice[kept - 1]], "*", color=colour, markersize=12, markeredgecolor="black")
    note = _clip_loss_axis(loss_ax, losses) if losses else ""
    loss_ax.set_ylabel("loss (solid: train, dashed: validation)")
    dice_ax.set_ylabel("val_dice (star: kept epoch)")
    loss_ax.legend(fontsize=8)
    dice_ax.legend(fontsize=8)
    return _epoch_axes(fig, (loss_ax, dice_ax), title, note)
