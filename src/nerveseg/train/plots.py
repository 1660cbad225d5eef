"""Figures logged with every cross-validation run: learning curves and a gallery of OOF predictions.

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas, never through pyplot,
so nothing depends on a display or on global pyplot state, and training processes can draw safely.
The gallery shows images at the competition's full resolution because that is where Dice is scored:
a contour that looks right at 64x80 can still miss at 580x420.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from nerveseg.io_utils import atomic_write_bytes

TRUTH_COLOUR = "#00e5ff"  # cyan and orange stay distinct for the common colour-vision deficiencies
PREDICTION_COLOUR = "#ff8c00"


def _save(fig: Figure, path: Path | str, dpi: int) -> Path:
    path = Path(path)
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def plot_learning_curves(
    history: Mapping[str, Sequence[float]],
    path: Path | str,
    *,
    best_epoch: int | None = None,
    title: str = "",
) -> Path:
    """Loss and Dice per epoch for training and validation (plus the learning rate when logged).

    Epochs are numbered from 1 as Keras prints them; ``best_epoch`` (1-based, as ``FoldResult``)
    gets a vertical line: the epoch whose weights were kept.
    """
    panels = [("loss", "loss"), ("dice", "Dice (threshold 0.5)")]
    if history.get("learning_rate"):
        panels.append(("learning_rate", "learning rate"))
    fig = Figure(figsize=(4.2 * len(panels), 3.4), layout="constrained")
    for ax, (key, label) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        for name, style in ((key, "-"), (f"val_{key}", "--")):
            values = history.get(name)
            if values:
                epochs = np.arange(1, len(values) + 1)
                ax.plot(epochs, values, style, marker="o", markersize=3, label=name)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linewidth=1, linestyle=":", label=f"best epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        if key == "learning_rate":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path, dpi=100)


def pick_best_worst(scores: np.ndarray, truth_nonempty: np.ndarray, count: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``count`` best images with a nerve and the ``count`` worst images overall.

    Best is chosen among images whose truth has a nerve, because empty-and-predicted-empty images all
    score 1.0 and show nothing. Worst ties (many 0.0 scores) keep the original order, so the choice is
    deterministic. Each list is sorted from best to worst.
    """
    scores = np.asarray(scores, dtype=np.float64)
    truth_nonempty = np.asarray(truth_nonempty, dtype=bool)
    if scores.shape != truth_nonempty.shape:
        raise ValueError(f"scores {scores.shape} and truth_nonempty {truth_nonempty.shape} must have one shape")
    with_nerve = np.flatnonzero(truth_nonempty)
    best = with_nerve[np.argsort(-scores[with_nerve], kind="stable")][:count]
    worst = np.argsort(scores, kind="stable")[:count][::-1]
    return best, worst


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
