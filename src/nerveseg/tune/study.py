"""Hyperparameter search with Optuna over the same cross-validation code path as ``cv_train.py``.

Why the pieces look the way they do:

* The search space is a YAML file over :class:`~nerveseg.config.TrainConfig` keys, so a trial's
  parameters are config overrides and the best trial becomes an ``experiments/*.yaml`` that
  ``cv_train.py --config`` runs as it is (parsing and checks: :mod:`nerveseg.tune.search_space`).
* Every trial runs :func:`nerveseg.run.cross_validate.cross_validate` with an ``MlflowStore`` (no copy of
  the CV logic): a trial's MLflow run *is* a CV parent run (tag ``nerveseg.run_type`` = "cv", per-fold
  child runs, OOF, weights), nested under one MLflow run per study, so ``submit.py --run-id <trial run>``
  takes it directly.
* ``--trials N`` is the study's total over every worker and every resume. Optuna's
  ``MaxTrialsCallback`` only stops a worker *after* a trial ends, so with W workers the study can
  overshoot by up to W-1 trials. Here each worker checks the count and creates its next trial while
  holding a lock shared by all workers of the study (a PostgreSQL/MySQL advisory lock, or a file
  lock beside a SQLite file), so the study ends with exactly N trials (see
  :func:`nerveseg.tune.storage.optimize_exactly`).
* Failures are results: a trial whose loss turns NaN, that runs out of memory, or that raises is
  recorded as FAIL with a ``fail_reason`` user attribute, and the study goes on.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import optuna
from optuna.trial import FrozenTrial, TrialState

from nerveseg import names
from nerveseg.config import TrainConfig, config_to_yaml
from nerveseg.errors import NervesegError
from nerveseg.io_utils import check_writable_dir
from nerveseg.paths import EXPERIMENTS_DIR, FOLDS_DIR, OPTUNA_DB, PROCESSED_DIR, RAW_DIR
from nerveseg.run.store import CVPaths
from nerveseg.tasks import get_task
from nerveseg.tune.objective import CVObjective, make_pruner, report_mode_for
from nerveseg.tune.search_space import SearchSpace
from nerveseg.tune.storage import (
    StudyLock,
    check_storage,
    count_counted_trials,
    make_storage,
    optimize_exactly,
    with_installed_driver,
)
from nerveseg.tune.study_output import export_best_config, format_trial_line
from nerveseg.tune.study_tracker import BASE_CONFIG_ARTIFACT, WORKERS_ATTR, StudyTracker, best_trial
from nerveseg.tune.study_views import describe_study
from nerveseg.uris import redact_uri

DEFAULT_STORAGE = f"sqlite:///{OPTUNA_DB}"

# --------------------------------------------------------------------------------------------
# Running a study
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyResult:
    study_name: str
    n_trials_total: int
    ran_here: int
    states: dict[str, int]
    best_value: float | None
    best_params: dict[str, Any] | None
    best_config_path: Path | None
    study_run_id: str


@dataclass
class TuneSettings:
    """Everything ``tune.py`` decides, so ``run_study`` keeps a short signature."""

    study_name: str
    n_trials: int
    base_config: TrainConfig
    space: SearchSpace
    storage: str = DEFAULT_STORAGE
    raw_dir: Path = RAW_DIR
    cache_dir: Path = PROCESSED_DIR
    folds_dir: Path = FOLDS_DIR
    timeout: float | None = None
    pruner: optuna.pruners.BasePruner | None = None
    seed: int | None = 42
    experiments_dir: Path = EXPERIMENTS_DIR
    max_consecutive_failures: int = 5  # a worker whose trials keep failing stops (a broken setup, not bad luck)
    progress: bool = True  # the CV's per-fold/per-epoch lines on stderr

    def __post_init__(self) -> None:
        if self.n_trials < 1:
            raise NervesegError(f"--trials must be at least 1, got {self.n_trials}")
        if self.max_consecutive_failures < 1:
            raise NervesegError(f"--max-consecutive-failures must be at least 1, got {self.max_consecutive_failures}")
        if self.timeout is not None and self.timeout <= 0:
            raise NervesegError(f"--timeout must be positive seconds, got {self.timeout}")
        if (
            not self.study_name
            or any(c in self.study_name for c in "/\\'\"")
            or self.study_name != self.study_name.strip()
        ):
            raise NervesegError(f"--study {self.study_name!r} must be a plain name (no slashes, quotes or edge spaces)")


def _setup_mlflow() -> tuple[Any, mlflow.MlflowClient, str]:
    """Tracking settings from mlflow.yml / MLFLOW_TRACKING_URI, checked reachable (in seconds), experiment ready."""
    from nerveseg.track import store as tracking

    settings = tracking.load_mlflow_settings()
    experiment_id = tracking.setup_mlflow(settings)  # checks the store first, as every command does
    return settings, mlflow.MlflowClient(settings.tracking_uri), experiment_id


@dataclass
class _Worker:
    """This worker's view of the study: joined under the lock, with its MLflow study run."""

    study: optuna.Study
    index: int
    seed: int | None
    tracker: StudyTracker
    study_run_id: str
    mlflow_settings: Any


