"""A nerve CV answers "how good, and why" at a glance: its description and its figures.

A finished cross-validation's parent (MLflow run or LocalStore folder) gets
- a description (``mlflow.note.content``, shown on the run page and in the runs table) holding the CV table
  from :func:`nerveseg.report.markdown.cv_markdown`: fold scores with their kept epochs, mean, interval, OOF,
  all-empty baseline, post-processed score, checkpoint rule, and the error breakdown;
- ``plots/progress.png``: every fold's curves in one figure (nnU-Net's progress.png);
- ``plots/subject_scores.png``: which patients the model fails on;
- ``plots/gallery.png``: best and worst OOF images spread over subjects, titled with how many nerves were
  found, missed (FN) and falsely alarmed (FP) and their share of the score lost.

Numbers are rounded only in these; the metrics keep full precision. Everything is drawn from the OOF
predictions the parent already holds, at the competition's 580x420, where Dice is scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nerveseg import names
from nerveseg.config import TrainConfig
from nerveseg.data.cache import PreparedData
from nerveseg.data.raw import index_train, read_image
from nerveseg.evaluate.metrics import to_full_resolution
from nerveseg.evaluate.postprocess_settings import PostprocessDecision
from nerveseg.report.markdown import cv_markdown
from nerveseg.report.plots import plot_progress
from nerveseg.tasks.nerve.fold import full_resolution_dice
from nerveseg.tasks.nerve.gallery import (
    error_breakdown,
    format_breakdown,
    pick_best_worst,
    plot_gallery,
    plot_subject_scores,
)
from nerveseg.tasks.nerve.summary import CVSummary
from nerveseg.train.fold_result import FoldResult

GALLERY_IMAGES = 4  # best and worst each
THRESHOLD = 0.5  # the gallery and breakdown show the raw OOF predictions, as the fold scores do


@dataclass(frozen=True)
class CVOutcome:
    """What a complete cross-validation produced, as the parent's report needs it."""

    config: TrainConfig
    data: PreparedData
    results: Sequence[FoldResult]
    summary: CVSummary
    oof: np.ndarray  # (N, h, w) OOF probabilities in data order
    postprocessing: PostprocessDecision | None = None


def predicted_nonempty(oof: np.ndarray, threshold: float = THRESHOLD, chunk_size: int = 128) -> np.ndarray:
    """(N,) bool: the prediction at 580x420 (as scored) has at least one pixel above ``threshold``.

    Decided at full resolution because upsampling can lose a lone pixel above the threshold at model size.
    """
    nonempty = np.empty(len(oof), dtype=bool)
    for start in range(0, len(oof), chunk_size):
        part = slice(start, start + chunk_size)
        nonempty[part] = (to_full_resolution(oof[part]) > threshold).any(axis=(1, 2))
    return nonempty


def _finite_interval(low: float | None, high: float | None) -> tuple[float, float] | None:
    if low is None or high is None or not (np.isfinite(low) and np.isfinite(high)):
        return None
    return float(low), float(high)


def _postprocessing_notes(outcome: CVOutcome) -> tuple[float | None, list[str]]:
    """The post-processed score to show (cross-fitted when there is one) and what it means."""
    summary, decision = outcome.summary, outcome.postprocessing
    in_sample = None if decision is None else decision.oof_score
    if summary.oof_score_postprocessed is not None:
        note = "OOF after post-processing: cross-fitted (settings decided on the other folds, applied to each fold)"
        if in_sample is not None:
            note += f"; decided and scored on all OOF it reads {in_sample:.4f} (optimistic)"
        return summary.oof_score_postprocessed, [note]
    if in_sample is None:
        return None, []
    return in_sample, ["OOF after post-processing: decided and scored on the same OOF predictions (optimistic)"]


