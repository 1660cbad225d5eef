"""Each epoch's metrics logged to its fold's MLflow run while the fold trains: an observer of ``cross_validate``.

Metrics are logged as ``names.epoch_metric_name`` says (``train_loss``, ``val_dice``, ``lr``...), so that none
shares a param's name, with the epoch number from 1 as the step and the epoch's wall time beside them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from nerveseg import names
from nerveseg.run.store import CVObserver


class EpochLogger(CVObserver):
    """Logs to the run that ``run_id_of(fold)`` names: the fold's run, opened by the store before training."""

    def __init__(self, client: MlflowClient, run_id_of: Callable[[int], str]) -> None:
        self._client, self._run_id_of = client, run_id_of
        self._started = time.monotonic()

    def on_epoch_begin(self, fold: int, epoch: int) -> None:
        self._started = time.monotonic()

    def on_epoch_end(self, fold: int, epoch: int, logs: Mapping[str, float]) -> None:
        metrics = {names.epoch_metric_name(k): v for k, v in logs.items()}  # never a param's name
        metrics[names.EPOCH_SECONDS] = time.monotonic() - self._started
        now = int(time.time() * 1000)
        self._client.log_batch(
            self._run_id_of(fold), metrics=[Metric(k, v, now, epoch + 1) for k, v in metrics.items()]
        )