def _join_study(
    settings: TuneSettings, storage_url: str, pruner: optuna.pruners.BasePruner, lock: StudyLock
) -> _Worker:
    """Create or load the study (maximising the task's ranking metric, or minimising it: ISBI's V_rand error),
    count this worker in (its sampler seed) and make sure the study's MLflow run exists; called while
    holding ``lock``."""
    mlflow_settings, client, experiment_id = _setup_mlflow()
    storage = make_storage(storage_url)
    task = get_task(settings.base_config.task)
    direction = "maximize" if task.higher_is_better else "minimize"
    study = optuna.create_study(
        study_name=settings.study_name, storage=storage, direction=direction, load_if_exists=True
    )
    if study.direction != optuna.study.StudyDirection[direction.upper()]:
        raise NervesegError(
            f"study {settings.study_name!r} exists with another direction; task {settings.base_config.task!r} needs "
            f"direction {direction}; use a new --study name"
        )
    worker_index = int(study.user_attrs.get(WORKERS_ATTR, 0))
    study.set_user_attr(WORKERS_ATTR, worker_index + 1)
    seed = None if settings.seed is None else settings.seed + worker_index
    sampler = optuna.samplers.TPESampler(seed=seed)
    study = optuna.load_study(study_name=settings.study_name, storage=storage, sampler=sampler, pruner=pruner)
    objective_text = f"{task.ranking_metric}: {task.ranking_text}"
    describe_study(study, report_mode_for(pruner), note=worker_index == 0, objective=task.ranking_metric,
                   objective_text=objective_text)  # fmt: skip
    tracker = StudyTracker(client, experiment_id, study, lock)
    study_run_id = tracker.ensure_study_run(
        tags={
            "optuna.storage": redact_uri(storage_url),
            "optuna.direction": direction,
            names.TASK_PARAM: settings.base_config.task,
            "optuna.pruner": type(pruner).__name__,
            "optuna.sampler": "TPESampler",
            "base_config": settings.base_config.name,
            "search_space": settings.space.source,
        },
        artifacts={
            BASE_CONFIG_ARTIFACT: config_to_yaml(settings.base_config),
            "search_space.json": json.dumps(
                [p.__dict__ | {"choices": list(p.choices)} for p in settings.space.params], indent=1
            ),
        },
    )
    return _Worker(study, worker_index, seed, tracker, study_run_id, mlflow_settings)


