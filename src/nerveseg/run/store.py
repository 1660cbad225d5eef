"""What ``cross_validate`` asks of the place that keeps a cross-validation, and who listens while it trains.

A ``RunStore`` keeps one cross-validation: its parent record, each finished fold (weights, OOF predictions,
facts) and the final summary. ``track.mlflow_store.MlflowStore`` keeps it as MLflow runs (the default of
``cv_train.py`` and ``tune.py``); ``run.local_store.LocalStore`` keeps the same files in a folder, for
benchmarks and tests that need no tracking server. The loop never knows which one it talks to.

A ``CVObserver`` hears every epoch and fold; it may raise to stop the CV (tuning raises ``optuna.TrialPruned``),
and the store then marks the runs stopped on purpose rather than failed.

A ``RunReader`` is the read side: a finished cross-validation read back from either store (``LocalRunReader``
for a folder, ``track.run_reader.MlflowRunReader`` for an MLflow run), for the use cases that look at finished
runs without knowing where they are kept: comparing them (``compare.py``), submitting from them
(``run.submit``) and packaging their fold ensemble as a model (``run.package``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from nerveseg import names
from nerveseg.config import TrainConfig, load_config
from nerveseg.errors import NervesegError
from nerveseg.evaluate.paired import ImageScores
from nerveseg.paths import FOLDS_DIR, PROCESSED_DIR, RAW_DIR
from nerveseg.run.fold_files import load_image_scores
from nerveseg.tasks.base import CVFinal, TrainData
from nerveseg.train.fold_result import FoldResult


@dataclass(frozen=True)
class CVPaths:
    """Where a cross-validation reads its data and keeps its derived files.

    ``work_dir`` holds the local weights and OOF files while the CV runs (a temporary folder when None).
    """

    raw_dir: Path = RAW_DIR
    cache_dir: Path = PROCESSED_DIR
    folds_dir: Path = FOLDS_DIR
    work_dir: Path | None = None


class CVObserver:
    """Hooks around training; the defaults do nothing, so an observer overrides only what it needs.

    ``epoch`` is 0-based as in Keras; ``logs`` carry the history's own names (``loss``, ``val_dice``,
    ``learning_rate``...). An exception raised here stops the cross-validation.
    """

    def on_epoch_begin(self, fold: int, epoch: int) -> None:
        """Before each epoch."""

    def on_epoch_end(self, fold: int, epoch: int, logs: Mapping[str, float]) -> None:
        """After each epoch."""

    def on_fold_end(self, fold: int, score: float) -> None:
        """After a fold is saved in the store; ``score`` is its val_score."""


@dataclass(frozen=True)
class OpenedCV:
    """The data a cross-validation trains on, as the store needs it to create or check its parent record."""

    config: TrainConfig
    data: TrainData
    folds: np.ndarray
    folds_file: Path
    work: Path


class RunStore(Protocol):
    """Keeps one cross-validation's parent, folds and summary; resumable and joinable where the store allows."""

    @property
    def parent_id(self) -> str:
        """The parent record's id (an MLflow run id, or the LocalStore folder's name); set by ``open``."""

    def begin(self, config: TrainConfig, requested: Sequence[int]) -> list[int]:
        """Check the store and choose the parent (new, joined or resumed) before any data is read;
        returns the requested folds it still lacks."""

    def open(self, cv: OpenedCV) -> None:
        """Create the parent record, or check that the one joined was made on the same data and split."""

    def observers(self) -> Sequence[CVObserver]:
        """The store's own listeners (e.g. per-epoch metric logging), called before the caller's."""

    def start_fold(self, fold: int, params: Mapping[str, str]) -> str:
        """Open fold ``fold``'s record with its params; returns its id for progress lines."""

    def save_fold(self, result: FoldResult) -> None:
        """Keep a trained fold (weights, OOF predictions, facts) and mark its record finished."""

    def finished_folds(self) -> set[int]:
        """The folds of the parent that are finished, here or in another process."""

    def is_finalised(self) -> bool:
        """Whether the parent was already finalised (by another process that finished the last fold)."""

    def load_fold(self, fold: int) -> FoldResult:
        """A finished fold rebuilt from the store (trained by another call or process)."""

    def finalise(self, final: CVFinal, facts: Mapping[str, Any]) -> None:
        """Record the complete CV's metrics, tables, OOF file and figures; the parent is then finished."""

    def stop(self, err: BaseException, *, on_purpose: bool) -> None:
        """Mark the open fold and the parent stopped (``on_purpose``: interrupted or an observer's stop) or
        failed; must never hide ``err``."""


class RunReader(Protocol):
    """A FINISHED cross-validation read back from its store: who it is, what it was trained on, its scores."""

    @property
    def run_id(self) -> str:
        """The MLflow run id, or the LocalStore folder's path, as the user names the run."""

    @property
    def name(self) -> str:
        """The config's name (the run's name)."""

    @property
    def task(self) -> str:
        """The config's task (``nerve``, ``isbi2012``), which says whether a higher score is better."""

    @property
    def data_fingerprint(self) -> str:
        """The content fingerprint of the data the CV was trained on ("" when the store has none)."""

    def metrics(self) -> dict[str, float]:
        """The CV's summary metrics (``cv_score_mean``, ``oof_score_postprocessed``...)."""

    def image_scores(self) -> ImageScores:
        """Every OOF image's score with its subject and fold (one-line error when the run kept none)."""

    def config(self) -> TrainConfig:
        """The run's ``config.yaml`` with the run's name (one-line error when the run kept none)."""

    def file(self, artifact: str, workdir: Path) -> Path | None:
        """The run's file ``artifact`` (``postprocessing.json``, ``oof/oof_probs.npz``...) as a local path, downloaded
        under ``workdir`` when the store is remote; None when the run has no such file."""

    def fold_weights(self, workdir: Path) -> list[Path]:
        """Every fold's weights file as a local path (downloaded under ``workdir`` when the store is remote),
        each checked readable; a missing or damaged one is a one-line error naming it."""


class StoredRun:
    """What both stores' readers read alike, through their ``file``: the run's config and per-image scores, each
    a one-line error when the run kept none. A subclass gives ``run_id``, ``name`` and ``file``."""

    run_id: str
    name: str
    _config: TrainConfig | None = None

    def file(self, artifact: str, workdir: Path) -> Path | None:
        raise NotImplementedError

    def config(self) -> TrainConfig:
        """Read once: a finished run never changes, and a remote one is downloaded each time it is read."""
        if self._config is None:
            with tempfile.TemporaryDirectory() as tmp:
                path = self.file(names.CONFIG_ARTIFACT, Path(tmp))
                if path is None:
                    raise NervesegError(
                        f"run {self.run_id} ({self.name}) has no {names.CONFIG_ARTIFACT}; is it a cross-validation "
                        "run? Train it again"
                    )
                self._config = load_config(path).replace(name=self.name)
        return self._config

    def image_scores(self) -> ImageScores:
        with tempfile.TemporaryDirectory() as tmp:
            path = self.file(names.IMAGE_SCORES_ARTIFACT, Path(tmp))
            if path is None:
                raise NervesegError(
                    f"run {self.run_id} ({self.name}) has no {names.IMAGE_SCORES_ARTIFACT} (finished before per-image "
                    "scores were kept, or its files are out of reach); train it again to compare it"
                )
            return load_image_scores(path, source=f"{names.IMAGE_SCORES_ARTIFACT} of run {self.run_id} ({self.name})")
