"""``MlflowRunReader``: a finished cross-validation's parent run read back (``run.store.RunReader``), its files
downloaded on demand, and ``open_run``, which turns what a user typed (an MLflow run id or a LocalStore folder)
into a reader."""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient

from nerveseg import names
from nerveseg.config import TrainConfig, load_config
from nerveseg.errors import NervesegError
from nerveseg.evaluate.paired import ImageScores
from nerveseg.run.fold_files import check_weights_file, load_image_scores
from nerveseg.run.local_store import LocalRunReader
from nerveseg.run.store import RunReader
from nerveseg.track import schema
from nerveseg.track.run_models import cv_parent_run, run_name
from nerveseg.track.store import TrackingError, download_artifacts

RUN_ID = re.compile(r"[0-9a-f]{32}")  # what MLflow's run ids look like


class MlflowRunReader:
    """A FINISHED CV parent run at ``tracking_uri``; refuses a fold's run, another kind of run or an unfinished one
    (``unfinished="warn"``: warns, for a submission from a run whose folds all finished but whose summary did not)."""

    def __init__(self, client: MlflowClient, run_id: str, tracking_uri: str, *, unfinished: str = "refuse") -> None:
        run = cv_parent_run(client, run_id)
        if run.info.status != "FINISHED":
            if unfinished == "refuse":
                raise NervesegError(f"run {run_id} ({run_name(run)}) is {run.info.status}; compare finished runs")
            print(f"warning: run {run_id} ({run_name(run)}) is {run.info.status}, not FINISHED", file=sys.stderr)
        self._run, self._tracking_uri, self._client = run, tracking_uri, client
        self._config: TrainConfig | None = None

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
        return self._run.data.params.get(names.TASK_PARAM, "nerve")  # runs from before the field: nerve

    @property
    def data_fingerprint(self) -> str:
        return self._run.data.tags.get(names.DATA_FINGERPRINT, "")

    def metrics(self) -> dict[str, float]:
        return dict(self._run.data.metrics)

    def image_scores(self) -> ImageScores:
        source = f"{names.IMAGE_SCORES_ARTIFACT} of run {self.run_id} ({self.name})"
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = download_artifacts(
                    self.run_id, names.IMAGE_SCORES_ARTIFACT, tmp, tracking_uri=self._tracking_uri
                )
            except TrackingError as err:
                raise NervesegError(
                    f"run {self.run_id} ({self.name}) has no {names.IMAGE_SCORES_ARTIFACT} (finished before "
                    "per-image scores were kept, or its artifacts are out of reach); train it again to compare it"
                ) from err
            return load_image_scores(path, source=source)

    def config(self) -> TrainConfig:
        if self._config is None:
            with tempfile.TemporaryDirectory() as tmp:
                path = self.file(names.CONFIG_ARTIFACT, Path(tmp))
                if path is None:
                    raise NervesegError(
                        f"run {self.run_id} ({self.name}) has no {names.CONFIG_ARTIFACT} artifact; "
                        "is it a CV parent run?"
                    )
                self._config = load_config(path).replace(name=self.name)
        return self._config

    def file(self, artifact: str, workdir: Path) -> Path | None:
        try:
            return download_artifacts(self.run_id, artifact, workdir / self.run_id, tracking_uri=self._tracking_uri)
        except (TrackingError, ValueError):
            return None

    def fold_weights(self, workdir: Path) -> list[Path]:
        """The newest FINISHED fold run's weights per fold, downloaded under ``workdir``."""
        run_id, name, folds = self.run_id, self.name, self.config().folds
        runs = schema.newest_finished_fold_runs(self._client, self._run)
        missing = [k for k in range(folds) if k not in runs]
        if missing:
            raise NervesegError(
                f"run {run_id} ({name}) has no finished fold run for folds {missing} of {folds}, so no weights "
                "for them; finish the cross-validation (python src/cv_train.py --resume) or pick another run"
            )
        weights = []
        for k in range(folds):
            artifact, fold_run = names.weights_artifact(k), runs[k].info.run_id
            try:
                path = download_artifacts(
                    fold_run, artifact, workdir / run_id / f"fold_{k}", tracking_uri=self._tracking_uri
                )
            except (TrackingError, ValueError) as err:
                raise NervesegError(
                    f"run {run_id} ({name}) has no weights for fold {k} (artifact {artifact} of fold run "
                    f"{fold_run}); retrain that fold or pick another run"
                ) from err
            what = f"fold {k}'s weights (artifact {artifact} of fold run {fold_run}, CV run {run_id} ({name}))"
            check_weights_file(path, what, "retrain that fold or pick another run")
            weights.append(path)
        return weights


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
