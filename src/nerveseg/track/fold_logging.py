"""What a fold run hears while it trains: each epoch's metrics logged to its MLflow run, and the tuning listener.

A listener may stop the cross-validation (e.g. ``optuna.TrialPruned``); ``StopState`` remembers that it did, so
the runs are marked KILLED (stopped on purpose) rather than FAILED.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import keras
import numpy as np
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from nerveseg.track import schema


class CVListener(Protocol):
    """Hooks for tuning: may raise (e.g. ``optuna.TrialPruned``) to stop; the runs are then marked KILLED."""

    def on_epoch_end(self, fold: int, epoch: int, logs: Mapping[str, float]) -> None:
        """After each epoch; ``epoch`` is 0-based as in Keras, ``logs`` has the HISTORY_KEYS names."""

    def on_fold_end(self, fold: int, score: float) -> None:
        """After a fold's run is FINISHED; ``score`` is its val_score (full resolution)."""


@dataclass
class StopState:
    """Remembers an exception raised by the listener, so it marks runs KILLED rather than FAILED."""

    listener_error: BaseException | None = None


# ------------------------------------------------------------------------------------- fold runs


class EpochLogger(keras.callbacks.Callback):
    """Logs each epoch's metrics to the fold's run (step = epoch number from 1) and calls the listener.

    Metrics are logged as ``schema.epoch_metric_name`` says (``train_loss``, ``val_dice``, ``lr``...), so that
    none shares a param's name; the listener gets the history's own names (``loss``, ``learning_rate``...).
    """

    def __init__(
        self, client: MlflowClient, run_id: str, fold: int, listener: CVListener | None, state: StopState
    ) -> None:
        super().__init__()
        self._client, self._run_id, self._fold = client, run_id, fold
        self._listener, self._state = listener, state
        self._started = time.monotonic()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = dict(logs or {})
        values = {k: float(v) for k, v in logs.items() if np.ndim(v) == 0}
        metrics = {schema.epoch_metric_name(k): v for k, v in values.items()}  # never a param's name
        metrics[schema.EPOCH_SECONDS] = time.monotonic() - self._started
        now = int(time.time() * 1000)
        self._client.log_batch(self._run_id, metrics=[Metric(k, v, now, epoch + 1) for k, v in metrics.items()])
        if self._listener is not None:
            try:
                self._listener.on_epoch_end(self._fold, epoch, values)
            except BaseException as err:
                self._state.listener_error = err
                raise
