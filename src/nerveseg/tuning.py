"""Hyperparameter search with Optuna over the same cross-validation code path as ``cv_train.py``.

Why the pieces look the way they do:

* The search space is a YAML file over :class:`~nerveseg.config.TrainConfig` keys, so a trial's
  parameters are config overrides and the best trial becomes an ``experiments/*.yaml`` that
  ``cv_train.py --config`` runs as it is.
* Every trial runs :func:`nerveseg.experiment.run_cv` (no copy of the CV logic): a trial's MLflow
  run *is* a CV parent run (tag ``nerveseg.run_type`` = "cv", per-fold child runs, OOF, weights),
  nested under one MLflow run per study, so ``submit.py --run-id <trial run>`` takes it directly.
* ``--trials N`` is the study's total over every worker and every resume. Optuna's
  ``MaxTrialsCallback`` only stops a worker *after* a trial ends, so with W workers the study can
  overshoot by up to W-1 trials. Here each worker checks the count and creates its next trial while
  holding a lock shared by all workers of the study (a PostgreSQL/MySQL advisory lock, or a file
  lock beside a SQLite file), so the study ends with exactly N trials (see :func:`optimize_exactly`).
* Failures are results: a trial whose loss turns NaN, that runs out of memory, or that raises is
  recorded as FAIL with a ``fail_reason`` user attribute, and the study goes on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import mlflow
import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from nerveseg.config import TrainConfig, config_to_yaml, field_names
from nerveseg.io_utils import atomic_write_text
from nerveseg.paths import EXPERIMENTS_DIR, FOLDS_DIR, OPTUNA_DB, PROCESSED_DIR, RAW_DIR

DEFAULT_STORAGE = f"sqlite:///{OPTUNA_DB}"

# MLflow names (stable, see contract.md).
RUN_TYPE_TAG = "nerveseg.run_type"
STUDY_RUN_TYPE = "study"
TRIAL_NUMBER_TAG = "optuna.trial_number"
TRIAL_STATE_TAG = "optuna.state"
STUDY_NAME_TAG = "optuna.study_name"
FAIL_REASON_TAG = "optuna.fail_reason"
STUDY_RUN_ATTR = "mlflow_run_id"  # study user attr: the MLflow run id of the study's parent run
WORKERS_ATTR = "workers_started"  # study user attr: how many workers have joined (seeds the sampler)

# A trial's MLflow state tag, from Optuna's state.
_STATE_NAMES = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}

# Heartbeats let a live worker mark a dead worker's RUNNING trial as FAIL (it still counts towards N).
HEARTBEAT_INTERVAL_S = 60
HEARTBEAT_GRACE_S = 300


# --------------------------------------------------------------------------------------------
# Search space
# --------------------------------------------------------------------------------------------

ParamKind = Literal["float", "int", "categorical"]
_SPEC_KEYS: dict[str, set[str]] = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices"},
}


@dataclass(frozen=True)
class ParamSpec:
    """One dimension of the search: a config key and how Optuna samples it."""

    name: str
    kind: ParamKind
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        """Sample this parameter from ``trial`` (the Optuna parameter name is the config key)."""
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)
        if self.kind == "int":
            step = 1 if self.step is None else int(self.step)
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=step, log=self.log)
        return trial.suggest_categorical(self.name, list(self.choices))

    def extremes(self) -> list[Any]:
        """Values worth checking against a base config: the bounds, or every choice."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            return [int(self.low), int(self.high)]
        return [float(self.low), float(self.high)]


