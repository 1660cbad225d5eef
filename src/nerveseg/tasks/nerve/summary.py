"""Summarising a cross-validation run: per-fold scores, their spread, the pooled OOF score and
the score of predicting nothing at all, which every model must beat to be worth anything
(about 0.59 on Kaggle's training set, the share of empty masks).

Everything is recomputed at 580x420 from the out-of-fold probabilities, so the fold scores,
the OOF score and the baseline come from one code path and one threshold. Each score comes with
a subject-bootstrap 95 % interval (``nerveseg.evaluate.uncertainty``): the fold std understates
how far a new set of subjects may land. The post-processed score is cross-fitted
(``nerveseg.evaluate.crossfit``), so it predicts what a submission scores; the settings decided
on all OOF predictions and scored on them are optimistic and logged under another name.

Beside the interval of that CV mean, a 95 % PREDICTION interval says where the score of a held-out
set of m new subjects may land (``evaluate.uncertainty.prediction_interval``): the CV mean's own
uncertainty plus the spread between subjects, which a set of a few subjects does not average away.
Each out-of-fold image is one model's prediction while the submission averages K fold models, which
score higher than their members; with a probe (fold 0 trained once more, ``EnsembleGain``) the interval
is centred on the estimate plus that measured gain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nerveseg import names as cv_names
from nerveseg.data.cache import PreparedData
from nerveseg.evaluate.crossfit import CrossfitResult, crossfit_postprocessing, postprocessed_dice
from nerveseg.evaluate.metrics import dice_per_image
from nerveseg.evaluate.uncertainty import bootstrap_mean_interval, prediction_interval
from nerveseg.tasks.nerve.fold import full_resolution_dice
from nerveseg.train.fold_result import FoldResult

OPTIMISTIC_RULES = ("best_val",)  # checkpoint rules that choose the epoch on the scored fold
PER_IMAGE_FIELD = "postprocessed_per_image"  # the CVSummary field too long for summary.json (kept as a CSV)


@dataclass
class CVSummary:
    """Scores at full resolution; ``cv_score_std`` is the population std (ddof=0) of the fold scores.

    ``*_ci_low``/``*_ci_high`` bound a subject-bootstrap 95 % interval of the pooled per-image mean.
    ``checkpoint`` is the rule that kept each fold's weights ("mixed" if folds differ).
    """

    fold_scores: dict[int, float]
    cv_score_mean: float
    cv_score_std: float
    oof_score: float  # all out-of-fold images scored together
    empty_baseline_score: float  # empty predictions for the same images
    checkpoint: str = "best_val"
    n_subjects: int = 0
    cv_score_ci_low: float = float("nan")
    cv_score_ci_high: float = float("nan")
    empty_baseline_ci_low: float = float("nan")
    empty_baseline_ci_high: float = float("nan")
    # post-processing decided on the other folds, applied to each fold; None with fewer than 2 folds
    oof_score_postprocessed: float | None = None
    oof_score_postprocessed_ci_low: float | None = None
    oof_score_postprocessed_ci_high: float | None = None
    # 95 % prediction interval of the post-processed score on ``predict_subjects`` new subjects
    oof_score_postprocessed_pi_low: float | None = None
    oof_score_postprocessed_pi_high: float | None = None
    predict_subjects: int = 0
    # with a probe: what the K-fold ensemble adds (the PI above is already centred on estimate + gain)
    ensemble_gain: float | None = None
    ensemble_gain_pair: float | None = None
    expected_ensemble_score: float | None = None
    oof_views: str = ""  # the test-time views of the out-of-fold predictions, e.g. "identity+hflip"
    # the cross-fitted post-processed score of each image covered, in data order (not part of summary.json)
    postprocessed_per_image: np.ndarray | None = field(default=None, repr=False)

    @property
    def optimistic(self) -> bool:
        """True when some fold chose its kept epoch on the very images it is scored on."""
        return self.checkpoint in OPTIMISTIC_RULES or self.checkpoint == "mixed"


def _assemble_oof(data: PreparedData, folds: np.ndarray, results: list[FoldResult]) -> np.ndarray:
    """(N, h, w) OOF probabilities; NaN for images of folds that are not in ``results``."""
    oof = np.full(data.images.shape, np.nan, dtype=np.float32)
    seen: set[int] = set()
    for result in results:
        if result.fold in seen:
            raise ValueError(f"fold {result.fold} appears twice in the results; pass one FoldResult per fold")
        seen.add(result.fold)
        expected = np.flatnonzero(folds == result.fold)
        if not np.array_equal(np.asarray(result.val_index), expected):
            raise ValueError(
                f"fold {result.fold}'s val_index does not match the folds array; "
                "were these results trained with another folds file?"
            )
        if result.oof_probs.shape != (len(expected), *data.images.shape[1:]):
            raise ValueError(
                f"fold {result.fold}: oof_probs has shape {result.oof_probs.shape}, "
                f"expected {(len(expected), *data.images.shape[1:])}"
            )
        oof[expected] = result.oof_probs
    return oof


def empty_baseline_per_image(data: PreparedData, index: np.ndarray, chunk_size: int = 256) -> np.ndarray:
    """(n,) competition score of predicting an empty mask for each image in ``index``, via the metric."""
    scores = []
    for start in range(0, len(index), chunk_size):
        truth = data.full_masks(index[start : start + chunk_size])
        scores.append(dice_per_image(truth, np.zeros_like(truth)))
    return np.concatenate(scores) if scores else np.zeros(0)


def empty_baseline(data: PreparedData, index: np.ndarray, chunk_size: int = 256) -> float:
    """Competition score of predicting an empty mask for every image in ``index``, via the metric."""
    return float(empty_baseline_per_image(data, index, chunk_size).mean())


def _checkpoint_rule(results: list[FoldResult]) -> str:
    rules = {r.checkpoint for r in results}
    return rules.pop() if len(rules) == 1 else "mixed"


def assemble_presence(n_images: int, results: Sequence[FoldResult]) -> np.ndarray | None:
    """(N,) OOF presence-head outputs in image order, or None unless every fold's model has the head."""
    if not all(r.oof_presence is not None for r in results):
        return None
    presence = np.empty(n_images, dtype=np.float32)
    for r in results:
        presence[r.val_index] = r.oof_presence
    return presence


