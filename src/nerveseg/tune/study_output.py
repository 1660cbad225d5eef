"""What a study tells people: one progress line per trial (with the study's share done and time left), the best
trial's config as an experiments file, and Optuna's own logging kept to warnings (its INFO lines repeat ours).
"""

from __future__ import annotations

import contextlib
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nerveseg.config import TrainConfig, config_to_yaml
from nerveseg.eta import format_estimate
from nerveseg.io_utils import atomic_write_text
from nerveseg.names import FAIL_REASON_ATTR
from nerveseg.paths import EXPERIMENTS_DIR
from nerveseg.tasks import get_task
from nerveseg.tune.storage import is_counted
from nerveseg.tune.study_tracker import STUDY_RUN_ATTR, best_trial


def format_trial_line(study: optuna.Study, trial: FrozenTrial, n_trials: int | None = None) -> str:
    """One progress line: number, state, value, params, best so far and, with ``n_trials``, the study's outlook."""
    value = "-" if trial.value is None else f"{trial.value:.4f}"
    params = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
    line = f"trial {trial.number:>3} {trial.state.name:<8} value={value} {{{params}}}"
    best = best_trial(study)
    line += f" | best {best.value:.4f} (trial {best.number})" if best is not None else " | best -"
    if n_trials is not None:
        line += f" | {study_outlook(study, n_trials)}"
    if FAIL_REASON_ATTR in trial.user_attrs:
        line += f" | {trial.user_attrs[FAIL_REASON_ATTR][:200]}"
    return line


def study_outlook(study: optuna.Study, n_trials: int) -> str:
    """``4/20 trials, about 47 min left``: the trials not started yet times the mean time of the trials that ended
    (pruned and failed ones included: they end early, as later ones will), shared by the workers whose trials are
    running now and this one. An estimate: a trial still running counts as done, and workers may join or leave."""
    trials = study.get_trials(deepcopy=False)
    counted = sum(map(is_counted, trials))  # the trials already read, not a second read of the storage
    text = f"{counted}/{n_trials} trials"
    ended = [t.duration.total_seconds() for t in trials if t.state.is_finished() and t.duration is not None]
    if counted < n_trials and ended:
        workers = 1 + sum(t.state == TrialState.RUNNING for t in trials)
        text += f", {format_estimate((n_trials - counted) * statistics.fmean(ended) / workers)} left"
    return text


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def export_best_config(
    study: optuna.Study, base_config: TrainConfig, experiments_dir: Path = EXPERIMENTS_DIR
) -> Path | None:
    """Write ``<experiments_dir>/<study>-best.yaml`` (atomically): base config + best params.

    ``cv_train.py --config`` accepts it as it is; the run name becomes ``<study>-best``.
    """
    best = best_trial(study)
    if best is None:
        return None
    config = base_config.replace(**best.params)
    path = Path(experiments_dir) / f"{study.study_name}-best.yaml"
    header = (
        f"# Best config of Optuna study {study.study_name!r}: trial {best.number}, "
        f"{get_task(base_config.task).ranking_metric} {best.value:.6f}.\n"
        f"# MLflow run of that trial: {best.user_attrs.get(STUDY_RUN_ATTR, 'unknown')}. Written by src/tune.py;\n"
        "# re-run it with `python src/cv_train.py --config <this file>`.\n"
    )
    atomic_write_text(path, header + config_to_yaml(config))
    return path


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's own INFO lines duplicate ours; keep its warnings (failed trials' tracebacks)."""
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)
