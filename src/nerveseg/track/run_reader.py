"""Tracked cross-validation runs read back: ``MlflowRunReader``, a finished parent run (``run.store.RunReader``) with
its files downloaded on demand; ``MlflowRuns``, the configured store's finished ones as records for ``run.choice``;
``open_run`` and ``chosen_reader``, which turn what a user typed (an MLflow run id or a LocalStore folder) into a
reader."""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from nerveseg import names
from nerveseg.config import DEFAULT_TASK
from nerveseg.errors import NervesegError
from nerveseg.run.choice import CandidateRun, chosen_runs
from nerveseg.run.fold_files import check_weights_file
from nerveseg.run.local_store import LocalRunReader
from nerveseg.run.store import RunReader, StoredRun
from nerveseg.track import schema
from nerveseg.track.store import (
    MlflowSettings,
    TrackingError,
    check_store_to_read,
    download_artifacts,
    load_mlflow_settings,
)
from nerveseg.uris import redact_uri

RUN_ID = re.compile(r"[0-9a-f]{32}")  # what MLflow's run ids look like


def get_run(client: MlflowClient, run_id: str) -> Run:
    """Run ``run_id``, or one line saying the store has no such run."""
    try:
        return client.get_run(run_id)
    except MlflowException as err:
        raise NervesegError(
            f"unknown MLflow run id {run_id!r} at this tracking store; list runs with `mlflow runs list` "
            "or pick one in the MLflow UI (the parent cross-validation run)"
        ) from err


def run_name(run: Run) -> str:
    """The run's name as the runs table shows it (its id when it has none)."""
    return run.data.tags.get(schema.RUN_NAME_TAG) or run.info.run_name or run.info.run_id


def cv_parent_run(client: MlflowClient, run_id: str) -> Run:
    """Run ``run_id`` after checking it is a cross-validation's parent run (a fold's run names its parent)."""
    run = get_run(client, run_id)
    run_type = run.data.tags.get(schema.RUN_TYPE_TAG)
    name = run_name(run)
    if run_type == schema.FOLD_RUN:
        parent = run.data.tags.get(schema.PARENT_TAG, "?")
        raise NervesegError(f"run {run_id} ({name}) is one fold's run; pass its cross-validation parent {parent}")
    if run_type != schema.CV_RUN:
        raise NervesegError(
            f"run {run_id} ({name}) has {schema.RUN_TYPE_TAG}={run_type!r}; expected a cross-validation run ('cv')"
        )
    return run


def fold_runs(client: MlflowClient, parent: Run) -> dict[int, list[Run]]:
    """The parent's fold runs by fold number (any status), oldest first."""
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=schema.children_filter(parent.info.run_id, schema.FOLD_RUN),
        max_results=10_000,
        order_by=["attributes.start_time ASC"],
    )
    children: dict[int, list[Run]] = {}
    for run in runs:
        try:
            fold = int(run.data.tags[schema.FOLD_TAG])
        except (KeyError, ValueError):
            continue  # not written by MlflowStore; ignore rather than guess
        children.setdefault(fold, []).append(run)
    return children


def newest_finished_fold_runs(client: MlflowClient, parent: Run) -> dict[int, Run]:
    """fold -> its newest FINISHED run (a resumed CV can have failed or killed attempts beside it)."""
    finished = {}
    for fold, runs in fold_runs(client, parent).items():
        done = [run for run in runs if run.info.status == "FINISHED"]
        if done:
            finished[fold] = done[-1]
    return finished


class MlflowRunReader(StoredRun):
    """A FINISHED CV parent run at ``tracking_uri``; refuses a fold's run, another kind of run or an unfinished one
    (``unfinished="warn"``: warns, for a submission from a run whose folds all finished but whose summary did not)."""

    def __init__(self, client: MlflowClient, run_id: str, tracking_uri: str, *, unfinished: str = "refuse") -> None:
        run = cv_parent_run(client, run_id)
        if run.info.status != "FINISHED":
            if unfinished == "refuse":
                raise NervesegError(f"run {run_id} ({run_name(run)}) is {run.info.status}; pass a finished run")
            print(f"warning: run {run_id} ({run_name(run)}) is {run.info.status}, not FINISHED", file=sys.stderr)
        self.run, self._tracking_uri, self._client = run, tracking_uri, client

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    @property
    def experiment_id(self) -> str:
        return self.run.info.experiment_id

    @property
    def name(self) -> str:
        return run_name(self.run)

    @property
    def task(self) -> str:
        return self.run.data.params.get(names.TASK_PARAM, DEFAULT_TASK)

    @property
    def data_fingerprint(self) -> str:
        return self.run.data.tags.get(names.DATA_FINGERPRINT, "")

    def metrics(self) -> dict[str, float]:
        return dict(self.run.data.metrics)

    def file(self, artifact: str, workdir: Path) -> Path | None:
        try:
            return download_artifacts(self.run_id, artifact, workdir / self.run_id, tracking_uri=self._tracking_uri)
        except (TrackingError, ValueError):
            return None

    def fold_weights(self, workdir: Path) -> list[Path]:
        """The newest FINISHED fold run's weights per fold, downloaded under ``workdir``."""
        run_id, name, folds = self.run_id, self.name, self.config().folds
        runs = newest_finished_fold_runs(self._client, self.run)
        missing = [k for k in range(folds) if k not in runs]
        if missing:
            raise NervesegError(
                f"run {run_id} ({name}) has no finished fold run for folds {missing} of {folds}, so no weights "
                "for them; finish the cross-validation (python src/cv_train.py --resume) or pick another run"
            )
        weights = []
        for k in range(folds):
            artifact, fold_run = names.weights_artifact(k), runs[k].info.run_id
            try:
                path = download_artifacts(
                    fold_run, artifact, workdir / run_id / f"fold_{k}", tracking_uri=self._tracking_uri
                )
            except (TrackingError, ValueError) as err:
                raise NervesegError(
                    f"run {run_id} ({name}) has no weights for fold {k} (artifact {artifact} of fold run "
                    f"{fold_run}); retrain that fold or pick another run"
                ) from err
            what = f"fold {k}'s weights (artifact {artifact} of fold run {fold_run}, CV run {run_id} ({name}))"
            check_weights_file(path, what, "retrain that fold or pick another run")
            weights.append(path)
        return weights


