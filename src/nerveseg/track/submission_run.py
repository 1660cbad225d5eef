"""From tracked cross-validation runs to a submission, recorded back in MLflow.

Choose the runs (one given id, several ids to ensemble, a registered model's run, or the best finished CV run of
one task by its ranking metric), read them through ``track.run_reader.MlflowRunReader`` and let
``run.submit.write_submission`` (the store-neutral use case, which a LocalStore folder goes through too) predict
and write the file; then log it as a child run "submission" of the CV run, and keep a post-processing decided
now on that run. This module only talks to MLflow.
"""

from __future__ import annotations

import time
from pathlib import Path

from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient

from nerveseg import names
from nerveseg.errors import NervesegError
from nerveseg.names import POSTPROCESSING_ARTIFACT
from nerveseg.paths import PROCESSED_DIR, RAW_DIR, SUBMISSIONS_DIR
from nerveseg.run.resolved_run import DECIDED, decide_for_runs, resolve
from nerveseg.run.submit import (
    SubmissionResult,
    SubmitOptions,
    Written,
    check_options,
    cv_prediction_interval,
    prediction_check,
    submission_metrics,
    submission_params,
    submission_path,
    submission_tags,
    write_submission,
)
from nerveseg.tasks import get_task
from nerveseg.track.registry import run_of_model
from nerveseg.track.run_models import best_cv_run
from nerveseg.track.run_reader import MlflowRunReader
from nerveseg.track.schema import PARENT_TAG, RUN_TYPE_TAG, SUBMISSION_RUN
from nerveseg.track.store import check_store_to_read, get_client, load_mlflow_settings

SUBMISSION_RUN_NAME = "submission"


def _log_submission_run(client: MlflowClient, sub: Written, experiment_id: str) -> str:
    """A FINISHED child run "submission" under the (first) CV run with params, metrics and the file."""
    path = sub.file.path
    tags = {PARENT_TAG: sub.runs[0].run_id, RUN_TYPE_TAG: SUBMISSION_RUN, **submission_tags(sub)}
    run_id = client.create_run(experiment_id, run_name=SUBMISSION_RUN_NAME, tags=tags).info.run_id
    try:
        now = int(time.time() * 1000)
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, 0) for k, v in submission_metrics(sub).items()],
            params=[Param(k, str(v)[: names.MAX_PARAM_LENGTH]) for k, v in submission_params(sub).items()],
        )
        client.log_artifact(run_id, str(path), names.SUBMISSION_DIR)
        client.log_dict(run_id, sub.decision.to_json(), POSTPROCESSING_ARTIFACT)
    except BaseException:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


def tracking() -> tuple[MlflowClient, str, str]:
    """A client for the configured store, checked reachable in seconds (and existing); its URI and experiment."""
    settings = load_mlflow_settings()
    check_store_to_read(settings.tracking_uri)
    return get_client(settings.tracking_uri), settings.tracking_uri, settings.experiment_name


def chosen_runs(
    run_id: str | None, run_ids: list[str] | None, experiment_name: str, uri: str, task: str | None
) -> list[str]:
    if run_id is None and not run_ids:
        run_id, name, score = best_cv_run(experiment_name, tracking_uri=uri, task=task)
        chosen = get_task(task) if task else None
        metric = chosen.ranking_metric if chosen else "score"
        print(f"best finished CV run: {name} ({run_id}), {metric} {score:.4f}")
    return [run_id] if run_id is not None else list(run_ids or [])


def keep_decision(client: MlflowClient, written: Written) -> None:
    """A post-processing decided now for one run is logged on that run, so the next submission reuses it."""
    if written.source == DECIDED:
        client.log_dict(written.runs[0].run_id, written.decision.to_json(), POSTPROCESSING_ARTIFACT)


def make_submission(
    *,
    run_id: str | None = None,
    run_ids: list[str] | None = None,
    tta: bool | None = None,
    raw_dir: Path = RAW_DIR,
    out_dir: Path = SUBMISSIONS_DIR,
    cache_dir: Path = PROCESSED_DIR,
    batch_size: int = 256,
    test_masks_dir: Path | None = None,
    progress: bool = True,
    task: str | None = None,
    file_name: str | None = None,
    model: str | None = None,
) -> SubmissionResult:
    """Predict the test data with the chosen CV run(s), write and validate a new file, log it in MLflow.

    ``run_id`` picks one run, ``run_ids`` ensembles several (equal weight per run), neither picks the best
    finished CV run of ``task`` (None: the task of the newest finished CV run) by that task's ranking metric.
    ``model`` (``models:/nerveseg@champion``) picks the CV run a registered model was made of instead, so its
    submission is the run's. The other options are ``run.submit.SubmitOptions``'. Bad input raises
    ``NervesegError`` naming it; the output and cache folders are checked writable before the store is read.
    """
    if model is not None and (run_id is not None or run_ids):
        raise NervesegError("pass either --model or --run-id/--runs, not both")
    if run_id is not None and run_ids:
        raise NervesegError("pass either one run id (--run-id) or several (--runs), not both")
    if run_ids is not None and len(set(run_ids)) != len(run_ids):
        raise NervesegError(f"--runs lists a run twice: {run_ids}")
    options = SubmitOptions(
        Path(raw_dir), Path(out_dir), Path(cache_dir), tta, batch_size, test_masks_dir, progress, file_name
    )
    check_options(options)
    client, uri, experiment_name = tracking()
    if model is not None:  # a registered model: submit from the CV run it was made of
        run_id = run_of_model(client, model)
    chosen = chosen_runs(run_id, run_ids, experiment_name, uri, task)
    readers = [MlflowRunReader(client, rid, uri, unfinished="warn") for rid in chosen]
    written = write_submission(readers, options)
    keep_decision(client, written)
    return SubmissionResult.of(
        written, submission_run_id=_log_submission_run(client, written, readers[0].experiment_id)
    )


__all__ = [
    "SubmissionResult",
    "cv_prediction_interval",
    "decide_for_runs",
    "make_submission",
    "prediction_check",
    "resolve",
    "submission_path",
]
