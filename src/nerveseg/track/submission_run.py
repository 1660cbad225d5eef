"""From tracked cross-validation runs to a submission, recorded back in MLflow.

Choose the runs (one given id, several ids to ensemble, a registered model's run, or the best finished CV run of
one task trained on the data to predict, by its estimate: ``run.choice``), read them through
``track.run_reader.MlflowRunReader`` and let ``run.submit.write_submission`` (the store-neutral use case, which a
LocalStore folder goes through too) predict and write the file; then log it as a child run "submission" of the CV
run, and keep a post-processing decided now on that run. This module only talks to MLflow.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient

from nerveseg import names
from nerveseg.errors import NervesegError
from nerveseg.names import POSTPROCESSING_ARTIFACT
from nerveseg.paths import PROCESSED_DIR, RAW_DIR, SUBMISSIONS_DIR
from nerveseg.run.choice import SHORT, CandidateRun, RunChoice, candidates_table, choose_run, default_task
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
from nerveseg.tasks.base import Task
from nerveseg.track.registry import run_of_model
from nerveseg.track.run_reader import MlflowRunReader, cv_candidates
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


@dataclass(frozen=True)
class DataToMatch:
    """The training data a submission's run must have been trained on: its folder and the cache to read its
    fingerprint from (``Task.data_fingerprint``)."""

    raw_dir: Path
    cache_dir: Path
    progress: bool = True

    def fingerprint(self, task: Task) -> str:
        """``task``'s fingerprint of the training data, once the images to predict are known to be there."""
        task.check_test_data(self.raw_dir)  # seconds of hashing would come first otherwise
        try:
            return task.data_fingerprint(self.raw_dir, self.cache_dir, progress=self.progress)
        except NervesegError as err:
            raise NervesegError(
                f"cannot tell which runs were trained on the data in --raw-dir {self.raw_dir} ({err}); "
                "pass --raw-dir the data the run was trained on, or --run-id"
            ) from err

    def fingerprints(self, tasks: Iterable[str]) -> dict[str, str]:
        """task -> fingerprint, for the tasks whose data (training and test) ``raw_dir`` holds."""
        found = {}
        for name in dict.fromkeys(tasks):
            try:
                found[name] = self.fingerprint(get_task(name))
            except NervesegError:
                continue  # no data of that task here
        return found


def choose_cv_run(
    experiment_name: str, uri: str, task: str | None, data: DataToMatch | None
) -> tuple[list[CandidateRun], RunChoice]:
    """The experiment's finished CV runs and ``run.choice.choose_run`` over them: of ``task`` (None: the task of the
    newest run trained on ``data``, else of the newest run), trained on ``data`` (None: any data)."""
    candidates = cv_candidates(experiment_name, tracking_uri=uri)
    fingerprints: dict[str, str] = {}
    if task is None:
        fingerprints = {} if data is None else data.fingerprints(run.task for run in candidates)
        task = default_task(candidates, fingerprints)
    chosen = get_task(task)
    fingerprint = None if data is None else fingerprints.get(chosen.name) or data.fingerprint(chosen)
    return candidates, choose_run(candidates, chosen, fingerprint)


def chosen_runs(
    run_id: str | None,
    run_ids: list[str] | None,
    experiment_name: str,
    uri: str,
    task: str | None,
    data: DataToMatch | None = None,
) -> list[str]:
    """The run ids given, or the best finished CV run (``choose_cv_run``), printed with why and what was skipped."""
    if run_id is None and not run_ids:
        _, choice = choose_cv_run(experiment_name, uri, task, data)
        if skipped := choice.skipped_line():
            print(skipped)
        if choice.best is None:
            raise choice.no_match(experiment_name, None if data is None else data.raw_dir)
        print(choice.chosen_line())
        run_id = choice.best.run.run_id
    return [run_id] if run_id is not None else list(run_ids or [])


def list_candidates(*, raw_dir: Path, cache_dir: Path, task: str | None, progress: bool) -> str:
    """``submit.py --list``: the experiment's finished CV runs, which of them were trained on the data in ``raw_dir``
    and the one a submission would take, as lines."""
    _, uri, experiment_name = tracking()
    candidates, choice = choose_cv_run(experiment_name, uri, task, DataToMatch(raw_dir, cache_dir, progress))
    assert choice.fingerprint is not None, "choose_cv_run compares the data when it is given"
    lines = [
        f"finished CV runs in MLflow experiment {experiment_name!r}; task {choice.task.name}, data in {raw_dir}: "
        f"fingerprint {choice.fingerprint[:SHORT]}",
        candidates_table(candidates, choice),
        f"submit.py takes the run marked *: {choice.chosen_line()}" if choice.best else "no run was trained on it",
        choice.skipped_line(),
    ]
    return "\n".join(line for line in lines if line)


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
    finished CV run of ``task`` trained on the data in ``raw_dir`` (its data fingerprint), by that task's estimate
    (``choose_cv_run``; ``task`` None: that of the newest run on this data, else of the newest run).
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
    data = DataToMatch(options.raw_dir, options.cache_dir, progress)
    chosen = chosen_runs(run_id, run_ids, experiment_name, uri, task, data)
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