class MlflowRuns:
    """The configured tracking store's finished CV runs (``run.choice.RunCatalog``) and a reader for any of them;
    ``open`` checks the store answers (and exists) within seconds, as every command that only reads does."""

    def __init__(self, client: MlflowClient, tracking_uri: str, experiment: str) -> None:
        self.client, self.tracking_uri, self.experiment = client, tracking_uri, experiment

    @classmethod
    def open(cls, settings: MlflowSettings | None = None) -> Self:
        settings = settings or load_mlflow_settings()
        check_store_to_read(settings.tracking_uri)
        return cls(MlflowClient(settings.tracking_uri), settings.tracking_uri, settings.experiment_name)

    def experiment_id(self) -> str:
        """The configured experiment's id; a missing experiment is one line: nothing was trained there."""
        experiment = self.client.get_experiment_by_name(self.experiment)
        if experiment is None:
            raise TrackingError(
                f"MLflow experiment {self.experiment!r} does not exist at {redact_uri(self.tracking_uri)}; train first "
                "(python src/cv_train.py) or set MLFLOW_TRACKING_URI / MLFLOW_EXPERIMENT_NAME to where the runs are"
            )
        return experiment.experiment_id

    def candidates(self) -> list[CandidateRun]:
        """Every FINISHED cross-validation run of the experiment, newest first, as the plain records ``run.choice``
        chooses among (runs from before the task param existed are nerve runs)."""
        runs = self.client.search_runs(
            [self.experiment_id()],
            filter_string=f"tags.`{schema.RUN_TYPE_TAG}` = '{schema.CV_RUN}' and attributes.status = 'FINISHED'",
            max_results=10_000,
            order_by=["attributes.start_time DESC"],
        )
        return [
            CandidateRun(
                run_id=run.info.run_id,
                name=run_name(run),
                task=run.data.params.get(names.TASK_PARAM) or DEFAULT_TASK,
                config=run.data.params.get(names.CONFIG_NAME_PARAM, ""),
                started=datetime.fromtimestamp(run.info.start_time / 1000, UTC) if run.info.start_time else None,
                fingerprint=run.data.tags.get(names.DATA_FINGERPRINT, ""),
                metrics=dict(run.data.metrics),
            )
            for run in runs
        ]

    def reader(self, run_id: str, *, unfinished: str = "refuse") -> MlflowRunReader:
        return MlflowRunReader(self.client, run_id, self.tracking_uri, unfinished=unfinished)


def chosen_reader(run_dir: Path | None, run_id: str | None = None, task: str | None = None) -> RunReader:
    """The CV run a command names: ``--run-dir``'s LocalStore folder (no tracking store is read or created), else
    the MLflow run ``--run-id``, else the best finished one of ``task`` (``run.choice``; data not compared)."""
    if run_dir is not None:
        return LocalRunReader(run_dir)
    runs = MlflowRuns.open()
    (chosen,) = chosen_runs(runs, run_id, None, task)
    return runs.reader(chosen)


def open_run(name: str, tracking_uri: str) -> RunReader:
    """A LocalStore folder when ``name`` is an existing folder, else the MLflow run with that id."""
    if Path(name).is_dir():
        return LocalRunReader(name)
    if RUN_ID.fullmatch(name):
        return MlflowRunReader(MlflowClient(tracking_uri), name, tracking_uri)
    raise NervesegError(
        f"{name!r} is neither a LocalStore folder nor an MLflow run id (32 hex digits); pass a CV parent run's id "
        "or the folder of a LocalStore cross-validation"
    )