def _run_trials(
    settings: TuneSettings, worker: _Worker, objective: CVObjective, lock: StudyLock, out: Callable[[str], None]
) -> tuple[int, int]:
    """Trials until the study holds ``n_trials`` (or this worker keeps failing); returns (ran here,
    consecutive failures at the end). The study run is FINISHED, FAILED or, on Ctrl-C, KILLED."""
    consecutive_failures = 0

    def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        nonlocal consecutive_failures
        try:
            worker.tracker.on_trial_end(study, trial)
        except Exception as err:  # the trial's result is in the study already; tags are secondary
            print(f"warning: MLflow bookkeeping of trial {trial.number} failed: {err}", file=sys.stderr)
        out(format_trial_line(study, trial, settings.n_trials))
        consecutive_failures = consecutive_failures + 1 if trial.state == TrialState.FAIL else 0

    status = "FAILED"
    try:
        ran = optimize_exactly(
            worker.study,
            objective,
            settings.n_trials,
            lock,
            timeout=settings.timeout,
            catch=(Exception,),
            callbacks=[after_trial],
            should_stop=lambda: consecutive_failures >= settings.max_consecutive_failures,
        )
        status = "FAILED" if consecutive_failures >= settings.max_consecutive_failures else "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        try:
            worker.tracker.finish(status)
        except Exception as err:  # never hide the study's own outcome behind a tracking problem
            print(f"warning: could not finish MLflow study run {worker.study_run_id}: {err}", file=sys.stderr)
    return ran, consecutive_failures


def _study_result(settings: TuneSettings, worker: _Worker, ran: int) -> StudyResult:
    """Export the best config and count the study's trials by state."""
    study = worker.study
    best_path = export_best_config(study, settings.base_config, settings.experiments_dir)
    trials = study.get_trials(deepcopy=False)
    best = best_trial(study)
    return StudyResult(
        study_name=settings.study_name,
        n_trials_total=len(trials),
        ran_here=ran,
        states=dict(Counter(t.state.name for t in trials)),
        best_value=None if best is None else best.value,
        best_params=None if best is None else dict(best.params),
        best_config_path=best_path,
        study_run_id=worker.study_run_id,
    )


def _check_before_any_work(settings: TuneSettings) -> None:
    """Space against config, output folders, then the tracking store, before the storage is touched (a
    failed check must leave no empty Optuna SQLite file behind); the tracking store must answer in seconds."""
    from nerveseg.track import store as tracking

    settings.space.check_against(settings.base_config)
    for folder, what in ((settings.cache_dir, "--cache-dir"), (settings.folds_dir, "--folds-dir")):
        check_writable_dir(folder, what)
    check_writable_dir(settings.experiments_dir, "--experiments-dir")
    tracking.check_tracking_server(tracking.load_mlflow_settings().tracking_uri)


def run_study(settings: TuneSettings, *, out: Callable[[str], None] = print) -> StudyResult:
    """Create or join the study, run trials until it holds ``n_trials`` in total, then export the best.

    Several workers may run this at once against one storage and one MLflow server. Ctrl-C stops this
    worker at once: the running trial is FAIL ("interrupted", not counted) and the runs KILLED.
    """
    _check_before_any_work(settings)
    storage_url = with_installed_driver(settings.storage)
    check_storage(storage_url)
    pruner = settings.pruner or make_pruner("median")
    lock = StudyLock(storage_url, settings.study_name)
    try:
        with lock:
            worker = _join_study(settings, storage_url, pruner, lock)
        out(
            f"study {settings.study_name}: worker {worker.index} (sampler seed {worker.seed}), "
            f"{count_counted_trials(worker.study)}/{settings.n_trials} trials so far, storage "
            f"{redact_uri(storage_url)}, MLflow study run {worker.study_run_id}"
        )
        objective = CVObjective(
            base_config=settings.base_config,
            space=settings.space,
            study_name=settings.study_name,
            study_run_id=worker.study_run_id,
            paths=CVPaths(Path(settings.raw_dir), Path(settings.cache_dir), Path(settings.folds_dir)),
            mlflow_settings=worker.mlflow_settings,
            report_mode=report_mode_for(pruner),
            progress=settings.progress,
            locate_run=worker.tracker.find_trial_run,
        )
        ran, consecutive_failures = _run_trials(settings, worker, objective, lock, out)
        if consecutive_failures >= settings.max_consecutive_failures:
            raise NervesegError(
                f"stopped study {settings.study_name}: the last {consecutive_failures} trials of this worker failed "
                "(see their fail_reason above); fix the setup before running more trials"
            )
        return _study_result(settings, worker, ran)
    finally:
        lock.close()