def default_predict_subjects(n_subjects: int, n_folds: int) -> int:
    """m for the prediction interval when the test set's size is unknown: one fold's worth of subjects (a
    held-out set like the CV's own; 47 Kaggle subjects in 5 folds give 9, the size of the hidden real check)."""
    return max(1, round(n_subjects / max(n_folds, 1)))


@dataclass(frozen=True)
class EnsembleGain:
    """What averaging models adds to one model's score, measured on one fold and scaled to ``members``.

    ``pair`` is the score of the average of two models of the same fold (the fold's own and a probe trained
    with another seed) minus the mean of their two scores, both post-processed as that fold is cross-fitted.
    Averaging M members whose errors share a correlated part removes a share (1 - 1/M) of the independent
    part, a pair (1 - 1/2), so the M-member gain is about ``pair * 2 * (1 - 1/M)``. The fold models differ in
    their training subjects too, so a pair of one fold's models is if anything less diverse: the scaled gain
    errs low, the side the estimate erred on before.
    """

    pair: float
    members: int

    @property
    def scaled(self) -> float:
        return self.pair * 2.0 * (1.0 - 1.0 / self.members)


def measure_ensemble_gain(
    data: PreparedData,
    oof: np.ndarray,
    presence: np.ndarray | None,
    crossfit: CrossfitResult,
    probe: FoldResult,
    members: int,
) -> EnsembleGain:
    """The gain of averaging ``probe`` with its fold's model on the fold's images, with the fold's cross-fitted
    post-processing (decided on the other folds: no member is scored by settings that saw its images)."""
    rows = np.asarray(probe.val_index)
    settings = crossfit.decisions_by_fold[probe.fold].settings
    pair_presence = None
    if presence is not None and probe.oof_presence is not None:
        pair_presence = (presence[rows] + probe.oof_presence) / 2.0

    def score(probs: np.ndarray, gate: np.ndarray | None) -> float:
        positions = np.arange(len(rows))
        return float(postprocessed_dice(probs, lambda p: data.full_masks(rows[p]), positions, gate, settings).mean())

    member = score(oof[rows], None if presence is None else presence[rows])
    other = score(probe.oof_probs, probe.oof_presence)
    pair = score((oof[rows] + probe.oof_probs) / 2.0, pair_presence)
    return EnsembleGain(pair - (member + other) / 2.0, members)


