"""The Kaggle ultrasound nerve task (``task: nerve``, the default) behind the ``Task`` interface.

It wires the stages to what only this task knows, in this package: cached decoding (``data.cache``),
subject-grouped folds (``data.folds``), its fold (``fold``: ``train.fold``'s whole-image fold scored at 580x420),
the CV summary at 580x420 with intervals (``summary``) and its report (``report``), post-processing decided on OOF
(``evaluate.postprocess``), the RLE CSV (``submit``) and the served ``segmenter``. Heavy modules are imported
inside the methods, so ``get_task`` stays cheap.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from nerveseg import names
from nerveseg.config import TrainConfig
from nerveseg.errors import NervesegError
from nerveseg.evaluate.paired import ImageScores
from nerveseg.evaluate.postprocess_settings import PostprocessDecision
from nerveseg.tasks.base import CVFinal, Served, ServedColumn, SharedStages, SubmissionFile
from nerveseg.train.fold_result import FoldResult


def _image_scores(data: Any, folds: np.ndarray, summary: Any) -> ImageScores | None:
    """Each image's cross-fitted post-processed Dice (what ``oof_score_postprocessed`` averages), by subject."""
    if summary.postprocessed_per_image is None:
        return None
    return ImageScores(
        ids=np.asarray(data.ids).astype(str),
        subjects=np.asarray(data.subjects).astype(str),
        folds=np.asarray(folds),
        scores=np.asarray(summary.postprocessed_per_image, dtype=np.float64),
        metric=names.OOF_SCORE_POSTPROCESSED,
    )


def _ensemble_probe(config: TrainConfig, data: Any, folds: np.ndarray, work: Path, progress: bool) -> FoldResult | None:
    """With ``ensemble_gain_probe``: fold 0 trained once more with seed ``seed + folds`` (no fold's seed), in a
    folder of its own; ``summary.EnsembleGain`` measures on it what averaging models adds. None without.
    Its weights are not kept: only the gain it measures is."""
    if not config.ensemble_gain_probe:
        return None
    from nerveseg.tasks.nerve.fold import train_fold

    probe_config = config.replace(seed=config.seed + config.folds)
    if progress:
        print(
            f"ensemble gain: fold 0 once more with seed {probe_config.seed}, about one fold's time (weights not kept)",
            file=sys.stderr,
            flush=True,
        )
    return train_fold(probe_config, data, folds, 0, Path(work) / "ensemble_probe", verbose=2 if progress else 0)


