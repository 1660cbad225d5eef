"""Hyperparameter search with Optuna over the same cross-validation code path as ``cv_train.py``.

Why the pieces look the way they do:

* The search space is a YAML file over :class:`~nerveseg.config.TrainConfig` keys, so a trial's
  parameters are config overrides and the best trial becomes an ``experiments/*.yaml`` that
  ``cv_train.py --config`` runs as it is (parsing and checks: :mod:`nerveseg.tune.search_space`).
* Every trial runs :func:`nerveseg.track.cv_run.run_cv` (no copy of the CV logic): a trial's MLflow
  run *is* a CV parent run (tag ``nerveseg.run_type`` = "cv", per-fold child runs, OOF, weights),
  nested under one MLflow run per study, so ``submit.py --run-id <trial run>`` takes it directly.
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

import contextlib
import json
import math
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import mlflow
import optuna
from optuna.trial import FrozenTrial, TrialState

from nerveseg.config import TrainConfig, config_to_yaml
from nerveseg.errors import NervesegError, is_interruption
from nerveseg.io_utils import atomic_write_text, check_writable_dir
from nerveseg.paths import EXPERIMENTS_DIR, FOLDS_DIR, OPTUNA_DB, PROCESSED_DIR, RAW_DIR
from nerveseg.track.schema import CV_RUN, RUN_TYPE_TAG, children_filter
from nerveseg.tune.search_space import SearchSpace
from nerveseg.tune.storage import (
    INTERRUPTED_ATTR,
    StudyLock,
    check_storage,
    count_counted_trials,
    make_storage,
    optimize_exactly,
    with_installed_driver,
)
from nerveseg.uris import redact_uri

DEFAULT_STORAGE = f"sqlite:///{OPTUNA_DB}"

# MLflow names of the study side (the CV runs' names are in nerveseg.track.schema).
STUDY_RUN_TYPE = "study"
TRIAL_NUMBER_TAG = "optuna.trial_number"
TRIAL_STATE_TAG = "optuna.state"
STUDY_NAME_TAG = "optuna.study_name"
FAIL_REASON_TAG = "optuna.fail_reason"
STUDY_RUN_ATTR = "mlflow_run_id"  # study user attr: the MLflow run id of the study's parent run
WORKERS_ATTR = "workers_started"  # study user attr: how many workers have joined (seeds the sampler)
INTERRUPTED = "interrupted"  # the fail_reason kind of a trial stopped by Ctrl-C

# A trial's MLflow state tag, from Optuna's state.
_STATE_NAMES = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}


# --------------------------------------------------------------------------------------------
# The objective
# --------------------------------------------------------------------------------------------


ReportMode = Literal["running_mean", "per_fold"]


class PruningListener:
    """The ``listener`` of ``experiment.run_cv`` for a trial: reports fold scores to Optuna and prunes between folds.

    Steps are fold indices. With the median pruner the reported value is the running mean of the
    folds done so far (an estimate of the final objective that pruners can compare across trials
    at the same step); with the Wilcoxon pruner it is the fold's own score, because that pruner
    pairs per-instance values (here: folds) between a trial and the best one. Per-epoch values are
    not reported: ``epochs`` may be searched, so "epoch e of fold f" does not line up between
    trials, and mixing epoch and fold steps would break the Wilcoxon pruner's pairing.
    No pruning decision is taken after the last fold: the trial is complete by then.
    """

    def __init__(self, trial: optuna.Trial, n_folds: int, mode: ReportMode = "running_mean") -> None:
        self.trial = trial
        self.n_folds = n_folds
        self.mode = mode
        self.scores: dict[int, float] = {}

    def on_epoch_end(self, fold: int, epoch: int, logs: Mapping[str, float]) -> None:
        """Nothing to do per epoch (see class docstring)."""

    def on_fold_end(self, fold: int, score: float) -> None:
        self.scores[fold] = float(score)
        value = float(score) if self.mode == "per_fold" else sum(self.scores.values()) / len(self.scores)
        self.trial.report(value, step=fold)
        if len(self.scores) < self.n_folds and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after fold {fold} (reported {value:.4f})")


def describe_failure(err: BaseException) -> str:
    """A one-line reason for a failed trial: NaN loss / out of memory / interrupted / other error."""
    from nerveseg.train.fold import TrainingDivergedError  # TensorFlow is loaded once a trial has run

    name = type(err).__name__
    if is_interruption(err):
        kind = INTERRUPTED
    elif isinstance(err, TrainingDivergedError):
        kind = "non-finite loss"
    elif name == "ResourceExhaustedError" or isinstance(err, MemoryError):
        kind = "out of memory"
    else:
        kind = "error"
    message = " ".join(str(err).split())
    return f"{kind}: {name}: {message}"[:1000]


@dataclass
class CVObjective:
    """The study's objective (optuna-examples style: gets everything once, then ``__call__(trial)``).

    A trial = base config with sampled overrides, run through ``experiment.run_cv`` nested
    under the study's MLflow run; the value is the CV mean competition score (maximised).
    """

    base_config: TrainConfig
    space: SearchSpace
    study_name: str
    study_run_id: str
    raw_dir: Path
    cache_dir: Path
    folds_dir: Path
    mlflow_settings: Any = None  # nerveseg.track.store.MlflowSettings; None: mlflow.yml / environment
    report_mode: ReportMode = "running_mean"
    progress: bool = True
    locate_run: Callable[[int], str | None] | None = None  # trial number -> its MLflow run, when run_cv raised

    def trial_config(self, trial: optuna.Trial) -> TrainConfig:
        params = self.space.suggest(trial)
        return self.base_config.replace(name=f"{self.study_name}-trial{trial.number:04d}", **params)

    def __call__(self, trial: optuna.Trial) -> float:
        import keras

        from nerveseg.track.cv_run import run_cv

        keras.backend.clear_session()
        tags = {
            STUDY_NAME_TAG: self.study_name,
            TRIAL_NUMBER_TAG: str(trial.number),
            TRIAL_STATE_TAG: "running",
        }
        try:
            config = self.trial_config(trial)
            listener = PruningListener(trial, n_folds=config.folds, mode=self.report_mode)
            result = run_cv(
                config,
                raw_dir=self.raw_dir,
                cache_dir=self.cache_dir,
                folds_dir=self.folds_dir,
                listener=listener,
                parent_tags=tags,
                nested_under=self.study_run_id,
                progress=self.progress,
                settings=self.mlflow_settings,
            )
            trial.set_user_attr(STUDY_RUN_ATTR, result.parent_run_id)
            if result.summary is None:
                raise RuntimeError(f"run_cv returned no CV summary for trial {trial.number} (only some folds ran?)")
            value = float(result.summary.cv_score_mean)
            if not math.isfinite(value):
                raise RuntimeError(f"cv_score_mean is {value} for trial {trial.number}")
        except optuna.TrialPruned:
            self._record_run(trial)
            raise
        except (Exception, KeyboardInterrupt) as err:
            trial.set_user_attr("fail_reason", describe_failure(err))
            self._record_run(trial)
            if is_interruption(err):
                # not counted against --trials; Optuna marks the trial FAIL and re-raises, so the worker stops
                trial.set_user_attr(INTERRUPTED_ATTR, True)
                if not isinstance(err, KeyboardInterrupt):
                    raise KeyboardInterrupt(f"interrupted ({type(err).__name__})") from err
            raise
        return value

    def _record_run(self, trial: optuna.Trial) -> None:
        """Store the MLflow run id of a trial that stopped early (while the trial can still be updated)."""
        if self.locate_run is None:
            return
        try:
            run_id = self.locate_run(trial.number)
        except Exception as err:  # never hide the trial's own error behind a lookup problem
            print(f"warning: could not find the MLflow run of trial {trial.number}: {err}", file=sys.stderr)
            return
        if run_id is not None and STUDY_RUN_ATTR not in trial.user_attrs:
            trial.set_user_attr(STUDY_RUN_ATTR, run_id)


# --------------------------------------------------------------------------------------------
# MLflow side of a study
# --------------------------------------------------------------------------------------------


def find_trial_run_id(client: mlflow.MlflowClient, experiment_id: str, study_run_id: str, number: int) -> str | None:
    """The MLflow run of one trial (run_cv creates it; when run_cv raises we only know it by its tags)."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=(f"{children_filter(study_run_id, CV_RUN)} and tags.`{TRIAL_NUMBER_TAG}` = '{number}'"),
        run_view_type=mlflow.entities.ViewType.ALL,
        max_results=5,
        order_by=["attributes.start_time DESC"],
    )
    return runs[0].info.run_id if runs else None