def _postprocessed_fields(
    data: PreparedData,
    folds: np.ndarray,
    results: list[FoldResult],
    oof: np.ndarray,
    covered: np.ndarray,
    predict_subjects: int = 0,
    probe: FoldResult | None = None,
) -> dict[str, Any]:
    """The cross-fitted post-processed OOF score (and per image), its interval and its prediction interval for
    ``predict_subjects`` new subjects (0: ``default_predict_subjects``), centred on the ensemble's expected score
    when a ``probe`` measures its gain; empty with fewer than 2 folds."""
    if len(results) < 2:
        return {}
    all_presence = assemble_presence(len(data), results)
    presence = None if all_presence is None else all_presence[covered]
    crossfit = crossfit_postprocessing(
        oof[covered], lambda positions: data.full_masks(covered[positions]), folds[covered], presence
    )
    subjects = data.subjects[covered]
    interval = bootstrap_mean_interval(crossfit.per_image, subjects)
    m = predict_subjects or default_predict_subjects(interval.n_groups, len(results))
    predicted = prediction_interval(crossfit.per_image, subjects, m)
    gain: dict[str, float] = {}
    if probe is not None:
        measured = measure_ensemble_gain(data, oof, all_presence, crossfit, probe, len(results))
        predicted = predicted.shifted(measured.scaled)
        gain = {cv_names.ENSEMBLE_GAIN: measured.scaled, cv_names.ENSEMBLE_GAIN_PAIR: measured.pair,
                cv_names.EXPECTED_SCORE: predicted.estimate}  # fmt: skip
    return {
        **gain,
        cv_names.OOF_SCORE_POSTPROCESSED: crossfit.score,
        cv_names.OOF_SCORE_POSTPROCESSED_CI_LOW: interval.low,
        cv_names.OOF_SCORE_POSTPROCESSED_CI_HIGH: interval.high,
        cv_names.OOF_SCORE_POSTPROCESSED_PI_LOW: predicted.low,
        cv_names.OOF_SCORE_POSTPROCESSED_PI_HIGH: predicted.high,
        "predict_subjects": m,
        PER_IMAGE_FIELD: crossfit.per_image,
    }


def summarize_cv(
    data: PreparedData,
    folds: np.ndarray,
    results: list[FoldResult],
    threshold: float = 0.5,
    *,
    crossfit: bool = True,
    predict_subjects: int = 0,
    oof_views: str = "",
    probe: FoldResult | None = None,
) -> tuple[CVSummary, np.ndarray]:
    """The summary and the (N, h, w) OOF probabilities (NaN rows for folds not in ``results``).

    With only some folds (a one-fold run), the OOF score and the baseline cover those folds' images.
    ``crossfit`` adds the cross-fitted post-processed score (about k - 1 post-processing searches) and its
    prediction interval for ``predict_subjects`` new subjects (0: one fold's worth), centred on the estimate plus
    the ensemble's gain when ``probe`` (a second model of one fold, another seed) is given.
    """
    folds = np.asarray(folds)
    if not results:
        raise ValueError("summarize_cv got no fold results; train at least one fold first")
    if folds.shape != (len(data),):
        raise ValueError(f"folds must have one entry per image ({len(data)}), got shape {folds.shape}")
    oof = _assemble_oof(data, folds, results)
    covered = np.sort(np.concatenate([np.asarray(r.val_index) for r in results]))
    dice = full_resolution_dice(data, covered, oof[covered], threshold)
    fold_of = folds[covered]
    fold_scores = {int(r.fold): float(dice[fold_of == r.fold].mean()) for r in sorted(results, key=lambda r: r.fold)}
    scores = np.array(list(fold_scores.values()))
    subjects = data.subjects[covered]
    interval = bootstrap_mean_interval(dice, subjects)
    empty = empty_baseline_per_image(data, covered)
    empty_interval = bootstrap_mean_interval(empty, subjects)
    summary = CVSummary(
        fold_scores=fold_scores,
        cv_score_mean=float(scores.mean()),
        cv_score_std=float(scores.std()),
        oof_score=float(dice.mean()),
        empty_baseline_score=float(empty.mean()),
        checkpoint=_checkpoint_rule(results),
        n_subjects=interval.n_groups,
        cv_score_ci_low=interval.low,
        cv_score_ci_high=interval.high,
        empty_baseline_ci_low=empty_interval.low,
        empty_baseline_ci_high=empty_interval.high,
        oof_views=oof_views,
        **(_postprocessed_fields(data, folds, results, oof, covered, predict_subjects, probe) if crossfit else {}),
    )
    return summary, oof


