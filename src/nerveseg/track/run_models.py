"""Tracked cross-validation runs resolved to local files: the best one, or one by id, with its
config and every fold's weights (the newest FINISHED fold run per fold, by the run schema)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from nerveseg.config import TrainConfig, load_config
from nerveseg.errors import NervesegError
from nerveseg.tasks import get_task
from nerveseg.track import schema
from nerveseg.track.schema import (
    CONFIG_ARTIFACT,
    PARENT_TAG,
    RUN_NAME_TAG,
    RUN_TYPE_TAG,
)
from nerveseg.track.store import (
    download_artifacts,
    find_runs,
    load_mlflow_settings,
)


@dataclass
class RunModels:
    """One CV run resolved to local files: its config and one weights file per fold."""

    run_id: str
    name: str
    experiment_id: str
    config: TrainConfig
    weights_paths: list[Path]
    tags: dict[str, str]
    cv_score_mean: float | None


# ----------------------------------------------------------------------------------- choosing runs


def get_run(client: MlflowClient, run_id: str) -> Run:
    try:
        return client.get_run(run_id)
    except MlflowException as err:
        raise NervesegError(
            f"unknown MLflow run id {run_id!r} at this tracking store; list runs with `mlflow runs list` "
            "or pick one in the MLflow UI (the parent cross-validation run)"
        ) from err


TASK_PARAM = f"params.{schema.TASK_PARAM}"  # runs from before the field existed are nerve runs


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


def resolve_run(client: MlflowClient, run_id: str, workdir: Path, tracking_uri: str) -> RunModels:
    """Download ``config.yaml`` and every fold's weights of CV run ``run_id`` into ``workdir``."""
    run = cv_parent_run(client, run_id)
    name = run_name(run)
    if run.info.status != "FINISHED":
        print(f"warning: run {run_id} ({name}) is {run.info.status}, not FINISHED", file=sys.stderr)
    local = workdir / run_id
    try:
        config_path = download_artifacts(run_id, CONFIG_ARTIFACT, local, tracking_uri=tracking_uri)
    except ValueError as err:
        raise NervesegError(f"run {run_id} ({name}) has no {CONFIG_ARTIFACT} artifact; is it a CV parent run?") from err
    config = load_config(config_path).replace(name=name)
    folds = schema.newest_finished_fold_runs(client, run)
    missing = [k for k in range(config.folds) if k not in folds]
    if missing:
        raise NervesegError(
            f"run {run_id} ({name}) has no finished fold run for folds {missing} of {config.folds}, so no weights "
            "for them; finish the cross-validation (python src/cv_train.py --resume) or pick another run"
        )
    weights = []
    for k in range(config.folds):
        artifact = schema.weights_artifact(k)
        try:
            weights.append(
                download_artifacts(folds[k].info.run_id, artifact, local / f"fold_{k}", tracking_uri=tracking_uri)
            )
        except ValueError as err:
            raise NervesegError(
                f"run {run_id} ({name}) has no weights for fold {k} (artifact {artifact} of fold run "
                f"{folds[k].info.run_id}); retrain that fold or pick another run"
            ) from err
        fold_run = folds[k].info.run_id
        what = f"fold {k}'s weights (artifact {artifact} of fold run {fold_run}, CV run {run_id} ({name}))"
        check_weights_file(weights[-1], what, "retrain that fold or pick another run")
    score = run.data.metrics.get(schema.CV_SCORE_MEAN)
    return RunModels(run_id, name, run.info.experiment_id, config, weights, dict(run.data.tags), score)


def check_weights_file(path: Path, what: str, fix: str) -> None:
    """Open ``path`` as HDF5 (only its superblock is read) and raise ``NervesegError`` naming ``what`` when it is
    truncated or no weights file at all. Weights are read from a temporary copy of the artifact; Keras's error
    would name that copy, which is gone by the time anybody reads the message."""
    import h5py

    try:
        with h5py.File(path, "r"):
            pass
    except OSError as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise NervesegError(f"{what} cannot be read ({reason}); {fix}") from err
