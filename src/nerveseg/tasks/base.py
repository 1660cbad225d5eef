"""What the pipeline asks a task (a data set with its metric and submission format), and nothing else.

``cv_train.py``, ``submit.py`` and ``tune.py`` run any task through this interface: the cross-validation
(``run.cross_validate``) reads the data, splits it, trains each fold and finalises by asking the task; the
submission (``run.submit``) asks it for the post-processing and the file. A task object is
stateless and thin: it wires the stages (data, train, evaluate, inference, report, submit) for one data set.
``nerveseg.tasks.get_task`` returns the one named by the config's ``task`` field. The core stays free of
MLflow and Optuna: a task returns plain values and the store records them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from nerveseg.config import TrainConfig
from nerveseg.evaluate.paired import ImageScores
from nerveseg.inference.trained import Decision, TrainedModels  # re-exported: what every task passes around
from nerveseg.train.fold_result import FoldResult

if TYPE_CHECKING:
    import keras
    import pandas as pd


class TrainData(Protocol):
    """The training set as the pipeline needs it; a task's data may hold more (images, masks...)."""

    fingerprint: str

    @property
    def ids(self) -> np.ndarray:
        """One string id per training item (nerve: image ids; ISBI: slice numbers "0", "1", ...)."""

    def __len__(self) -> int: ...


@dataclass
class CVFinal:
    """Everything a complete cross-validation produced that the parent run records.

    ``metrics`` are the parent's flat metrics (the ranking metric among them), ``table`` the plain-text
    CV table, ``facts`` extra fields for ``summary.json``, ``tags`` extra parent tags. ``oof_ids`` /
    ``oof_probs`` / ``oof_presence`` are saved as the run's OOF artifact. ``description`` (Markdown) is the
    run's description, ``figures`` image files kept under ``plots/`` (their names are the artifact names).
    ``image_scores``: every OOF image's score that the headline post-processed score averages (the stores keep
    it as ``oof/oof_image_scores.csv``, what a paired comparison of two runs reads).
    """

    metrics: dict[str, float]
    table: str
    decision: Decision
    oof_ids: np.ndarray
    oof_probs: np.ndarray
    oof_presence: np.ndarray | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    description: str = ""
    figures: tuple[Path, ...] = ()
    image_scores: ImageScores | None = None


@dataclass
class SubmissionFile:
    """A submission written, validated, and what its run records."""

    path: Path
    n_images: int
    test_fingerprint: str
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    ids: np.ndarray | None = None  # the test ids in file order, where the format has ids


@dataclass(frozen=True)
class ServedColumn:
    """One column of the served model's answer: its name, MLflow's type name for it (``binary``, ``boolean``,
    ``double``, ``long``, ``string``) and whether every answer has it (an optional one comes with ``return_mask``)."""

    name: str
    kind: str
    required: bool = True


class Served(Protocol):
    """A task's fold ensemble as ``mlflow models serve`` and ``predict.py`` use it: one answer row per image."""

    def answer(self, images: list[np.ndarray], *, return_mask: bool) -> pd.DataFrame: ...


