"""What a study tells people: one progress line per trial, the best trial's config as an experiments file,
and Optuna's own logging kept to warnings (its INFO lines repeat ours).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from nerveseg.config import TrainConfig, config_to_yaml
from nerveseg.io_utils import atomic_write_text
from nerveseg.names import FAIL_REASON_ATTR
from nerveseg.paths import EXPERIMENTS_DIR
from nerveseg.tasks import get_task
from nerveseg.tune.study_tracker import STUDY_RUN_ATTR, best_trial


def format_trial_line(study: optuna.Study, trial: FrozenTrial) -> str:
    """One progress line: number, state, value, params, best so far."""
    value = "-" if trial.value is None else f"{trial.value:.4f}"
    params = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
    line = f"trial {trial.number:>3} {trial.state.name:<8} value={value} {{{params}}}"
    best = best_trial(study)
    line += f" | best {best.value:.4f} (trial {best.number})" if best is not None else " | best -"
    if FAIL_REASON_ATTR in trial.user_attrs:
        line += f" | {trial.user_attrs[FAIL_REASON_ATTR][:200]}"
    return line


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
