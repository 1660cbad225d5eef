"""The study's objective: a trial is the base config with sampled overrides, cross-validated by
:func:`nerveseg.run.cross_validate.cross_validate` (MLflow store); fold scores go to the pruner, failures get a
one-line reason, and Ctrl-C (also when Keras re-raised it as SystemError) stops the worker without counting
the trial."""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import optuna

from nerveseg.config import TrainConfig
from nerveseg.errors import NervesegError, is_interruption
from nerveseg.names import FAIL_REASON_ATTR
from nerveseg.run.store import CVObserver, CVPaths
from nerveseg.tasks import get_task
from nerveseg.tune.search_space import SearchSpace
from nerveseg.tune.storage import INTERRUPTED_ATTR
from nerveseg.tune.study_tracker import INTERRUPTED, STUDY_NAME_TAG, STUDY_RUN_ATTR, TRIAL_NUMBER_TAG, TRIAL_STATE_TAG

# --------------------------------------------------------------------------------------------
# The objective
# --------------------------------------------------------------------------------------------


ReportMode = Literal["running_mean", "per_fold"]


class PruningListener(CVObserver):
    """The observer of a trial's ``cross_validate``: reports fold scores to Optuna and prunes between folds.

    Steps are fold indices. With the median pruner the reported value is the running mean of the
    folds done so far (an estimate of the final objective that pruners can compare across trials
    at the same step); with the Wilcoxon pruner it is the fold's own score, because that pruner
    pairs per-instance values (here: folds) between a trial and the best one. Per-epoch values are
    not reported: ``epochs`` may be searched, so "epoch e of fold f" does not line up between
    trials, and mixing epoch and fold steps would break the Wilcoxon pruner's pairing.
    No pruning decision is taken after the last fold: the trial is complete by then.
    """

    def __init__(self, trial: optuna.Trial, n_folds: int, mode: ReportMode = "running_mean") -> None:
        super().__init__()
        self.trial = trial
        self.n_folds = n_folds
        self.mode = mode
        self.scores: dict[int, float] = {}

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

    A trial = base config with sampled overrides, cross-validated into an ``MlflowStore`` whose parent run is
    nested under the study's MLflow run; the value is the task's ranking metric (the study's direction).
    """

    base_config: TrainConfig
    space: SearchSpace
    study_name: str
    study_run_id: str
    paths: CVPaths
    mlflow_settings: Any = None  # nerveseg.track.store.MlflowSettings; None: mlflow.yml / environment
    report_mode: ReportMode = "running_mean"
    progress: bool = True
    locate_run: Callable[[int], str | None] | None = None  # trial number -> its MLflow run, when the CV raised

    def trial_config(self, trial: optuna.Trial) -> TrainConfig:
        """The base config with the trial's values; no ensemble-gain probe (it moves only the PI, not the ranking
        metric a trial is judged by: the best config keeps the base's for its own runs)."""
        params = {"ensemble_gain_probe": False, **self.space.suggest(trial)}
        return self.base_config.replace(name=f"{self.study_name}-trial{trial.number:04d}", **params)

    def __call__(self, trial: optuna.Trial) -> float:
        import keras

        from nerveseg.run.cross_validate import cross_validate
        from nerveseg.track.mlflow_store import MlflowStore

        keras.backend.clear_session()
        tags = {
            STUDY_NAME_TAG: self.study_name,
            TRIAL_NUMBER_TAG: str(trial.number),
            TRIAL_STATE_TAG: "running",
        }
        try:
            config = self.trial_config(trial)
            listener = PruningListener(trial, n_folds=config.folds, mode=self.report_mode)
            store = MlflowStore(self.mlflow_settings, parent_tags=tags, nested_under=self.study_run_id,
                                progress=self.progress)  # fmt: skip
            result = cross_validate(config, self.paths, store, [listener], progress=self.progress)
            trial.set_user_attr(STUDY_RUN_ATTR, result.parent_id)
            if result.final is None:
                raise RuntimeError(f"the CV returned no summary for trial {trial.number} (only some folds ran?)")
            ranking = get_task(config.task).ranking_metric  # the study's direction follows the task
            value = float(result.final.metrics[ranking])
            if not math.isfinite(value):
                raise RuntimeError(f"{ranking} is {value} for trial {trial.number}")
        except optuna.TrialPruned:
            self._record_run(trial)
            raise
        except (Exception, KeyboardInterrupt) as err:
            trial.set_user_attr(FAIL_REASON_ATTR, describe_failure(err))
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
