"""Figures logged with every cross-validation run: learning curves, an all-folds progress figure, a gallery of
OOF predictions with its error breakdown, and the score per subject.

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas, never through pyplot,
so nothing depends on a display or on global pyplot state, and training processes can draw safely.
Each decision a figure makes (where to clip the loss axis, whether the learning rate deserves a line,
which images the gallery shows) is a small pure function, so it can be tested without looking at pixels.
The gallery shows images at the competition's full resolution because that is where Dice is scored:
a contour that looks right at 64x80 can still miss at 580x420.
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

TRUTH_COLOUR = "#00e5ff"  # cyan and orange stay distinct for the common colour-vision deficiencies
PREDICTION_COLOUR = "#ff8c00"
LR_COLOUR = "#7f7f7f"
# Tukey's "far out" fence: a loss above q3 + 3 IQR (an epoch-1 val_loss of 15.8 among values near 1) is
# drawn at the top edge instead of stretching the axis so far that the rest of the curve looks flat.
FENCE_IQR = 3.0
ERROR_CATEGORIES = ("true_positive", "missed", "false_alarm", "true_negative")
ERROR_LABELS = {
    "true_positive": "nerve found",
    "missed": "missed nerves (FN)",
    "false_alarm": "false alarms (FP)",
    "true_negative": "correctly empty",
}


def _save(fig: Figure, path: Path | str, dpi: int) -> Path:
    path = Path(path)
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    atomic_write_bytes(path, buffer.getvalue())
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
    for name, style in (("loss", "-"), ("val_loss", "--")):
        values = list(history.get(name) or [])
        if values:
            ax.plot(np.arange(1, len(values) + 1), values, style, marker="o", markersize=3, label=name)
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
    return _save(learning_curves_figure(history, kept_epoch=kept, title=title), path, dpi=100)


def learning_curves_figure(
    history: Mapping[str, Sequence[float]], *, kept_epoch: int | None = None, title: str = ""
) -> Figure:
    """The figure ``plot_learning_curves`` saves (axes: loss, Dice, and the learning rate's when it changes)."""
    kept = kept_epoch
    fig = Figure(figsize=(9.0, 3.5), layout="constrained")
    loss_ax, dice_ax = fig.subplots(1, 2)
    note = _loss_panel(loss_ax, history)
    for name, style in (("dice", "-"), ("val_dice", "--")):
        values = history.get(name)
        if values:
            dice_ax.plot(np.arange(1, len(values) + 1), values, style, marker="o", markersize=3, label=name)
    val_dice = history.get("val_dice")
    if kept is not None and val_dice and 1 <= kept <= len(val_dice):
        dice_ax.plot([kept], [val_dice[kept - 1]], "*", color="black", markersize=11,
                     label=f"kept: epoch {kept}, val_dice {val_dice[kept - 1]:.3f}")  # fmt: skip
    dice_ax.set_ylabel("Dice (threshold 0.5)")
    for ax in (loss_ax, dice_ax):
        if kept is not None:
            ax.axvline(kept, color="grey", linewidth=1, linestyle=":")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if dice_ax.get_legend_handles_labels()[0]:
        dice_ax.legend(fontsize=8)
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
    return _save(progress_figure(histories, kept_epochs, title=title), path, dpi=100)


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
    for ax in (loss_ax, dice_ax):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    heading = "; ".join(part for part in (title, note) if part)
    if heading:
        fig.suptitle(heading, fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------- gallery


def subject_of(image_id: str) -> str:
    """The subject (patient) of a Kaggle id ``<subject>_<frame>``, e.g. "12" for "12_85"."""
    return str(image_id).split("_", 1)[0]


def error_breakdown(
    truth_nonempty: np.ndarray, pred_nonempty: np.ndarray, dice: np.ndarray
) -> dict[str, dict[str, float]]:
    """Images per kind of outcome and each kind's share of the score lost (sum of 1 - dice / total loss).

    Kinds: ``true_positive`` (a nerve, and a non-empty prediction: it loses only by its outline),
    ``missed`` (a nerve, predicted empty: scores 0), ``false_alarm`` (no nerve, something predicted: scores 0)
    and ``true_negative`` (both empty: scores 1). Each maps to {"count", "loss", "loss_share"};
    the shares sum to 1 unless nothing was lost (then all are 0).
    """
    truth = np.asarray(truth_nonempty, dtype=bool)
    pred = np.asarray(pred_nonempty, dtype=bool)
    dice = np.asarray(dice, dtype=np.float64)
    if not truth.shape == pred.shape == dice.shape or truth.ndim != 1:
        raise ValueError(
            f"truth_nonempty {truth.shape}, pred_nonempty {pred.shape} and dice {dice.shape} must be 1-D, one shape"
        )
    masks = {
        "true_positive": truth & pred,
        "missed": truth & ~pred,
        "false_alarm": ~truth & pred,
        "true_negative": ~truth & ~pred,
    }
    lost = 1.0 - dice
    total = float(lost.sum())
    breakdown = {}
    for kind in ERROR_CATEGORIES:
        loss = float(lost[masks[kind]].sum())
        breakdown[kind] = {"count": int(masks[kind].sum()), "loss": loss, "loss_share": loss / total if total else 0.0}
    return breakdown


def format_breakdown(breakdown: Mapping[str, Mapping[str, float]]) -> str:
    """One line for a title or a log: count and share of the score lost per kind of outcome."""
    return ", ".join(
        f"{ERROR_LABELS[kind]} {int(breakdown[kind]['count'])} ({breakdown[kind]['loss_share']:.0%} of loss)"
        for kind in ERROR_CATEGORIES
        if kind in breakdown
    )


def _spread(order: np.ndarray, subjects: np.ndarray | None, count: int) -> np.ndarray:
    """The first ``count`` of ``order`` when each subject's first image comes before any subject's second one."""
    if subjects is None:
        return order[:count]
    seen: dict[str, int] = {}
    rank = np.empty(len(order), dtype=np.int64)  # 0 for a subject's first image in ``order``, 1 for its second...
    for position, index in enumerate(order):
        rank[position] = seen.get(subjects[index], 0)
        seen[subjects[index]] = rank[position] + 1
    return order[np.lexsort((np.arange(len(order)), rank))][:count]


def pick_best_worst(
    scores: np.ndarray,
    truth_nonempty: np.ndarray,
    count: int = 4,
    *,
    subjects: Sequence[str] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``count`` best images with a nerve and the ``count`` worst images overall.

    Best is chosen among images whose truth has a nerve, because empty-and-predicted-empty images all
    score 1.0 and show nothing. With ``subjects`` (one per image, e.g. ``subject_of`` of the ids) each pick
    comes from a different subject while there are subjects left, so the gallery does not show four
    consecutive frames of one patient. Ties keep the original order, so the choice is deterministic.
    Best is listed from best down, worst from better to worse.
    """
    scores = np.asarray(scores, dtype=np.float64)
    truth_nonempty = np.asarray(truth_nonempty, dtype=bool)
    if scores.shape != truth_nonempty.shape:
        raise ValueError(f"scores {scores.shape} and truth_nonempty {truth_nonempty.shape} must have one shape")
    groups = None if subjects is None else np.asarray(subjects).astype(str)
    if groups is not None and groups.shape != scores.shape:
        raise ValueError(f"subjects {groups.shape} must have one entry per score {scores.shape}")
    with_nerve = np.flatnonzero(truth_nonempty)
    best = _spread(with_nerve[np.argsort(-scores[with_nerve], kind="stable")], groups, count)
    worst = _spread(np.argsort(scores, kind="stable"), groups, count)
    return best[np.argsort(-scores[best], kind="stable")], worst[np.argsort(scores[worst], kind="stable")][::-1]


def plot_gallery(
    images_full: np.ndarray,
    truths_full: np.ndarray,
    preds_full: np.ndarray,
    titles: Sequence[str],
    path: Path | str,
    *,
    columns: int = 4,
    suptitle: str = "",
) -> Path:
    """A grid of full-resolution images with the true mask outlined in cyan and the prediction in orange.

    ``images_full`` (n, H, W) uint8, ``truths_full`` and ``preds_full`` (n, H, W) binary; ``titles``
    (one per image) should carry the image id and its score.
    """
    n = len(images_full)
    if not (len(truths_full) == len(preds_full) == len(titles) == n):
        raise ValueError(
            f"plot_gallery needs as many truths, predictions and titles as images ({n}), got "
            f"{len(truths_full)}, {len(preds_full)}, {len(titles)}"
        )
    if n == 0:
        raise ValueError("plot_gallery needs at least one image")
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    height, width = images_full.shape[1:3]
    panel_width = 3.2
    fig = Figure(figsize=(panel_width * columns, panel_width * height / width * rows + 0.9), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, image, truth, pred, title in zip(axes, images_full, truths_full, preds_full, titles, strict=False):
        ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        for mask, colour in ((truth, TRUTH_COLOUR), (pred, PREDICTION_COLOUR)):
            if np.any(mask):
                ax.contour(np.asarray(mask, dtype=np.float32), levels=[0.5], colors=[colour], linewidths=1.2)
        ax.set_title(title, fontsize=8)
        ax.set_axis_off()
    for ax in axes[n:]:
        ax.set_axis_off()
    fig.suptitle(
        (suptitle + "\n" if suptitle else "") + "truth: cyan outline, prediction: orange outline",
        fontsize=10,
    )
    return _save(fig, path, dpi=90)


# ---------------------------------------------------------------------------------------- per subject


def subject_means(
    subjects: Sequence[str] | np.ndarray, scores: np.ndarray, empty_scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(subject names, mean score, mean all-empty score, image count) per subject, worst mean score first.

    Ties are broken by the subject's name, so the order is the same on every run.
    """
    names = np.asarray(subjects).astype(str)
    scores = np.asarray(scores, dtype=np.float64)
    empty_scores = np.asarray(empty_scores, dtype=np.float64)
    if not names.shape == scores.shape == empty_scores.shape or names.ndim != 1 or names.size == 0:
        raise ValueError(
            f"subjects {names.shape}, scores {scores.shape} and empty_scores {empty_scores.shape} "
            "must be non-empty 1-D arrays of one length (one entry per image)"
        )
    unique, inverse, counts = np.unique(names, return_inverse=True, return_counts=True)
    mean = np.bincount(inverse, weights=scores) / counts
    empty = np.bincount(inverse, weights=empty_scores) / counts
    order = np.lexsort((unique, mean))
    return unique[order], mean[order], empty[order], counts[order]


def plot_subject_scores(
    subjects: Sequence[str] | np.ndarray,
    scores: np.ndarray,
    empty_scores: np.ndarray,
    path: Path | str,
    *,
    title: str = "",
) -> Path:
    """Mean OOF score per subject (patient) beside the score of predicting nothing for that subject, worst first.

    Inputs are per image: its subject, its score, and its all-empty score (1 for an empty truth, else 0).
    A subject whose model bar is below its grey bar is one where the model does worse than predicting nothing.
    """
    names, mean, empty, counts = subject_means(subjects, scores, empty_scores)
    x = np.arange(len(names))
    fig = Figure(figsize=(max(6.0, 0.32 * len(names) + 2.0), 3.8), layout="constrained")
    ax = fig.subplots()
    ax.bar(x - 0.2, mean, width=0.4, color="C0", label=f"model (mean {np.average(mean, weights=counts):.3f})")
    ax.bar(
        x + 0.2, empty, width=0.4, color="#b0b0b0", label=f"all-empty (mean {np.average(empty, weights=counts):.3f})"
    )
    ax.set_xticks(x, [f"{n}\n({c})" for n, c in zip(names, counts, strict=True)], fontsize=7)
    ax.set_xlabel("subject (images), worst model score first")
    ax.set_ylabel("mean score (Dice, 580x420)")
    ax.set_ylim(0, 1.05)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(title or "score per subject", fontsize=10)
    return _save(fig, path, dpi=100)