class Task(Protocol):
    """One data set's reading, splitting, training, scoring, post-processing and submission format."""

    name: str
    ranking_metric: str  # the parent-run metric that ranks runs (tune's objective, CV means)
    # what submit.py ranks runs by when it chooses one (run.choice): the estimate of a submission's score, the
    # ranking metric where a run lacks it; both in the direction of higher_is_better
    estimate_metric: str
    higher_is_better: bool
    ranking_text: str  # what the ranking metric means, for the study's description
    submission_suffix: str  # ".csv", ".tif"
    supports_test_masks: bool  # submit --test-masks scores the file locally
    kaggle_submission: bool  # submit --kaggle uploads its file to the Kaggle competition (kaggle_client)

    def load_train(self, config: TrainConfig, raw_dir: Path, cache_dir: Path, *, progress: bool) -> TrainData:
        """The validated training data under ``raw_dir`` (decoded arrays may be cached in ``cache_dir``)."""

    def data_fingerprint(self, raw_dir: Path, cache_dir: Path, *, progress: bool) -> str:
        """The fingerprint a CV trained on ``raw_dir``'s training data records, computed without training (to tell
        which runs were trained on the data a submission predicts)."""

    def make_folds(self, data: TrainData, config: TrainConfig, folds_dir: Path) -> tuple[np.ndarray, Path]:
        """The validation fold of each item and the JSON file that holds the split (written once)."""

    def split_params(self, config: TrainConfig, data: TrainData, folds: np.ndarray, fold: int) -> dict[str, str]:
        """A fold run's own params about its split (``n_train``, ``n_val``, what is held out)."""

    def train_fold(
        self,
        config: TrainConfig,
        data: TrainData,
        folds: np.ndarray,
        fold: int,
        workdir: Path,
        *,
        callbacks: Sequence[keras.callbacks.Callback],
        verbose: int,
    ) -> FoldResult:
        """Train one fold -> ``train.fold.FoldResult`` (weights file, OOF probabilities, ``val_score``)."""

    def build_model(self, config: TrainConfig) -> keras.Model:
        """The Keras model as trained (for the model summary artifact)."""

    def trainings_after_folds(self, config: TrainConfig) -> int:
        """The fold-sized trainings ``finalise`` runs after the last fold (the nerve task's ensemble-gain probe),
        which the CV's ETA counts."""

    def finalise(
        self,
        config: TrainConfig,
        data: TrainData,
        folds: np.ndarray,
        results: Sequence[FoldResult],
        *,
        progress: bool,
        raw_dir: Path,
        work: Path,
    ) -> CVFinal:
        """Score the complete CV on its OOF predictions, decide the post-processing there, and draw the
        report's figures into ``work`` (``raw_dir`` holds the original images they may show)."""

    def decision_from_json(self, values: Any, *, source: str) -> Decision:
        """A stored ``postprocessing.json`` read back (one-line error naming ``source`` when malformed)."""

    def decide_postprocessing(
        self,
        data: TrainData,
        rows: np.ndarray,
        oof_probs: np.ndarray,
        oof_presence: np.ndarray | None,
        *,
        progress: bool,
    ) -> Decision:
        """Post-processing decided on OOF probabilities of training items ``rows`` (an ensemble's mean OOF)."""

    def check_test_data(self, raw_dir: Path) -> None:
        """One-line error before any work when ``raw_dir`` holds no test data for this task."""

    def submission_bytes(self, raw_dir: Path) -> int:
        """A generous size of the file this task's submission of ``raw_dir``'s test data writes (0 when it holds
        none), so that ``submit.py`` checks the free space before any prediction, before it knows the task."""

    served_columns: tuple[ServedColumn, ...]  # the served model's answer, in order

    def served(self, runs: Sequence[TrainedModels], decision: Decision, *, tta: bool, batch_size: int) -> Served:
        """The runs' fold ensemble behind the pyfunc model (``track.model_package``): the task's own answer."""

    def write_submission(
        self,
        runs: Sequence[TrainedModels],
        decision: Decision,
        path: Path,
        *,
        raw_dir: Path,
        cache_dir: Path,
        tta: bool,
        batch_size: int,
        progress: bool,
    ) -> SubmissionFile:
        """Predict the test data with every run's fold models, post-process, write ``path`` (new) and check it."""


class SharedStages:
    """The ``Task`` methods every task so far does alike, written once: a task class derives from it and
    overrides what it does otherwise (its own folds, say). Imports stay inside, so ``get_task`` stays cheap."""

    kaggle_submission = False  # only the nerve task's file is a Kaggle competition's

    def make_folds(self, data: TrainData, config: TrainConfig, folds_dir: Path) -> tuple[np.ndarray, Path]:
        """Subject-grouped folds (``data.folds``), written once to the folds file named by data and K."""
        from nerveseg.data.folds import load_or_create_folds

        return load_or_create_folds(data, config.folds, config.seed, folds_dir)

    def build_model(self, config: TrainConfig) -> keras.Model:
        """The config's training network (``model.families``)."""
        from nerveseg.model.families import training_network

        return training_network(config)

    def trainings_after_folds(self, config: TrainConfig) -> int:
        return 0