class StudyTracker:
    """Owns the study's MLflow parent run: creation (once, under the study lock), per-trial tags,
    best-so-far logging, and the end-of-study plots and trial table."""

    def __init__(self, client: mlflow.MlflowClient, experiment_id: str, study: optuna.Study, lock: StudyLock) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.study = study
        self.lock = lock
        self.run_id: str | None = None

    def ensure_study_run(self, tags: Mapping[str, str], artifacts: Mapping[str, str]) -> str:
        """Reuse the run stored in the study's ``mlflow_run_id`` user attr, or create it.

        Called with the study lock held, so two workers joining a new study create one run.
        """
        run_id = self.study.user_attrs.get(STUDY_RUN_ATTR)
        if run_id is not None:
            try:
                self.client.get_run(run_id)
            except Exception as err:
                raise NervesegError(
                    f"study {self.study.study_name!r} records MLflow run {run_id} but the tracking server does not "
                    f"know it ({type(err).__name__}); point MLFLOW_TRACKING_URI at the server used when the study "
                    "started, or use a new --study name"
                ) from None
            self.client.update_run(run_id, status="RUNNING")
        else:
            run = self.client.create_run(
                self.experiment_id,
                run_name=self.study.study_name,
                tags={RUN_TYPE_TAG: STUDY_RUN_TYPE, STUDY_NAME_TAG: self.study.study_name, **tags},
            )
            run_id = run.info.run_id
            for artifact_file, text in artifacts.items():
                self.client.log_text(run_id, text, artifact_file)
            self.study.set_user_attr(STUDY_RUN_ATTR, run_id)
        self.run_id = run_id
        return run_id

    def find_trial_run(self, number: int) -> str | None:
        if self.run_id is None:
            return None
        return find_trial_run_id(self.client, self.experiment_id, self.run_id, number)

    def on_trial_end(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna callback: tag the trial's run with its final state, and log a new best."""
        assert self.run_id is not None
        state = _STATE_NAMES.get(trial.state, trial.state.name.lower())
        run_id = trial.user_attrs.get(STUDY_RUN_ATTR) or self.find_trial_run(trial.number)
        if run_id is not None:
            self.client.set_tag(run_id, TRIAL_STATE_TAG, state)
            if trial.value is not None:
                self.client.log_metric(run_id, "trial_value", float(trial.value))
            if "fail_reason" in trial.user_attrs:
                self.client.set_tag(run_id, FAIL_REASON_TAG, trial.user_attrs["fail_reason"])
        if trial.state == TrialState.COMPLETE:
            # Under the lock, re-read the best: two workers finishing together must not leave an older best.
            with self.lock:
                best = _best_trial(study)
                if best is not None and best.number == trial.number:
                    self.log_best(best)

    def log_best(self, best: FrozenTrial) -> None:
        assert self.run_id is not None
        self.client.log_metric(self.run_id, "best_value", float(best.value), step=best.number)
        for key, value in best.params.items():
            self.client.set_tag(self.run_id, f"best.{key}", str(value))
        self.client.set_tag(self.run_id, "best.trial_number", str(best.number))
        trial_run = best.user_attrs.get(STUDY_RUN_ATTR)
        if trial_run:
            self.client.set_tag(self.run_id, "best.run_id", trial_run)
        self.client.log_dict(
            self.run_id,
            {"trial_number": best.number, "value": best.value, "params": best.params, "run_id": trial_run},
            "best_params.json",
        )

    def finish(self, status: str) -> None:
        """Plots and trial table on the study run, then mark it ``status`` (the last worker to stop wins)."""
        assert self.run_id is not None
        log_study_plots(self.client, self.run_id, self.study)
        try:
            frame = self.study.trials_dataframe()
            self.client.log_text(self.run_id, frame.to_csv(index=False), "trials.csv")
        except Exception as err:  # an empty study has no table
            print(f"warning: no trials table for study {self.study.study_name}: {err}", file=sys.stderr)
        self.client.set_terminated(self.run_id, status=status)


def _best_trial(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def log_study_plots(client: mlflow.MlflowClient, run_id: str, study: optuna.Study) -> list[str]:
    """Optimisation history, parameter importances and parallel coordinates as PNG artifacts.

    Uses ``optuna.visualization.matplotlib`` (plotly is not a dependency). A plot that cannot be
    drawn yet (e.g. importances need two complete trials) is skipped with a warning.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    plots = {
        "plots/optimization_history.png": ovm.plot_optimization_history,
        "plots/param_importances.png": ovm.plot_param_importances,
        "plots/parallel_coordinate.png": ovm.plot_parallel_coordinate,
    }
    logged = []
    for artifact_file, plot in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = plot(study)
            figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
            figure.set_size_inches(10, 6)
            figure.tight_layout()
            client.log_figure(run_id, figure, artifact_file)
            plt.close(figure)
            logged.append(artifact_file)
        except Exception as err:
            print(f"warning: skipped {artifact_file}: {type(err).__name__}: {err}", file=sys.stderr)
        finally:
            plt.close("all")
    return logged


# --------------------------------------------------------------------------------------------
# Running a study
# --------------------------------------------------------------------------------------------


PrunerName = Literal["median", "wilcoxon", "none"]


def make_pruner(name: PrunerName, *, n_startup_trials: int = 5, n_warmup_steps: int = 0) -> optuna.pruners.BasePruner:
    """MedianPruner (default), WilcoxonPruner (folds as paired instances) or none."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=n_warmup_steps)
    if name == "wilcoxon":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=max(2, n_warmup_steps))
    if name == "none":
        return optuna.pruners.NopPruner()
    raise NervesegError(f"pruner {name!r} is unknown; expected median, wilcoxon or none")


def report_mode_for(pruner: optuna.pruners.BasePruner) -> ReportMode:
    return "per_fold" if isinstance(pruner, optuna.pruners.WilcoxonPruner) else "running_mean"


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


def format_trial_line(study: optuna.Study, trial: FrozenTrial) -> str:
    """One progress line: number, state, value, params, best so far."""
    value = "-" if trial.value is None else f"{trial.value:.4f}"
    params = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
    line = f"trial {trial.number:>3} {trial.state.name:<8} value={value} {{{params}}}"
    best = _best_trial(study)
    line += f" | best {best.value:.4f} (trial {best.number})" if best is not None else " | best -"
    if "fail_reason" in trial.user_attrs:
        line += f" | {trial.user_attrs['fail_reason'][:200]}"
    return line


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def export_best_config(
    study: optuna.Study, base_config: TrainConfig, experiments_dir: Path = EXPERIMENTS_DIR
) -> Path | None:
    """Write ``<experiments_dir>/<study>-best.yaml`` (atomically): base config + best params.

    ``cv_train.py --config`` accepts it as it is; the run name becomes ``<study>-best``.
    """
    best = _best_trial(study)
    if best is None:
        return None
    config = base_config.replace(**best.params)
    path = Path(experiments_dir) / f"{study.study_name}-best.yaml"
    header = (
        f"# Best config of Optuna study {study.study_name!r}: trial {best.number}, "
        f"cv_score_mean {best.value:.6f}.\n"
        f"# MLflow run of that trial: {best.user_attrs.get(STUDY_RUN_ATTR, 'unknown')}. Written by src/tune.py;\n"
        "# re-run it with `python src/cv_train.py --config <this file>`.\n"
    )
    atomic_write_text(path, header + config_to_yaml(config))
    return path


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
    progress: bool = True  # run_cv's per-fold/per-epoch lines on stderr

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


def _check_tracking() -> None:
    """The tracking store reachable, in seconds (TrackingError otherwise)."""
    from nerveseg.track import store as tracking

    tracking.check_tracking_server(tracking.load_mlflow_settings().tracking_uri)


def _setup_mlflow() -> tuple[Any, mlflow.MlflowClient, str]:
    """Tracking settings from mlflow.yml / MLFLOW_TRACKING_URI, checked reachable, experiment ready."""
    from nerveseg.track import store as tracking

    settings = tracking.load_mlflow_settings()
    tracking.check_tracking_server(settings.tracking_uri)  # raises TrackingError(ValueError) in seconds
    experiment_id = tracking.setup_mlflow(settings)
    return settings, mlflow.MlflowClient(settings.tracking_uri), experiment_id


def run_study(settings: TuneSettings, *, out: Callable[[str], None] = print) -> StudyResult:
    """Create or join the study, run trials until it holds ``n_trials`` in total, then export the best.

    Several workers may run this at once against one storage and one MLflow server.
    """
    settings.space.check_against(settings.base_config)
    for folder, what in ((settings.cache_dir, "--cache-dir"), (settings.folds_dir, "--folds-dir")):
        check_writable_dir(folder, what)
    check_writable_dir(settings.experiments_dir, "--experiments-dir")
    _check_tracking()  # before the storage: a failed check must leave no empty Optuna SQLite file behind
    storage_url = with_installed_driver(settings.storage)
    check_storage(storage_url)
    pruner = settings.pruner or make_pruner("median")
    lock = StudyLock(storage_url, settings.study_name)
    try:
        with lock:
            mlflow_settings, client, experiment_id = _setup_mlflow()
            storage = make_storage(storage_url)
            study = optuna.create_study(
                study_name=settings.study_name, storage=storage, direction="maximize", load_if_exists=True
            )
            if study.direction != optuna.study.StudyDirection.MAXIMIZE:
                raise NervesegError(
                    f"study {settings.study_name!r} exists but does not maximise; use a new --study name"
                )
            worker_index = int(study.user_attrs.get(WORKERS_ATTR, 0))
            study.set_user_attr(WORKERS_ATTR, worker_index + 1)
            seed = None if settings.seed is None else settings.seed + worker_index
            sampler = optuna.samplers.TPESampler(seed=seed)
            study = optuna.load_study(study_name=settings.study_name, storage=storage, sampler=sampler, pruner=pruner)
            tracker = StudyTracker(client, experiment_id, study, lock)
            study_run_id = tracker.ensure_study_run(
                tags={
                    "optuna.storage": redact_uri(storage_url),
                    "optuna.direction": "maximize",
                    "optuna.pruner": type(pruner).__name__,
                    "optuna.sampler": "TPESampler",
                    "base_config": settings.base_config.name,
                    "search_space": settings.space.source,
                },
                artifacts={
                    "base_config.yaml": config_to_yaml(settings.base_config),
                    "search_space.json": json.dumps(
                        [p.__dict__ | {"choices": list(p.choices)} for p in settings.space.params], indent=1
                    ),
                },
            )
        out(
            f"study {settings.study_name}: worker {worker_index} (sampler seed {seed}), "
            f"{count_counted_trials(study)}/{settings.n_trials} trials so far, storage {redact_uri(storage_url)}, "
            f"MLflow study run {study_run_id}"
        )

        objective = CVObjective(
            base_config=settings.base_config,
            space=settings.space,
            study_name=settings.study_name,
            study_run_id=study_run_id,
            raw_dir=Path(settings.raw_dir),
            cache_dir=Path(settings.cache_dir),
            folds_dir=Path(settings.folds_dir),
            mlflow_settings=mlflow_settings,
            report_mode=report_mode_for(pruner),
            progress=settings.progress,
            locate_run=tracker.find_trial_run,
        )
        consecutive_failures = 0

        def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
            nonlocal consecutive_failures
            try:
                tracker.on_trial_end(study, trial)
            except Exception as err:  # the trial's result is in the study already; tags are secondary
                print(f"warning: MLflow bookkeeping of trial {trial.number} failed: {err}", file=sys.stderr)
            out(format_trial_line(study, trial))
            consecutive_failures = consecutive_failures + 1 if trial.state == TrialState.FAIL else 0

        status = "FAILED"
        gave_up = False
        try:
            ran = optimize_exactly(
                study,
                objective,
                settings.n_trials,
                lock,
                timeout=settings.timeout,
                catch=(Exception,),
                callbacks=[after_trial],
                should_stop=lambda: consecutive_failures >= settings.max_consecutive_failures,
            )
            gave_up = consecutive_failures >= settings.max_consecutive_failures
            status = "FAILED" if gave_up else "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            try:
                tracker.finish(status)
            except Exception as err:  # never hide the study's own outcome behind a tracking problem
                print(f"warning: could not finish MLflow study run {study_run_id}: {err}", file=sys.stderr)

        if gave_up:
            raise NervesegError(
                f"stopped study {settings.study_name}: the last {consecutive_failures} trials of this worker failed "
                "(see their fail_reason above); fix the setup before running more trials"
            )
        best_path = export_best_config(study, settings.base_config, settings.experiments_dir)
        trials = study.get_trials(deepcopy=False)
        states: dict[str, int] = {}
        for t in trials:
            states[t.state.name] = states.get(t.state.name, 0) + 1
        best = _best_trial(study)
        return StudyResult(
            study_name=settings.study_name,
            n_trials_total=len(trials),
            ran_here=ran,
            states=states,
            best_value=None if best is None else best.value,
            best_params=None if best is None else dict(best.params),
            best_config_path=best_path,
            study_run_id=study_run_id,
        )
    finally:
        lock.close()


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's own INFO lines duplicate ours; keep its warnings (failed trials' tracebacks)."""
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)


__all__ = [
    "DEFAULT_STORAGE",
    "CVObjective",
    "PruningListener",
    "StudyResult",
    "TuneSettings",
    "export_best_config",
    "make_pruner",
    "run_study",
]