class NerveTask(SharedStages):
    """Dice on 580x420 masks, subject-grouped folds, a run-length-encoded CSV."""

    name = "nerve"
    ranking_metric = names.CV_SCORE_MEAN
    estimate_metric = names.OOF_SCORE_POSTPROCESSED  # the CV table's "OOF + pp": post-processing cross-fitted
    higher_is_better = True
    ranking_text = "mean over the cross-validation folds of the competition score (Dice at 580x420), maximised"
    submission_suffix = ".csv"
    supports_test_masks = True
    kaggle_submission = True

    def load_train(self, config: TrainConfig, raw_dir: Path, cache_dir: Path, *, progress: bool) -> Any:
        from nerveseg.data.cache import prepare_train

        return prepare_train(raw_dir, cache_dir, config.height, config.width, progress=progress)

    def data_fingerprint(self, raw_dir: Path, cache_dir: Path, *, progress: bool) -> str:
        from nerveseg.data.cache import train_fingerprint

        return train_fingerprint(raw_dir, cache_dir, progress=progress)

    def split_params(self, config: TrainConfig, data: Any, folds: np.ndarray, fold: int) -> dict[str, str]:
        """Sizes after dropping contradictory images and the inner split (``train.fold.fold_indices``, the rows
        ``train_fold`` trains on), and the held-out subjects."""
        from nerveseg.train.fold import fold_indices

        val_index, train_index, monitor_index = fold_indices(config, data, folds, fold)
        inner = {names.N_INNER_VAL_PARAM: str(len(monitor_index))} if config.checkpoint == "inner" else {}
        subjects = [str(s) for s in np.unique(data.subjects[val_index])]
        return {
            names.N_TRAIN_PARAM: str(len(train_index)),
            names.N_VAL_PARAM: str(len(val_index)),
            **inner,
            names.VAL_SUBJECTS_PARAM: names.truncated_list(subjects),
        }

    def trainings_after_folds(self, config: TrainConfig) -> int:
        """The ensemble-gain probe (``_ensemble_probe``) trains fold 0 once more."""
        return int(config.ensemble_gain_probe)

    def train_fold(self, config, data, folds, fold, workdir, *, callbacks, verbose) -> FoldResult:
        from nerveseg.tasks.nerve.fold import train_fold

        return train_fold(config, data, folds, fold, workdir, callbacks=callbacks, verbose=verbose)

    def finalise(self, config, data, folds, results, *, progress, raw_dir, work) -> CVFinal:
        """``summarize_cv`` (fold scores, intervals, cross-fitted post-processed score), the post-processing
        decided on all OOF predictions (its in-sample score is labelled optimistic) and the report."""
        from nerveseg.evaluate.postprocess import decide_postprocessing
        from nerveseg.inference.ensemble import view_names
        from nerveseg.tasks.nerve.report import CVOutcome, render_cv_report
        from nerveseg.tasks.nerve.summary import (
            PER_IMAGE_FIELD,
            assemble_presence,
            format_summary_table,
            interval_metrics,
            summarize_cv,
        )

        summary, oof = summarize_cv(
            data, folds, list(results), predict_subjects=config.predict_subjects,
            oof_views="+".join(view_names(config.tta)), probe=_ensemble_probe(config, data, folds, work, progress),
        )  # fmt: skip
        presence = assemble_presence(len(data), results)
        decision = decide_postprocessing(oof, data.full_masks, presence, progress=progress)
        metrics = {
            names.CV_SCORE_MEAN: summary.cv_score_mean,
            names.CV_SCORE_STD: summary.cv_score_std,
            names.OOF_SCORE: summary.oof_score,
            names.EMPTY_BASELINE_SCORE: summary.empty_baseline_score,
            # decided and scored on the same OOF predictions; the cross-fitted score is in interval_metrics
            names.OOF_SCORE_POSTPROCESSED_INSAMPLE: float(decision.oof_score or 0.0),
            **interval_metrics(summary),
            **{names.fold_score_metric(k): score for k, score in summary.fold_scores.items()},
        }
        facts = {
            **{f.name: getattr(summary, f.name) for f in dataclasses.fields(summary) if f.name != PER_IMAGE_FIELD},
            "fold_scores": {str(k): v for k, v in summary.fold_scores.items()},
        }
        tags = {names.CHECKPOINT_TAG: summary.checkpoint, names.OPTIMISTIC_TAG: str(summary.optimistic).lower()}
        table = format_summary_table(summary)
        if decision.oof_score is not None:
            table += f"\nOOF + pp in-sample (decided on the same OOF, optimistic): {decision.oof_score:.4f}"
        outcome = CVOutcome(config, data, results, summary, oof, decision)
        report = render_cv_report(outcome, raw_dir=raw_dir, work=work)
        return CVFinal(
            metrics, table, decision, data.ids, oof, presence, facts, tags, report.description, report.figures,
            image_scores=_image_scores(data, folds, summary),
        )  # fmt: skip

    def decision_from_json(self, values: Any, *, source: str) -> PostprocessDecision:
        return PostprocessDecision.from_json(values, source=source)

    def decide_postprocessing(self, data, rows, oof_probs, oof_presence, *, progress) -> PostprocessDecision:
        from nerveseg.evaluate.postprocess import decide_postprocessing

        return decide_postprocessing(
            oof_probs, lambda index: data.full_masks(rows[index]), oof_presence, progress=progress
        )

    def check_test_data(self, raw_dir: Path) -> None:
        test_dir = Path(raw_dir) / "test"
        if not test_dir.is_dir():
            raise NervesegError(
                f"test folder {test_dir} does not exist; put Kaggle's test/*.tif under --raw-dir {raw_dir}"
            )

    def submission_bytes(self, raw_dir: Path) -> int:
        from nerveseg.submit.submission_file import expected_csv_bytes

        return expected_csv_bytes(len(list((Path(raw_dir) / "test").glob("*.tif"))))

    served_columns = (
        ServedColumn(names.PRESENT_COLUMN, "boolean"),
        ServedColumn(names.PROBABILITY_COLUMN, "double"),
        ServedColumn(names.AREA_COLUMN, "long"),
        ServedColumn(names.RLE_COLUMN, "string"),
        ServedColumn(names.MASK_COLUMN, "binary", required=False),
    )

    def served(self, runs, decision, *, tta, batch_size) -> Served:
        """The ``Segmenter``: ``submit.py``'s path, so a served mask is the submission's."""
        from nerveseg.tasks.nerve.segmenter import Segmenter

        return Segmenter(runs, decision, tta=tta, batch_size=batch_size)

    def write_submission(
        self, runs, decision, path, *, raw_dir, cache_dir, tta, batch_size, progress
    ) -> SubmissionFile:
        """Every run's fold ensemble (with its mirror TTA) averaged at the first run's size, post-processed
        at 580x420 and written as the RLE CSV: predicted through ``tasks.nerve.segmenter.Segmenter``, the
        path ``predict.py`` and the served MLflow model take, on the test cache at each run's size."""
        from nerveseg.data.cache import prepare_test
        from nerveseg.submit.submission_file import postprocess_and_write
        from nerveseg.tasks.nerve.segmenter import Segmenter

        seconds: dict[str, float] = {}
        mark = time.perf_counter()
        segmenter = Segmenter(runs, decision, tta=tta, batch_size=batch_size)
        seconds["load_models"] = time.perf_counter() - mark
        mark = time.perf_counter()
        tests = {shape: prepare_test(raw_dir, cache_dir, *shape, progress=progress) for shape in segmenter.input_shapes}
        seconds["prepare_test"] = time.perf_counter() - mark
        mark = time.perf_counter()
        probs, presence = segmenter.ensemble({shape: test.images for shape, test in tests.items()}, progress=progress)
        seconds["predict"] = time.perf_counter() - mark
        test = tests[segmenter.input_shape]
        stats = postprocess_and_write(test.ids, probs, decision.settings, path, presence)
        seconds.update(stats.seconds)
        metrics = {names.N_TEST_IMAGES: float(stats.n_images), names.PREDICTED_EMPTY_SHARE: float(stats.empty_share)}
        return SubmissionFile(stats.path, stats.n_images, test.fingerprint, metrics, seconds, test.ids)


TASK = NerveTask()