def interval_metrics(summary: CVSummary) -> dict[str, float]:
    """The intervals and the cross-fitted post-processed score as flat metrics (names as the fields)."""
    names = [  # each is also the CVSummary field holding the value
        cv_names.CV_SCORE_CI_LOW,
        cv_names.CV_SCORE_CI_HIGH,
        cv_names.EMPTY_BASELINE_CI_LOW,
        cv_names.EMPTY_BASELINE_CI_HIGH,
        cv_names.OOF_SCORE_POSTPROCESSED,
        cv_names.OOF_SCORE_POSTPROCESSED_CI_LOW,
        cv_names.OOF_SCORE_POSTPROCESSED_CI_HIGH,
        cv_names.ENSEMBLE_GAIN,
        cv_names.ENSEMBLE_GAIN_PAIR,
        cv_names.EXPECTED_SCORE,
    ]
    values = {name: getattr(summary, name) for name in names}
    values[cv_names.OOF_SCORE_POSTPROCESSED_PI_LOW] = summary.oof_score_postprocessed_pi_low
    values[cv_names.OOF_SCORE_POSTPROCESSED_PI_HIGH] = summary.oof_score_postprocessed_pi_high
    if summary.oof_score_postprocessed_pi_low is not None:
        values[cv_names.PI_SUBJECTS] = summary.predict_subjects
    return {name: float(value) for name, value in values.items() if value is not None and np.isfinite(value)}


def format_summary_table(summary: CVSummary) -> str:
    """A plain-text table for the console and the run's log, with the intervals and the checkpoint rule."""

    def ci(low: float | None, high: float | None) -> str:
        return f"   95 % CI {low:.4f}-{high:.4f}" if low is not None and np.isfinite(low) else ""

    lines = ["fold        score"]
    lines += [f"{fold:<10d}  {score:.4f}" for fold, score in summary.fold_scores.items()]
    lines += [
        f"mean ± std  {summary.cv_score_mean:.4f} ± {summary.cv_score_std:.4f}",
        f"OOF         {summary.oof_score:.4f}{ci(summary.cv_score_ci_low, summary.cv_score_ci_high)}",
    ]
    if summary.oof_score_postprocessed is not None:
        lines.append(
            f"OOF + pp    {summary.oof_score_postprocessed:.4f}"
            f"{ci(summary.oof_score_postprocessed_ci_low, summary.oof_score_postprocessed_ci_high)}"
            "   (post-processing cross-fitted: decided on the other folds)"
        )
    if summary.ensemble_gain is not None:
        gain, pair, k = summary.ensemble_gain, summary.ensemble_gain_pair, len(summary.fold_scores)
        lines.append(
            f"ensemble    {summary.expected_ensemble_score:.4f}   (OOF + pp {gain:+.4f}: what averaging the {k} fold "
            f"models adds, from a pair of fold-0 models {pair:+.4f}; the PI below is centred here)"
        )
    if summary.oof_score_postprocessed_pi_low is not None:
        m, low, high = (
            summary.predict_subjects,
            summary.oof_score_postprocessed_pi_low,
            summary.oof_score_postprocessed_pi_high,
        )
        plural = "s" if m != 1 else ""
        lines.append(
            f"            95 % PI {low:.4f}-{high:.4f}   (where a held-out set of {m} new subject{plural} may score)"
        )
    lines.append(
        f"all-empty   {summary.empty_baseline_score:.4f}"
        f"{ci(summary.empty_baseline_ci_low, summary.empty_baseline_ci_high)}"
    )
    if summary.n_subjects:
        lines.append(f"intervals: subject bootstrap over {summary.n_subjects} subjects")
    rule = f"checkpoint: {summary.checkpoint}"
    if summary.optimistic:
        rule += " (OPTIMISTIC: each fold kept the epoch that scored best on that same fold)"
    lines.append(rule)
    if summary.oof_views:
        lines.append(f"out-of-fold views: {summary.oof_views} (as submitted: post-processing decided on what ships)")
    return "\n".join(lines)
