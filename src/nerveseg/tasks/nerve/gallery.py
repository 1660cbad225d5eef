"""Figures that show where a cross-validated model goes wrong: a gallery of OOF predictions, its error breakdown,
and the score per subject.

The gallery shows images at the competition's full resolution because that is where Dice is scored:
a contour that looks right at 64x80 can still miss at 580x420. Which images it shows, and how the loss splits
over error kinds, are small pure functions, so they can be tested without looking at pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from nerveseg.report.plots import save_figure

TRUTH_COLOUR = "#00e5ff"  # cyan and orange stay distinct for the common colour-vision deficiencies
PREDICTION_COLOUR = "#ff8c00"
ERROR_CATEGORIES = ("true_positive", "missed", "false_alarm", "true_negative")
ERROR_LABELS = {
    "true_positive": "nerve found",
    "missed": "missed nerves (FN)",
    "false_alarm": "false alarms (FP)",
    "true_negative": "correctly empty",
}


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
    return save_figure(fig, path, dpi=90)


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
    return save_figure(fig, path, dpi=100)
