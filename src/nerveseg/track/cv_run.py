"""Cross-validation tracked in MLflow: the one code path behind ``cv_train.py`` and ``tune.py``.

One parent run per cross-validation (named after the config) and one nested child run per fold.
Folds may be trained in one process, spread over processes or machines (``fold=k`` with
``parent_run_id``), or continued after an interruption (``resume=True``). Whichever process
finishes the last fold finalises the parent: it assembles the out-of-fold (OOF) predictions from
the fold runs' artifacts, so no fold is ever trained twice, and decides the post-processing.

Runs are written with ``MlflowClient`` and explicit run ids, never through MLflow's global
"active run", so tune's own study run and several folds in one process cannot get mixed up. A run
that is FINISHED is never written to again.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.entities import Metric, Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.registry import resolve_tags

from nerveseg.config import TrainConfig
from nerveseg.errors import NervesegError, is_interruption
from nerveseg.evaluate.postprocess_settings import PostprocessDecision
from nerveseg.io_utils import check_writable_dir, sha256_file
from nerveseg.paths import FOLDS_DIR, PROCESSED_DIR, RAW_DIR
from nerveseg.tasks import get_task
from nerveseg.tasks.base import CVFinal, Task
from nerveseg.track import cv_artifacts, cv_parents, cv_report, schema
from nerveseg.track.cv_parents import say
from nerveseg.track.fold_logging import CVListener, EpochLogger, StopState
from nerveseg.track.provenance import environment_tags
from nerveseg.track.schema import ERROR_TAG, FOLD_TAG, PARENT_TAG, RUN_TYPE_TAG, STOPPED_TAG, OofArrays
from nerveseg.track.store import MlflowSettings, load_mlflow_settings, setup_mlflow
from nerveseg.train import fold as training
from nerveseg.train.cv_summary import CVSummary


@dataclass
class CVRunResult:
    """What a call did; ``final`` is None until the parent's last fold is done.

    ``final`` is the task's outcome (metrics with the ranking metric, table, post-processing decision);
    ``summary``/``postprocessing`` are the nerve task's typed views of it (None for other tasks).
    """

    parent_run_id: str
    summary: CVSummary | None
    postprocessing: PostprocessDecision | None
    experiment_id: str = ""
    trained_folds: list[int] = field(default_factory=list)  # folds trained by this call
    final: CVFinal | None = None


# ------------------------------------------------------------------------------------- finalising


@dataclass
class _CV:
    """What one ``run_cv`` call works with, so that its steps take one argument instead of ten."""

    client: MlflowClient
    experiment_id: str
    config: TrainConfig
    data: Any  # the task's training data (nerve: PreparedData; isbi2012: IsbiData)
    folds: np.ndarray
    folds_file: Path
    raw_dir: Path
    work: Path
    env_tags: dict[str, str]
    listener: CVListener | None
    progress: bool
    task: Task
    state: StopState = field(default_factory=StopState)

    def say(self, message: str) -> None:
        """Progress lines (which fold, which run): silent with ``progress=False`` (``--quiet``)."""
        if self.progress:
            say(message)


def _finalise(cv: _CV, run_id: str, results: list[training.FoldResult]) -> CVFinal:
    """The task's summary of a complete cross-validation logged on the parent, which is then FINISHED."""
    client, config, data = cv.client, cv.config, cv.data
    final = cv.task.finalise(config, data, cv.folds, results, progress=cv.progress)
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in final.metrics.items()])
    for key, value in final.tags.items():
        client.set_tag(run_id, key, value)

    oof_path = schema.save_oof(
        cv.work / schema.OOF_PROBS_FILE, OofArrays(final.oof_ids, final.oof_probs, final.oof_presence)
    )
    client.log_artifact(run_id, str(oof_path), schema.OOF_DIR)
    facts = {
        **final.facts,
        "task": cv.task.name,
        "ranking_metric": cv.task.ranking_metric,
        "config_name": config.name,
        "n_folds": config.folds,
        "n_images": len(data),
        "data_fingerprint": data.fingerprint,
        "folds_file": cv.folds_file.name,
        "table": final.table,
    }
    client.log_text(
        run_id, json.dumps(facts, indent=1, default=cv_artifacts.json_default) + "\n", schema.SUMMARY_ARTIFACT
    )
    client.log_text(
        run_id,
        json.dumps(final.decision.to_json(), indent=1, default=cv_artifacts.json_default) + "\n",
        schema.POSTPROCESSING_ARTIFACT,
    )
    if final.report is not None:  # the nerve task's report: CV table description, progress, subjects, gallery
        outcome = cv_report.CVOutcome(config, data, results, final.report, final.oof_probs, final.decision)
        cv_report.log_cv_report(client, run_id, outcome, raw_dir=cv.raw_dir, work=cv.work)
    else:
        client.set_tag(run_id, schema.DESCRIPTION_TAG, final.description)
    client.set_terminated(run_id, "FINISHED")
    return final