@dataclass(frozen=True)
class SearchSpace:
    """The parameters a study samples; ``source`` names the YAML file in error messages."""

    params: tuple[ParamSpec, ...]
    source: str = "<search space>"

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample every parameter; the result is a ``TrainConfig.replace`` mapping."""
        return {p.name: p.suggest(trial) for p in self.params}

    def check_against(self, base: TrainConfig) -> None:
        """Fail before the first trial if a bound or choice can never make a valid config with ``base``.

        Each value is tried alone on the base config (e.g. ``depth: 6`` with a 32x40 model is
        rejected here rather than failing trials one by one). Combinations of searched keys can
        still be invalid; such trials fail with the config's own message as their reason.
        """
        for spec in self.params:
            for value in spec.extremes():
                try:
                    base.replace(**{spec.name: value})
                except ValueError as err:
                    raise ValueError(
                        f"search space {self.source}: key {spec.name!r} value {value!r} is not valid with base "
                        f"config {base.name!r}: {err}; narrow the range/choices or change the base config"
                    ) from err


def _as_number(value: Any, *, source: str, key: str, what: str, integer: bool) -> float | int:
    """A YAML scalar as a number; PyYAML reads ``1e-5`` (no dot) as a string, so accept numeric strings."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"search space {source}: key {key!r}: {what} must be a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"search space {source}: key {key!r}: {what} must be a number, got {value!r}") from None
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"search space {source}: key {key!r}: {what} must be a finite number, got {value!r}")
    if integer:
        if float(value) != int(value):
            raise ValueError(f"search space {source}: key {key!r}: {what} must be an integer, got {value!r}")
        return int(value)
    return float(value)


def _field_kind(key: str) -> str:
    """'bool', 'int', 'float', 'str' or 'choice' (a Literal) for a TrainConfig field."""
    import typing

    hint = typing.get_type_hints(TrainConfig)[key]
    if typing.get_origin(hint) is Literal:
        return "choice"
    return {bool: "bool", int: "int", float: "float", str: "str"}.get(hint, "str")


