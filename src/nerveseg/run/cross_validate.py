"""``cross_validate``: one config's K-fold cross-validation as a short loop of named steps, in any store.

Load the data, split it, train each fold the store still lacks, finalise when every fold is done, report.
The same function runs behind ``cv_train.py`` and every Optuna trial (with ``track.mlflow_store.MlflowStore``),
and behind benchmarks and tests with ``run.local_store.LocalStore``: no copy of the loop exists anywhere.
Folds may be spread over processes or machines (``fold=k``; the store joins the parent); whichever process
finishes the last fold finalises the parent, from the stored folds, so no fold is ever trained twice.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from nerveseg import names
from nerveseg.config import TrainConfig, param_strings
from nerveseg.errors import NervesegError, is_interruption
from nerveseg.eta import CVClock
from nerveseg.io_utils import check_writable_dir
from nerveseg.run.store import CVObserver, CVPaths, OpenedCV, RunStore
from nerveseg.tasks import get_task
from nerveseg.tasks.base import CVFinal, Task, TrainData
from nerveseg.train.fold_result import FoldResult


@dataclass(frozen=True)
class CVResult:
    """What a call did: the parent's id, the folds trained here, and the summary (None until all folds are done)."""

    parent_id: str
    trained_folds: list[int]
    final: CVFinal | None


def say(message: str) -> None:
    """Progress and status lines go to stderr, so stdout keeps only the table a user may pipe."""
    print(message, file=sys.stderr, flush=True)


@dataclass
class _CV:
    """What one call works with, so that its steps take one argument instead of ten."""

    config: TrainConfig
    task: Task
    data: TrainData
    folds: np.ndarray
    folds_file: Path
    store: RunStore
    observers: Sequence[CVObserver]
    work: Path
    raw_dir: Path
    progress: bool
    clock: CVClock
    observer_error: BaseException | None = field(default=None)

    def say(self, message: str | None) -> None:
        """Progress lines (which fold, which run, the time left): silent with ``progress=False`` (``--no-progress``)."""
        if self.progress and message is not None:
            say(message)


def cross_validate(
    config: TrainConfig,
    paths: CVPaths,
    store: RunStore,
    observers: Sequence[CVObserver] = (),
    *,
    fold: int | None = None,
    progress: bool = True,
) -> CVResult:
    """Train ``config``'s folds (all, or only ``fold``) that ``store`` lacks; finalise once all are done.

    Any exception marks the store's open fold and parent stopped (Ctrl-C, also one Keras re-raised as
    ``SystemError``, or an observer's exception) or failed, and propagates; a wrapped Ctrl-C propagates as
    ``KeyboardInterrupt``. The store is checked before any data is read.
    """
    requested = _requested_folds(config, fold)
    check_writable_dir(paths.cache_dir, "--cache-dir")  # before the store and hours of training
    check_writable_dir(paths.folds_dir, "--folds-dir")
    to_train = store.begin(config, requested)
    task = get_task(config.task)
    data = task.load_train(config, Path(paths.raw_dir), Path(paths.cache_dir), progress=progress)
    folds, folds_file = task.make_folds(data, config, Path(paths.folds_dir))
    with _work_dir(paths.work_dir) as work:
        observing = (*store.observers(), *observers)
        # the folds trained here (not those skipped by a resume), then what the task trains after a whole CV's last
        whole = requested == list(range(config.folds)) and bool(to_train)
        clock = CVClock(to_train, config.epochs, extra=task.trainings_after_folds(config) if whole else 0)
        cv = _CV(config, task, data, folds, folds_file, store, observing, work, Path(paths.raw_dir), progress, clock)
        store.open(OpenedCV(config, data, folds, folds_file, work))
        with _marked_on_error(cv):
            results = {k: _train_fold(cv, k, f"{n}/{len(to_train)}") for n, k in enumerate(to_train, 1)}
            final = _finalise_when_complete(cv, results)
    return CVResult(store.parent_id, list(results), final)


def _requested_folds(config: TrainConfig, fold: int | None) -> list[int]:
    if fold is None:
        return list(range(config.folds))
    if not 0 <= fold < config.folds:
        raise NervesegError(f"fold={fold} is out of range; this config has folds 0..{config.folds - 1}")
    return [fold]


@contextlib.contextmanager
def _work_dir(work_dir: Path | None) -> Iterator[Path]:
    """``work_dir`` (created), or a temporary folder removed afterwards."""
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        yield Path(work_dir)
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)