def describe(outcome: CVOutcome, breakdown_line: str = "") -> str:
    """The parent's Markdown description: the CV table and what its numbers mean."""
    summary = outcome.summary
    interval = _finite_interval(summary.cv_score_ci_low, summary.cv_score_ci_high)
    postprocessed, notes = _postprocessing_notes(outcome)
    if interval is not None:
        notes.insert(0, f"95 % interval: subject bootstrap of the pooled OOF score over {summary.n_subjects} subjects")
    if breakdown_line:
        notes.append(f"errors (raw OOF, threshold {THRESHOLD}): {breakdown_line}")
    notes.append(
        f"plots: {names.PROGRESS_ARTIFACT} (all folds), {names.SUBJECT_SCORES_ARTIFACT}, {names.GALLERY_ARTIFACT}; "
        f"each fold run has its own {names.LEARNING_CURVE_ARTIFACT}"
    )
    rule = summary.checkpoint + (" (OPTIMISTIC: each fold kept the epoch that scored best on it)"
                                 if summary.optimistic else "")  # fmt: skip
    return cv_markdown(
        summary.fold_scores,
        mean=summary.cv_score_mean,
        std=summary.cv_score_std,
        interval=interval,
        oof=summary.oof_score,
        empty_baseline=summary.empty_baseline_score,
        postprocessed=postprocessed,
        kept_epochs={r.fold: r.kept_epoch for r in outcome.results},
        checkpoint_rule=rule,
        title=f"{outcome.config.name}: {len(summary.fold_scores)}-fold cross-validation",
        notes=notes,
    )


def gallery(outcome: CVOutcome, scores: np.ndarray, raw_dir: Path, path: Path, breakdown_line: str) -> Path:
    """Best and worst OOF images at full resolution, each from another subject while there are subjects left."""
    data, oof = outcome.data, outcome.oof
    best, worst = pick_best_worst(scores, data.has_mask, GALLERY_IMAGES, subjects=data.subjects)
    chosen = np.concatenate([best, worst])
    labels = ["best"] * len(best) + ["worst"] * len(worst)
    index = index_train(raw_dir)
    paths = dict(zip(index["id"], index["image_path"], strict=True))
    images = np.stack([read_image(paths[i]) for i in data.ids[chosen]])
    return plot_gallery(
        images,
        data.full_masks(chosen),
        to_full_resolution(oof[chosen]) > THRESHOLD,
        [f"{label}: {i}  Dice {scores[j]:.3f}" for label, i, j in zip(labels, data.ids[chosen], chosen, strict=True)],
        path,
        suptitle=f"{outcome.config.name}: out-of-fold predictions\n{breakdown_line}",
    )


@dataclass(frozen=True)
class CVReport:
    """The parent's Markdown description and its figure files (their names are the artifact names)."""

    description: str
    figures: tuple[Path, ...]


def render_cv_report(outcome: CVOutcome, *, raw_dir: Path, work: Path) -> CVReport:
    """The description and the progress, per-subject and gallery figures, drawn into ``work/parent_plots``."""
    data, name = outcome.data, outcome.config.name
    plots = work / "parent_plots"
    plots.mkdir(parents=True, exist_ok=True)
    scores = full_resolution_dice(data, np.arange(len(data)), outcome.oof, THRESHOLD)
    breakdown_line = format_breakdown(error_breakdown(data.has_mask, predicted_nonempty(outcome.oof), scores))
    figures = (
        plot_progress(
            {r.fold: r.history for r in outcome.results},
            {r.fold: r.kept_epoch for r in outcome.results},
            plots / Path(names.PROGRESS_ARTIFACT).name,
            title=f"{name}: every fold (star: kept epoch)",
        ),
        plot_subject_scores(
            data.subjects,
            scores,
            (~data.has_mask).astype(np.float64),
            plots / Path(names.SUBJECT_SCORES_ARTIFACT).name,
            title=f"{name}: OOF score per subject",
        ),
        gallery(outcome, scores, raw_dir, plots / Path(names.GALLERY_ARTIFACT).name, breakdown_line),
    )
    return CVReport(describe(outcome, breakdown_line), figures)


__all__ = ["CVOutcome", "CVReport", "describe", "gallery", "predicted_nonempty", "render_cv_report"]