def parse_param_spec(key: str, spec: Any, *, source: str) -> ParamSpec:
    """Validate one ``key: {type: ..., ...}`` entry of a search space file."""
    allowed_keys = field_names()
    if key not in allowed_keys:
        raise ValueError(
            f"search space {source}: unknown key {key!r}; expected TrainConfig keys: {', '.join(allowed_keys)}"
        )
    if not isinstance(spec, Mapping):
        raise ValueError(
            f"search space {source}: key {key!r} must map to e.g. {{type: float, low: 1.0e-5, high: 1.0e-3, "
            f"log: true}}, got {spec!r}"
        )
    kind = spec.get("type")
    if kind not in _SPEC_KEYS:
        raise ValueError(f"search space {source}: key {key!r} has type {kind!r}; expected one of {sorted(_SPEC_KEYS)}")
    unknown = set(spec) - _SPEC_KEYS[kind]
    if unknown:
        raise ValueError(
            f"search space {source}: key {key!r} ({kind}) has unknown fields {sorted(unknown)}; "
            f"allowed: {sorted(_SPEC_KEYS[kind])}"
        )
    field_kind = _field_kind(key)
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ValueError(f"search space {source}: key {key!r}: choices must be a non-empty list, got {choices!r}")
        for choice in choices:
            if not (choice is None or isinstance(choice, bool | int | float | str)):
                raise ValueError(
                    f"search space {source}: key {key!r}: choice {choice!r} must be a scalar (bool, number, string)"
                )
        if len({(type(c), c) for c in choices}) != len(choices):
            raise ValueError(f"search space {source}: key {key!r}: choices {choices!r} contain duplicates")
        return ParamSpec(key, "categorical", choices=tuple(choices))

    if field_kind != kind:
        hint = "use type: categorical with explicit choices" if field_kind in {"bool", "choice", "str"} else ""
        raise ValueError(
            f"search space {source}: key {key!r} is a {field_kind} config field but the space says type {kind!r}"
            + (f"; {hint}" if hint else f"; use type: {field_kind}")
        )
    for required in ("low", "high"):
        if required not in spec:
            raise ValueError(f"search space {source}: key {key!r} ({kind}) needs {required!r}")
    integer = kind == "int"
    low = _as_number(spec["low"], source=source, key=key, what="low", integer=integer)
    high = _as_number(spec["high"], source=source, key=key, what="high", integer=integer)
    if low > high:
        raise ValueError(f"search space {source}: key {key!r}: low {low!r} is greater than high {high!r}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ValueError(f"search space {source}: key {key!r}: log must be true or false, got {log!r}")
    step = spec.get("step")
    if step is not None:
        step = _as_number(step, source=source, key=key, what="step", integer=integer)
        if step <= 0:
            raise ValueError(f"search space {source}: key {key!r}: step must be positive, got {step!r}")
        if log:
            raise ValueError(f"search space {source}: key {key!r}: step and log cannot be combined (Optuna)")
    if log and low <= 0:
        raise ValueError(f"search space {source}: key {key!r}: log scale needs low > 0, got {low!r}")
    return ParamSpec(key, kind, low=low, high=high, step=step, log=log)


def parse_search_space(mapping: Any, *, source: str = "<search space>") -> SearchSpace:
    """A :class:`SearchSpace` from an already loaded YAML mapping."""
    if not isinstance(mapping, Mapping) or not mapping:
        raise ValueError(
            f"search space {source} must be a non-empty mapping of TrainConfig key -> spec, "
            f"got {type(mapping).__name__}"
        )
    return SearchSpace(tuple(parse_param_spec(str(k), v, source=source) for k, v in mapping.items()), source=source)


def load_search_space(path: Path | str) -> SearchSpace:
    """Read and validate a search space YAML file (see ``experiments/search_space.yaml``)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"search space file {path} does not exist; pass --space experiments/search_space.yaml")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"search space {path} is not valid YAML: {err}") from err
    return parse_search_space(loaded, source=str(path))


# --------------------------------------------------------------------------------------------
# Storage, locks and the exact-N loop
# --------------------------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """The URL with any password replaced, for messages and tags."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def _sqlite_path(url: str) -> Path | None:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def check_storage(url: str) -> None:
    """Fail fast, in one line, when the Optuna storage cannot be reached (before any trial runs)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    try:
        backend = make_url(url).get_backend_name()
    except Exception as err:
        raise ValueError(
            f"--storage {url!r} is not a database URL ({err}); e.g. sqlite:///experiments/optuna.db "
            "or postgresql://user:password@host:5432/optuna"
        ) from None
    sqlite_path = _sqlite_path(url)
    if sqlite_path is not None:
        sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    connect_args = {"connect_timeout": 10} if backend in {"postgresql", "mysql"} else {}
    engine = create_engine(url, connect_args=connect_args)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RuntimeError(
            f"cannot reach Optuna storage {redact_url(url)}: {first_line}; start the database or fix --storage"
        ) from None
    finally:
        engine.dispose()


class StudyLock:
    """A lock shared by every worker of one study, used around "count trials, then create one".

    PostgreSQL and MySQL get a server-side advisory lock (released by the server if a worker
    dies), SQLite a ``flock`` on ``<db>.lock`` beside the database file (SQLite is single-host
    anyway), anything else a process-local lock (exact N then holds only within one process).
    """

    def __init__(self, storage_url: str, study_name: str) -> None:
        from sqlalchemy.engine import make_url

        self.storage_url = storage_url
        self.study_name = study_name
        self._backend = make_url(storage_url).get_backend_name()
        self._key = int.from_bytes(
            hashlib.sha256(f"nerveseg-tune:{study_name}".encode()).digest()[:8], "big", signed=True
        )
        self._engine: Any = None
        self._conn: Any = None
        self._file: Any = None
        self._thread_lock = threading.Lock()
        self.held = False

    def acquire(self) -> None:
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        self._thread_lock.acquire()
        try:
            if self._backend in {"postgresql", "mysql"}:
                if self._engine is None:
                    self._engine = create_engine(self.storage_url, poolclass=NullPool)
                if self._conn is None:
                    self._conn = self._engine.connect()
                if self._backend == "postgresql":
                    self._conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": self._key})
                else:
                    self._conn.execute(text("SELECT GET_LOCK(:name, -1)"), {"name": f"nerveseg-{self._key}"})
                self._conn.commit()
            else:
                sqlite_path = _sqlite_path(self.storage_url)
                if sqlite_path is not None:
                    import fcntl

                    lock_path = sqlite_path.with_name(sqlite_path.name + ".lock")
                    self._file = open(lock_path, "a+")  # noqa: SIM115 - held across calls, closed in release()
                    fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise
        self.held = True

    def release(self) -> None:
        if not self.held:
            return
        from sqlalchemy import text

        try:
            if self._conn is not None:
                if self._backend == "postgresql":
                    self._conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self._key})
                else:
                    self._conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": f"nerveseg-{self._key}"})
                self._conn.commit()
            if self._file is not None:
                import fcntl

                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
                self._file.close()
                self._file = None
        finally:
            self.held = False
            self._thread_lock.release()

    def __enter__(self) -> StudyLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def close(self) -> None:
        """Drop the lock's database connection (the server frees any lock still held with it)."""
        self.release()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def make_storage(url: str) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats (a dead worker's RUNNING trial becomes FAIL) and pre-ping
    (a connection idle through an hour-long trial may have been dropped by the server)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs={"pool_pre_ping": True},
            heartbeat_interval=HEARTBEAT_INTERVAL_S,
            grace_period=HEARTBEAT_GRACE_S,
        )


def count_counted_trials(study: optuna.Study) -> int:
    """Trials that count towards ``--trials``: every trial but WAITING ones (RUNNING included).

    A WAITING (enqueued) trial is popped by ``ask`` instead of creating a new one, so running it
    does not change this count.
    """
    return sum(1 for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING)


def optimize_exactly(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    n_trials: int,
    lock: StudyLock,
    *,
    timeout: float | None = None,
    catch: tuple[type[Exception], ...] = (Exception,),
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
    should_stop: Callable[[], bool] | None = None,
) -> int:
    """Run trials until the study holds exactly ``n_trials`` (all workers together); returns how many ran here.

    Each iteration takes ``lock``, counts the study's trials (RUNNING ones included), and if
    fewer than ``n_trials`` calls ``study.optimize(n_trials=1)``; the wrapped objective releases
    the lock as its first action, i.e. right after ``study.ask()`` has created the trial. So
    "count, then create" is atomic across workers while trials themselves run concurrently.
    ``study.optimize`` is kept (rather than ask/tell) for its heartbeats, stale-trial handling,
    ``catch`` semantics and callbacks.
    """
    started = time.monotonic()
    ran = 0

    def wrapped(trial: optuna.Trial) -> float:
        lock.release()
        return objective(trial)

    while True:
        if timeout is not None and time.monotonic() - started >= timeout:
            break
        if should_stop is not None and should_stop():
            break
        lock.acquire()
        try:
            if count_counted_trials(study) >= n_trials:
                break
            study.optimize(wrapped, n_trials=1, catch=catch, callbacks=list(callbacks))
            ran += 1
        finally:
            lock.release()  # no-op when the objective already released it
    return ran


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
    name = type(err).__name__
    if name in {"NonFiniteLossError", "TrainingDivergedError"}:
        kind = "non-finite loss"
    elif name == "ResourceExhaustedError" or isinstance(err, MemoryError):
        kind = "out of memory"
    elif isinstance(err, KeyboardInterrupt):
        kind = "interrupted"
    else:
        kind = "error"
    message = " ".join(str(err).split())
    return f"{kind}: {name}: {message}"[:1000]


RunCV = Callable[..., Any]


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
    mlflow_settings: Any = None  # nerveseg.tracking.MlflowSettings; None: mlflow.yml / environment
    report_mode: ReportMode = "running_mean"
    progress: bool = True
    run_cv: RunCV | None = None  # defaults to nerveseg.experiment.run_cv
    locate_run: Callable[[int], str | None] | None = None  # trial number -> its MLflow run, when run_cv raised

    def trial_config(self, trial: optuna.Trial) -> TrainConfig:
        params = self.space.suggest(trial)
        return self.base_config.replace(name=f"{self.study_name}-trial{trial.number:04d}", **params)

    def __call__(self, trial: optuna.Trial) -> float:
        import keras

        keras.backend.clear_session()
        run_cv = self.run_cv
        if run_cv is None:
            from nerveseg.experiment import run_cv
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
        filter_string=(
            f"tags.`mlflow.parentRunId` = '{study_run_id}' and tags.`{TRIAL_NUMBER_TAG}` = '{number}' "
            f"and tags.`{RUN_TYPE_TAG}` = 'cv'"
        ),
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
                raise RuntimeError(
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
    raise ValueError(f"pruner {name!r} is unknown; expected median, wilcoxon or none")


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
            raise ValueError(f"--trials must be at least 1, got {self.n_trials}")
        if self.max_consecutive_failures < 1:
            raise ValueError(f"--max-consecutive-failures must be at least 1, got {self.max_consecutive_failures}")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"--timeout must be positive seconds, got {self.timeout}")
        if (
            not self.study_name
            or any(c in self.study_name for c in "/\\'\"")
            or self.study_name != self.study_name.strip()
        ):
            raise ValueError(f"--study {self.study_name!r} must be a plain name (no slashes, quotes or edge spaces)")


def _setup_mlflow() -> tuple[Any, mlflow.MlflowClient, str]:
    """Tracking settings from mlflow.yml / MLFLOW_TRACKING_URI, checked reachable, experiment ready."""
    from nerveseg import tracking

    settings = tracking.load_mlflow_settings()
    tracking.check_tracking_server(settings.tracking_uri)  # raises TrackingError(ValueError) in seconds
    experiment_id = tracking.setup_mlflow(settings)
    return settings, mlflow.MlflowClient(settings.tracking_uri), experiment_id


def run_study(settings: TuneSettings, *, out: Callable[[str], None] = print) -> StudyResult:
    """Create or join the study, run trials until it holds ``n_trials`` in total, then export the best.

    Several workers may run this at once against one storage and one MLflow server.
    """
    settings.space.check_against(settings.base_config)
    check_storage(settings.storage)
    pruner = settings.pruner or make_pruner("median")
    lock = StudyLock(settings.storage, settings.study_name)
    try:
        with lock:
            mlflow_settings, client, experiment_id = _setup_mlflow()
            storage = make_storage(settings.storage)
            study = optuna.create_study(
                study_name=settings.study_name, storage=storage, direction="maximize", load_if_exists=True
            )
            if study.direction != optuna.study.StudyDirection.MAXIMIZE:
                raise ValueError(f"study {settings.study_name!r} exists but does not maximise; use a new --study name")
            worker_index = int(study.user_attrs.get(WORKERS_ATTR, 0))
            study.set_user_attr(WORKERS_ATTR, worker_index + 1)
            seed = None if settings.seed is None else settings.seed + worker_index
            sampler = optuna.samplers.TPESampler(seed=seed)
            study = optuna.load_study(study_name=settings.study_name, storage=storage, sampler=sampler, pruner=pruner)
            tracker = StudyTracker(client, experiment_id, study, lock)
            study_run_id = tracker.ensure_study_run(
                tags={
                    "optuna.storage": redact_url(settings.storage),
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
            f"{count_counted_trials(study)}/{settings.n_trials} trials so far, storage {redact_url(settings.storage)}, "
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
            raise RuntimeError(
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
    "ParamSpec",
    "PruningListener",
    "SearchSpace",
    "StudyLock",
    "StudyResult",
    "TuneSettings",
    "check_storage",
    "count_counted_trials",
    "export_best_config",
    "load_search_space",
    "make_pruner",
    "optimize_exactly",
    "parse_search_space",
    "run_study",
]
