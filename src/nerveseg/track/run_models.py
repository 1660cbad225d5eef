"""Tracked cross-validation runs chosen: the best one of a task, or one by id checked to be a CV parent run.
Their files are read through ``track.run_reader.MlflowRunReader``."""

from __future__ import annotations

import pandas as pd
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from nerveseg import names
from nerveseg.errors import NervesegError
from nerveseg.run.fold_files import check_weights_file
from nerveseg.tasks import get_task
from nerveseg.track import schema
from nerveseg.track.schema import (
    PARENT_TAG,
    RUN_NAME_TAG,
    RUN_TYPE_TAG,
)
from nerveseg.track.store import find_runs, load_mlflow_settings

# ----------------------------------------------------------------------------------- choosing runs


def get_run(client: MlflowClient, run_id: str) -> Run:
    try:
        return client.get_run(run_id)
    except MlflowException as err:
        raise NervesegError(
            f"unknown MLflow run id {run_id!r} at this tracking store; list runs with `mlflow runs list` "
            "or pick one in the MLflow UI (the parent cross-validation run)"
        ) from err


TASK_PARAM = f"params.{names.TASK_PARAM}"  # runs from before the field existed are nerve runs


def best_cv_run(
    experiment_name: str | None = None, *, tracking_uri: str | None = None, task: str | None = None
) -> tuple[str, str, float]:
    """(run id, name, score) of the best FINISHED cross-validation run of the experiment for ``task``.

    ``task`` None means the task of the newest finished CV run (what was trained last). Runs are ranked
    by that task's ranking metric in its direction (nerve: highest ``cv_score_mean``; isbi2012: lowest
    ``cv_v_rand_error_mean``); runs of other tasks are never picked.
    """
    settings = load_mlflow_settings()
    name = experiment_name or settings.experiment_name
    runs = find_runs(name, run_type=schema.CV_RUN, status="FINISHED", tracking_uri=tracking_uri)
    tasks = runs[TASK_PARAM].fillna("nerve") if TASK_PARAM in runs else pd.Series("nerve", index=runs.index)
    if task is None and not runs.empty:
        task = str(tasks.iloc[0])  # newest first
    chosen = get_task(task or "nerve")
    column = f"metrics.{chosen.ranking_metric}"
    runs = runs[tasks == chosen.name]
    if column in runs:
        runs = runs[runs[column].notna()]
    if runs.empty or column not in runs:
        raise NervesegError(
            f"no finished cross-validation run of task {chosen.name} with {chosen.ranking_metric} in MLflow "
            f"experiment {name!r}; train one with `python src/cv_train.py` or pass --run-id"
        )
    best = runs.loc[runs[column].idxmax() if chosen.higher_is_better else runs[column].idxmin()]
    return str(best["run_id"]), str(best.get(f"tags.{RUN_NAME_TAG}") or best["run_id"]), float(best[column])


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


__all__ = ["best_cv_run", "check_weights_file", "cv_parent_run", "get_run", "run_name"]