@contextlib.contextmanager
def _marked_on_error(cv: _CV) -> Iterator[None]:
    """On any exception the store marks its records stopped (on purpose) or failed; a wrapped Ctrl-C becomes
    ``KeyboardInterrupt`` again."""
    try:
        yield
    except BaseException as err:
        cv.store.stop(err, on_purpose=is_interruption(err) or err is cv.observer_error)
        if is_interruption(err) and not isinstance(err, KeyboardInterrupt):
            raise KeyboardInterrupt(f"interrupted ({type(err).__name__} raised by Keras)") from err
        raise


def fold_params(config: TrainConfig, task: Task, data: TrainData, folds: np.ndarray, fold: int) -> dict[str, str]:
    """A fold's params: the config's (as on the parent), the fold's seed and the task's facts about its split."""
    return {
        **param_strings(config),
        names.FOLD_PARAM: str(fold),
        **task.split_params(config, data, folds, fold),
        names.FOLD_SEED_PARAM: str(config.seed + fold),
    }


def _train_fold(cv: _CV, fold: int, position: str) -> FoldResult:
    """One fold: open its record, train it with the observers listening, keep it in the store."""
    cv.clock.fold_started(fold, time.monotonic())
    record = cv.store.start_fold(fold, fold_params(cv.config, cv.task, cv.data, cv.folds, fold))
    n_val = int(np.count_nonzero(cv.folds == fold))
    cv.say(
        f"fold {fold} ({position}; {cv.config.folds} folds in all): "
        f"{len(cv.data) - n_val} training / {n_val} validation images, run {record}"
    )
    result = cv.task.train_fold(
        cv.config,
        cv.data,
        cv.folds,
        fold,
        cv.work,
        callbacks=[_ObserverCallback(cv, fold)],
        verbose=2 if cv.progress else 0,
    )
    cv.store.save_fold(result)
    cv.say(f"fold {fold}: val_score {result.val_score:.4f} (kept epoch {result.kept_epoch}: {result.checkpoint})")
    cv.say(cv.clock.fold_ended(time.monotonic()))
    _notify(cv, lambda observer: observer.on_fold_end(fold, result.val_score))
    return result


def _notify(cv: _CV, call: Any) -> None:
    """Call every observer; one that raises stops the CV, and is remembered so the runs read stopped, not failed."""
    for observer in cv.observers:
        try:
            call(observer)
        except BaseException as err:
            cv.observer_error = err
            raise


class _ObserverCallback(keras.callbacks.Callback):
    """Keras' side of the observers and the clock: each epoch's begin and end, with the history's scalar values.

    The previous epoch's time and the ETA are printed as the next epoch begins: Keras' own epoch line is written
    after every other callback's ``on_epoch_end``, and the ETA should follow it, not split it from its header.
    """

    def __init__(self, cv: _CV, fold: int) -> None:
        super().__init__()
        self._cv, self._fold = cv, fold

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        now = time.monotonic()
        self._cv.say(self._cv.clock.epoch_line(now))
        self._cv.clock.epoch_started(now)
        _notify(self._cv, lambda observer: observer.on_epoch_begin(self._fold, epoch))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._cv.clock.epoch_ended(time.monotonic())
        values = {k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0}
        _notify(self._cv, lambda observer: observer.on_epoch_end(self._fold, epoch, values))


def _finalise_when_complete(cv: _CV, results: Mapping[int, FoldResult]) -> CVFinal | None:
    """The task's summary of the complete CV, kept by the store; None (and why) while folds are missing."""
    parent_id, n_folds = cv.store.parent_id, cv.config.folds
    finished = cv.store.finished_folds()
    missing = [k for k in range(n_folds) if k not in finished]
    if missing:
        say(
            f"parent run {parent_id}: {n_folds - len(missing)}/{n_folds} folds finished, missing {missing}; "
            f"train them with --fold <k> --parent-run-id {parent_id} (the last one to finish finalises the run)"
        )
        return None
    if cv.store.is_finalised():
        cv.say(f"parent run {parent_id} was already finalised by another process")
        return None
    all_results = [results[k] if k in results else cv.store.load_fold(k) for k in range(n_folds)]
    final = cv.task.finalise(
        cv.config, cv.data, cv.folds, all_results, progress=cv.progress, raw_dir=cv.raw_dir, work=cv.work
    )
    cv.store.finalise(final, summary_facts(cv, final))
    return final


def summary_facts(cv: _CV, final: CVFinal) -> dict[str, Any]:
    """What ``summary.json`` holds: the task's facts and what identifies the CV (task, data, split, table)."""
    return {
        **final.facts,
        "task": cv.task.name,
        "ranking_metric": cv.task.ranking_metric,
        "config_name": cv.config.name,
        "n_folds": cv.config.folds,
        "n_images": len(cv.data),
        names.DATA_FINGERPRINT: cv.data.fingerprint,
        "folds_file": cv.folds_file.name,
        "table": final.table,
    }
