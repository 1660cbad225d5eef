"""``MlflowRunReader``: a finished cross-validation's parent run read back (``run.store.RunReader``), and
``open_run``, which turns what a user typed (an MLflow run id or a LocalStore folder) into a reader."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient

from nerveseg.errors import NervesegError
from nerveseg.evaluate.paired import ImageScores
from nerveseg.run.fold_files import load_image_scores
from nerveseg.run.local_store import LocalRunReader
from nerveseg.run.store import RunReader
from nerveseg.track import schema
from nerveseg.track.run_models import cv_parent_run, run_name
from nerveseg.track.store import TrackingError, download_artifacts

RUN_ID = re.compile(r"[0-9a-f]{32}")  # what MLflow's run ids look like


class MlflowRunReader:
    """A FINISHED CV parent run at ``tracking_uri``; refuses a fold's run, another kind of run or an unfinished one."""

    def __init__(self, client: MlflowClient, run_id: str, tracking_uri: str) -> None:
        run = cv_parent_run(client, run_id)
        if run.info.status != "FINISHED":
            raise NervesegError(f"run {run_id} ({run_name(run)}) is {run.info.status}; compare finished runs")
        self._run, self._tracking_uri = run, tracking_uri

    @property
    def run_id(self) -> str:
        return self._run.info.run_id

    @property
    def experiment_id(self) -> str:
        return self._run.info.experiment_id

    @property
    def name(self) -> str:
        return run_name(self._run)

    @property
    def task(self) -> str:
        return self._run.data.params.get(schema.TASK_PARAM, "nerve")  # runs from before the field: nerve

    @property
    def data_fingerprint(self) -> str:
        return self._run.data.tags.get(schema.DATA_FINGERPRINT_TAG, "")

    def metrics(self) -> dict[str, float]:
        return dict(self._run.data.metrics)

    def image_scores(self) -> ImageScores:
        source = f"{schema.IMAGE_SCORES_ARTIFACT} of run {self.run_id} ({self.name})"
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = download_artifacts(
                    self.run_id, schema.IMAGE_SCORES_ARTIFACT, tmp, tracking_uri=self._tracking_uri
                )
            except TrackingError as err:
                raise NervesegError(
                    f"run {self.run_id} ({self.name}) has no {schema.IMAGE_SCORES_ARTIFACT} (finished before "
                    "per-image scores were kept, or its artifacts are out of reach); train it again to compare it"
                ) from err
            return load_image_scores(path, source=source)


def open_run(name: str, tracking_uri: str) -> RunReader:
    """A LocalStore folder when ``name`` is an existing folder, else the MLflow run with that id."""
    if Path(name).is_dir():
        return LocalRunReader(name)
    if RUN_ID.fullmatch(name):
        return MlflowRunReader(MlflowClient(tracking_uri), name, tracking_uri)
    raise NervesegError(
        f"{name!r} is neither a LocalStore folder nor an MLflow run id (32 hex digits); pass a CV parent run's id "
        "or the folder of a LocalStore cross-validation"
    )


__all__ = ["MlflowRunReader", "open_run"]
