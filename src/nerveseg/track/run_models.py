"""Tracked cross-validation runs: every finished one as a record for ``run.choice``, or one by id checked to be a
CV parent run.
Their files are read through ``track.run_reader.MlflowRunReader``."""

from __future__ import annotations

import pandas as pd
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from nerveseg import names
from nerveseg.errors import NervesegError
from nerveseg.run.choice import CandidateRun
from nerveseg.run.fold_files import check_weights_file
from nerveseg.track import schema
from nerveseg.track.schema import (
    PARENT_TAG,
    RUN_NAME_TAG,
    RUN_TYPE_TAG,
)
from nerveseg.track.store import find_runs

# ----------------------------------------------------------------------------------- choosing runs


def get_run(client: MlflowClient, run_id: str) -> Run:
    try:
        return client.get_run(run_id)
    except MlflowException as err:
        raise NervesegError(
            f"unknown MLflow run id {run_id!r} at this tracking store; list runs with `mlflow runs list` "
            "or pick one in the MLflow UI (the parent cross-validation run)"
        ) from err


def _text(row: pd.Series, column: str) -> str:
    value = row.get(column)
    return "" if value is None or pd.isna(value) else str(value)


def cv_candidates(experiment_name: str | None = None, *, tracking_uri: str | None = None) -> list[CandidateRun]:
    """Every FINISHED cross-validation run of the experiment, newest first, as the plain records ``run.choice``
    chooses among (runs from before the task param existed are nerve runs)."""
    runs = find_runs(experiment_name, run_type=schema.CV_RUN, status="FINISHED", tracking_uri=tracking_uri)
    candidates = []
    for _, row in runs.iterrows():
        metrics = {
            column.removeprefix("metrics."): float(value)
            for column, value in row.items()
            if str(column).startswith("metrics.") and pd.notna(value)
        }
        started = row.get("start_time")
        candidates.append(
            CandidateRun(
                run_id=str(row["run_id"]),
                name=_text(row, f"tags.{RUN_NAME_TAG}") or str(row["run_id"]),
                task=_text(row, f"params.{names.TASK_PARAM}") or "nerve",
                config=_text(row, f"params.{names.CONFIG_NAME_PARAM}"),
                started=None if started is None or pd.isna(started) else started.to_pydatetime(),
                fingerprint=_text(row, f"tags.{names.DATA_FINGERPRINT}"),
                metrics=metrics,
            )
        )
    return candidates


def run_name(run: Run) -> str:
    """The run's name as the runs table shows it (its id when it has none)."""
    return run.data.tags.get(RUN_NAME_TAG) or run.info.run_name or run.info.run_id


def cv_parent_run(client: MlflowClient, run_id: str) -> Run:
    """Run ``run_id`` after checking it is a cross-validation's parent run (a fold's run names its parent)."""
    run = get_run(client, run_id)
    run_type = run.data.tags.get(RUN_TYPE_TAG)
    name = run_name(run)
    if run_type == schema.FOLD_RUN:
        parent = run.data.tags.get(PARENT_TAG, "?")
        raise NervesegError(f"run {run_id} ({name}) is one fold's run; pass its cross-validation parent {parent}")
    if run_type != schema.CV_RUN:
        raise NervesegError(
            f"run {run_id} ({name}) has {RUN_TYPE_TAG}={run_type!r}; expected a cross-validation run ('cv')"
        )
    return run


__all__ = ["check_weights_file", "cv_candidates", "cv_parent_run", "get_run", "run_name"]
