"""``run_cv``: ``run.cross_validate`` with its folds kept as MLflow runs, for callers that think in MLflow terms.

One call = one ``MlflowStore`` plus ``cross_validate``; every behaviour (joining, resuming, finalising by whichever
process finishes last, marking runs KILLED or FAILED) lives in those two. ``cv_train.py`` and the Optuna
objective call it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nerveseg.config import TrainConfig
from nerveseg.paths import FOLDS_DIR, PROCESSED_DIR, RAW_DIR
from nerveseg.run.cross_validate import cross_validate
from nerveseg.run.store import CVObserver, CVPaths
from nerveseg.tasks.base import CVFinal
from nerveseg.track.mlflow_store import MlflowStore
from nerveseg.track.store import MlflowSettings


@dataclass
class CVRunResult:
    """What a call did; ``final`` (the task's metrics, table and post-processing) is None until the last fold."""

    parent_run_id: str
    experiment_id: str = ""
    trained_folds: list[int] = field(default_factory=list)  # folds trained by this call
    final: CVFinal | None = None


def run_cv(
    config: TrainConfig,
    *,
    raw_dir: Path = RAW_DIR,
    cache_dir: Path = PROCESSED_DIR,
    folds_dir: Path = FOLDS_DIR,
    fold: int | None = None,
    parent_run_id: str | None = None,
    resume: bool = False,
    observers: Sequence[CVObserver] = (),
    parent_tags: Mapping[str, str] | None = None,
    nested_under: str | None = None,
    work_dir: Path | None = None,
    progress: bool = True,
    settings: MlflowSettings | None = None,
) -> CVRunResult:
    """Cross-validate ``config`` (all folds, or only ``fold``) as MLflow runs; see ``MlflowStore`` for joining
    (``parent_run_id``), resuming (``resume``) and nesting (``nested_under``, ``parent_tags``)."""
    store = MlflowStore(
        settings,
        parent_run_id=parent_run_id,
        resume=resume,
        nested_under=nested_under,
        parent_tags=parent_tags,
        progress=progress,
    )
    paths = CVPaths(Path(raw_dir), Path(cache_dir), Path(folds_dir), work_dir)
    result = cross_validate(config, paths, store, observers, fold=fold, progress=progress)
    return CVRunResult(result.parent_id, store.experiment_id, result.trained_folds, result.final)


__all__ = ["CVRunResult", "run_cv"]