def _stop_runs(client: MlflowClient, run_ids: list[str], err: BaseException, state: StopState) -> None:
    """Mark runs KILLED (interrupt, also one Keras wrapped in SystemError, or a listener's exception) or
    FAILED; never hides ``err``."""
    interrupted = is_interruption(err)
    stopped = interrupted or err is state.listener_error
    status = "KILLED" if stopped else "FAILED"
    stopper = "KeyboardInterrupt" if interrupted else type(err).__name__
    tag = (STOPPED_TAG, stopper) if stopped else (ERROR_TAG, f"{type(err).__name__}: {err}"[:500])
    for run_id in run_ids:
        try:
            if client.get_run(run_id).info.status == "FINISHED":
                continue
            client.set_tag(run_id, *tag)
            client.set_terminated(run_id, status)
        except Exception as log_err:  # the store may be what failed; the original error matters more
            say(f"warning: could not mark run {run_id} {status}: {log_err}")


# ------------------------------------------------------------------------------------------ run_cv


def _open_parent(
    cv: _CV,
    parent: Run | None,
    *,
    experiment_name: str,
    nested_under: str | None,
    parent_tags: Mapping[str, str] | None,
    one_fold: bool,
) -> Run:
    """Create the parent run, or check that the data matches the one being joined and set it RUNNING."""
    client, data = cv.client, cv.data
    folds_sha = sha256_file(cv.folds_file)
    if parent is None:
        tags = {
            RUN_TYPE_TAG: schema.CV_RUN,
            schema.DATA_FINGERPRINT_TAG: data.fingerprint,
            schema.FOLDS_SHA_TAG: folds_sha,
            **cv.env_tags,
            **({PARENT_TAG: nested_under} if nested_under else {}),
            **(parent_tags or {}),
        }
        parent = cv_parents.create_parent(client, cv.experiment_id, cv.config, tags, cv.folds_file, cv.work)
        run_id = parent.info.run_id
        cv.say(f"MLflow parent run {run_id} ({cv.config.name}) in experiment {experiment_name!r}")
        if one_fold:
            say(f"train the other folds with: --fold <k> --parent-run-id {run_id}")
        return parent
    run_id = parent.info.run_id
    cv_parents.check_same_data(parent, data.fingerprint, folds_sha)
    started_at, here = parent.data.tags.get(schema.GIT_COMMIT_TAG, ""), cv.env_tags[schema.GIT_COMMIT_TAG]
    if started_at and started_at != here:
        say(f"warning: parent run {run_id} was started at commit {started_at[:10]}, this process runs {here[:10]}")
    if parent.info.status != "RUNNING":
        client.update_run(run_id, status="RUNNING")
    return parent


def _train_fold_run(cv: _CV, parent_id: str, fold: int, position: str, summary_text: str) -> training.FoldResult:
    """One fold as a child run: FINISHED with its artifacts, or KILLED/FAILED and re-raised."""
    client = cv.client
    tags = {RUN_TYPE_TAG: schema.FOLD_RUN, FOLD_TAG: str(fold), PARENT_TAG: parent_id, **cv.env_tags}
    run_id = client.create_run(cv.experiment_id, run_name=f"fold_{fold}", tags=resolve_tags(tags)).info.run_id
    try:
        cv_artifacts.log_fold_params(client, run_id, cv.task, cv.config, cv.data, cv.folds, fold)
        n_val = int(np.count_nonzero(cv.folds == fold))
        cv.say(
            f"fold {fold} ({position}; {cv.config.folds} folds in all): "
            f"{len(cv.data) - n_val} training / {n_val} validation images, run {run_id}"
        )
        result = cv.task.train_fold(
            cv.config,
            cv.data,
            cv.folds,
            fold,
            cv.work,
            callbacks=[EpochLogger(client, run_id, fold, cv.listener, cv.state)],
            verbose=2 if cv.progress else 0,
        )
        cv_artifacts.log_fold(client, run_id, cv.data, result, summary_text)
        client.set_terminated(run_id, "FINISHED")
    except BaseException as err:
        _stop_runs(client, [run_id], err, cv.state)
        raise
    cv.say(f"fold {fold}: val_score {result.val_score:.4f} (kept epoch {result.kept_epoch}: {result.checkpoint})")
    return result


def _complete(cv: _CV, parent: Run, results: dict[int, training.FoldResult]) -> CVFinal | None:
    """Finalise the parent when all its folds are FINISHED (here or elsewhere); otherwise say what is missing."""
    parent_id, n_folds = parent.info.run_id, cv.config.folds
    finished = schema.newest_finished_fold_runs(cv.client, parent)
    missing = [k for k in range(n_folds) if k not in finished]
    if missing:
        say(
            f"parent run {parent_id}: {n_folds - len(missing)}/{n_folds} folds finished, missing {missing}; "
            f"train them with --fold <k> --parent-run-id {parent_id} (the last one to finish finalises the run)"
        )
        return None
    if cv.client.get_run(parent_id).info.status == "FINISHED":
        cv.say(f"parent run {parent_id} was already finalised by another process")
        return None
    all_results = [
        results[k] if k in results else cv_artifacts.load_fold(cv.client, finished[k], cv.data, cv.folds, cv.work)
        for k in range(n_folds)
    ]
    return _finalise(cv, parent_id, all_results)


def run_cv(
    config: TrainConfig,
    *,
    raw_dir: Path = RAW_DIR,
    cache_dir: Path = PROCESSED_DIR,
    folds_dir: Path = FOLDS_DIR,
    fold: int | None = None,
    parent_run_id: str | None = None,
    resume: bool = False,
    listener: CVListener | None = None,
    parent_tags: Mapping[str, str] | None = None,
    nested_under: str | None = None,
    work_dir: Path | None = None,
    progress: bool = True,
    settings: MlflowSettings | None = None,
) -> CVRunResult:
    """Train the cross-validation ``config`` (all folds, or only ``fold``) as MLflow runs.

    ``parent_run_id`` joins an unfinished parent run (same params, data and folds file); ``resume``
    skips folds whose run FINISHED and, without ``parent_run_id``, picks the newest unfinished parent
    of this config. ``nested_under`` makes the parent a child of that run (tune's study run);
    ``parent_tags`` are added to a new parent. ``work_dir`` keeps the local weights and OOF files
    (a temporary folder otherwise). The tracking store is checked before any data is read.
    Exceptions propagate after the runs are marked KILLED (interrupt, listener) or FAILED.
    """
    if fold is not None and not 0 <= fold < config.folds:
        raise NervesegError(f"fold={fold} is out of range; this config has folds 0..{config.folds - 1}")
    check_writable_dir(cache_dir, "--cache-dir")  # before the tracking store and hours of training
    check_writable_dir(folds_dir, "--folds-dir")
    settings = settings or load_mlflow_settings()
    client, experiment_id = _tracking(settings, nested_under)
    requested = [fold] if fold is not None else list(range(config.folds))
    parent, to_train = cv_parents.choose_parent(
        client, experiment_id, config, requested, parent_run_id, resume, nested_under
    )
    if parent is not None:
        experiment_id = parent.info.experiment_id  # a parent named by id may live in another experiment

    task = get_task(config.task)
    data = task.load_train(config, Path(raw_dir), Path(cache_dir), progress=progress)
    folds, folds_file = task.make_folds(data, config, Path(folds_dir))
    with contextlib.ExitStack() as stack:
        work = Path(work_dir) if work_dir is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=True)
        cv = _CV(client, experiment_id, config, data, folds, folds_file, Path(raw_dir), work, environment_tags(),
                 listener, progress, task)  # fmt: skip
        parent = _open_parent(
            cv,
            parent,
            experiment_name=settings.experiment_name,
            nested_under=nested_under,
            parent_tags=parent_tags,
            one_fold=fold is not None,
        )
        results, final = _train_and_complete(cv, parent, to_train)
    summary = final.report if final is not None and isinstance(final.report, CVSummary) else None
    postprocessing = final.decision if final is not None and isinstance(final.decision, PostprocessDecision) else None
    return CVRunResult(parent.info.run_id, summary, postprocessing, experiment_id, list(results), final)


def _tracking(settings: MlflowSettings, nested_under: str | None) -> tuple[MlflowClient, str]:
    """The client and experiment id, after checking the store (and the run to nest under) exist."""
    experiment_id = setup_mlflow(settings)
    client = MlflowClient(settings.tracking_uri)
    if nested_under is not None:
        try:
            client.get_run(nested_under)
        except MlflowException as err:
            raise NervesegError(f"nested_under={nested_under!r} is not a run in the tracking store") from err
    return client, experiment_id


def _train_and_complete(
    cv: _CV, parent: Run, to_train: list[int]
) -> tuple[dict[int, training.FoldResult], CVFinal | None]:
    """Train the missing folds one child run each, then finalise the parent if every fold is done.

    Any exception marks the parent KILLED (Ctrl-C, also one Keras re-raised as SystemError, or the
    listener's) or FAILED and propagates; a wrapped Ctrl-C propagates as ``KeyboardInterrupt``.
    """
    parent_id = parent.info.run_id
    results: dict[int, training.FoldResult] = {}
    try:
        summary_text = cv_artifacts.model_summary(cv.task, cv.config) if to_train else ""
        for position, k in enumerate(to_train, 1):
            results[k] = _train_fold_run(cv, parent_id, k, f"{position}/{len(to_train)}", summary_text)
            if cv.listener is not None:
                try:
                    cv.listener.on_fold_end(k, results[k].val_score)
                except BaseException as err:
                    cv.state.listener_error = err
                    raise
        final = _complete(cv, parent, results)
    except BaseException as err:
        _stop_runs(cv.client, [parent_id], err, cv.state)
        if is_interruption(err) and not isinstance(err, KeyboardInterrupt):
            raise KeyboardInterrupt(f"interrupted ({type(err).__name__} raised by Keras)") from err
        raise
    return results, final


__all__ = ["CVListener", "CVRunResult", "run_cv"]
