"""``MlflowStore``: a cross-validation kept as MLflow runs, one parent (named after the config) and a child per fold.

The ``RunStore`` behind ``cv_train.py`` and every Optuna trial. Folds may be trained in one process, spread over
processes or machines (``fold=k`` with ``parent_run_id``), or continued after an interruption (``resume=True``,
which also marks fold runs left RUNNING by a dead process KILLED). Whichever process finishes the last fold
finalises the parent from the fold runs' artifacts.

Runs are written with ``MlflowClient`` and explicit run ids, never through MLflow's global "active run", so
tune's own study run and several folds in one process cannot get mixed up. A FINISHED run is never written again.

A fold run is self-contained: it carries the config's params plus its own (fold, sizes, seed, held-out subjects),
each epoch's metrics while it trains (``EpochLogger``), the kept epoch's metrics under their own names, the files
``run.fold_files`` writes for every store, its model summary and its learning curve, so fold runs compare side
by side in the runs table. A fold trained by another process or machine is rebuilt from those files.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.registry import resolve_tags

from nerveseg import names
from nerveseg.config import TrainConfig
from nerveseg.errors import NervesegError
from nerveseg.io_utils import atomic_write_text, sha256_file
from nerveseg.provenance import environment_tags
from nerveseg.report.plots import plot_learning_curves
from nerveseg.run import fold_files
from nerveseg.run.cross_validate import say
from nerveseg.run.store import CVObserver, OpenedCV
from nerveseg.tasks import get_task
from nerveseg.tasks.base import CVFinal
from nerveseg.track import cv_parents, schema
from nerveseg.track.run_reader import newest_finished_fold_runs
from nerveseg.track.schema import FOLD_TAG, PARENT_TAG, RUN_TYPE_TAG
from nerveseg.track.store import MlflowSettings, load_mlflow_settings, log_metrics, setup_mlflow
from nerveseg.train.fold_result import FoldResult


class MlflowStore:
    """One cross-validation's parent and fold runs in the tracking store that ``settings`` names.

    ``parent_run_id`` joins an unfinished parent (same params, data and folds file); ``resume`` skips folds whose
    run FINISHED and, without ``parent_run_id``, picks the newest unfinished parent of this config.
    ``nested_under`` makes the parent a child of that run (tune's study run); ``parent_tags`` go on a new parent.
    """

    def __init__(
        self,
        settings: MlflowSettings | None = None,
        *,
        parent_run_id: str | None = None,
        resume: bool = False,
        nested_under: str | None = None,
        parent_tags: Mapping[str, str] | None = None,
        progress: bool = True,
    ) -> None:
        self.settings = settings
        self._join, self._resume, self._nested_under = parent_run_id, resume, nested_under
        self._parent_tags = dict(parent_tags or {})
        self._progress = progress
        self._parent: Run | None = None
        self._fold_runs: dict[int, str] = {}
        self._open_fold: str | None = None
        self._summary_text = ""

    # ------------------------------------------------------------------------------ the RunStore protocol

    @property
    def parent_id(self) -> str:
        if self._parent is None:
            raise RuntimeError("MlflowStore.parent_id is known only after open()")
        return self._parent.info.run_id

    @property
    def experiment_id(self) -> str:
        return self._experiment_id

    def begin(self, config: TrainConfig, requested: Sequence[int]) -> list[int]:
        self.settings = settings = self.settings or load_mlflow_settings()
        self.client, self._experiment_id = self._tracking(settings)
        self._config = config
        self._one_fold = list(requested) != list(range(config.folds))
        parent, to_train = cv_parents.choose_parent(
            self.client, self._experiment_id, config, list(requested), self._join, self._resume, self._nested_under
        )
        if parent is not None:
            self._experiment_id = parent.info.experiment_id  # a parent named by id may live in another experiment
        self._parent, self._to_train = parent, to_train
        return to_train

    def open(self, cv: OpenedCV) -> None:
        """Create the parent run, or check that the data matches the one being joined and set it RUNNING."""
        self._cv, self._env_tags = cv, environment_tags()
        folds_sha = sha256_file(cv.folds_file)
        if self._parent is None:
            self._parent = self._create_parent(cv, folds_sha)
        else:
            self._rejoin_parent(cv, folds_sha)
        self._summary_text = model_summary(cv.config) if self._to_train else ""

    def observers(self) -> Sequence[CVObserver]:
        return [EpochLogger(self.client, self._fold_runs.__getitem__)]

    def start_fold(self, fold: int, params: Mapping[str, str]) -> str:
        tags = {RUN_TYPE_TAG: schema.FOLD_RUN, FOLD_TAG: str(fold), PARENT_TAG: self.parent_id, **self._env_tags}
        run_id = self.client.create_run(
            self._experiment_id, run_name=f"fold_{fold}", tags=resolve_tags(tags)
        ).info.run_id
        self._fold_runs[fold], self._open_fold = run_id, run_id
        # logged now, so that a running or failed fold already says what it trains on
        self.client.log_batch(run_id, params=[Param(key, value) for key, value in params.items()])
        return run_id

    def save_fold(self, result: FoldResult) -> None:
        """The fold's kept-epoch metrics and its files, with its model summary and learning curve, on its run."""
        run_id, k = self._fold_runs[result.fold], result.fold
        folder = fold_files.write_fold_files(self._cv.work / f"fold_{k}_artifacts", self._cv.data.ids, result)
        atomic_write_text(folder / names.MODEL_SUMMARY_ARTIFACT, self._summary_text)
        plot_learning_curves(
            result.history,
            folder / names.LEARNING_CURVE_ARTIFACT,
            kept_epoch=result.kept_epoch,
            title=f"fold {k}: kept epoch {result.kept_epoch}, val_score {result.val_score:.4f}",
        )
        log_metrics(self.client, run_id, kept_metrics(result))
        self.client.log_artifacts(run_id, str(folder))
        self.client.set_terminated(run_id, "FINISHED")
        self._open_fold = None

    def finished_folds(self) -> set[int]:
        return set(self._finished_fold_runs())

    def is_finalised(self) -> bool:
        return self.client.get_run(self.parent_id).info.status == "FINISHED"

    def load_fold(self, fold: int) -> FoldResult:
        """A FoldResult rebuilt from a finished fold run's artifacts (trained by another call or process)."""
        run_id, cv = self._finished_fold_runs()[fold].info.run_id, self._cv
        dst = cv.work / f"fold_{fold}_{run_id}"
        try:
            oof_local = self.client.download_artifacts(run_id, names.oof_fold_artifact(fold), str(dst))
            facts_local = self.client.download_artifacts(run_id, names.fold_facts_artifact(fold), str(dst))
        except (MlflowException, OSError) as err:
            what = f"fold run {run_id} (fold {fold}) lacks its OOF artifacts ({err})"
            raise NervesegError(f"{what}; retrain that fold") from err
        facts, oof = json.loads(Path(facts_local).read_text()), fold_files.load_oof(oof_local)
        weights = Path(f"runs:/{run_id}/{names.weights_artifact(fold)}")
        return fold_files.fold_result(facts, oof, cv.data.ids, cv.folds, weights, source=f"fold run {run_id}")

    def finalise(self, final: CVFinal, facts: Mapping[str, Any]) -> None:
        """The task's summary of a complete cross-validation logged on the parent, which is then FINISHED."""
        client, run_id = self.client, self.parent_id
        log_metrics(client, run_id, final.metrics)
        for key, value in {**final.tags, schema.DESCRIPTION_TAG: final.description}.items():
            client.set_tag(run_id, key, value)
        client.log_artifacts(run_id, str(fold_files.write_cv_files(self._cv.work / "cv_artifacts", final, facts)))
        client.set_terminated(run_id, "FINISHED")

    def stop(self, err: BaseException, *, on_purpose: bool) -> None:
        """Mark the open fold run and the parent KILLED (on purpose) or FAILED; never hides ``err``."""
        runs = [self._open_fold] if self._open_fold else []
        cv_parents.mark_stopped(
            self.client, [*runs, *([self.parent_id] if self._parent is not None else [])], err, on_purpose=on_purpose
        )
        self._open_fold = None

    # ---------------------------------------------------------------------------------------- helpers

    def _tracking(self, settings: MlflowSettings) -> tuple[MlflowClient, str]:
        """The client and experiment id, after checking the store (and the run to nest under) exist."""
        experiment_id = setup_mlflow(settings)
        client = MlflowClient(settings.tracking_uri)
        if self._nested_under is not None:
            try:
                client.get_run(self._nested_under)
            except MlflowException as err:
                raise NervesegError(f"nested_under={self._nested_under!r} is not a run in the tracking store") from err
        return client, experiment_id

    def _create_parent(self, cv: OpenedCV, folds_sha: str) -> Run:
        tags = {
            RUN_TYPE_TAG: schema.CV_RUN,
            names.DATA_FINGERPRINT: cv.data.fingerprint,
            schema.FOLDS_SHA_TAG: folds_sha,
            **self._env_tags,
            **({PARENT_TAG: self._nested_under} if self._nested_under else {}),
            **self._parent_tags,
        }
        parent = cv_parents.create_parent(self.client, self._experiment_id, cv.config, tags, cv.folds_file, cv.work)
        run_id = parent.info.run_id
        if self._progress:
            experiment = self.settings.experiment_name if self.settings else ""
            say(f"MLflow parent run {run_id} ({cv.config.name}) in experiment {experiment!r}")
        if self._one_fold:
            say(f"train the other folds with: --fold <k> --parent-run-id {run_id}")
        return parent

    def _rejoin_parent(self, cv: OpenedCV, folds_sha: str) -> None:
        parent = self._parent
        run_id = parent.info.run_id
        cv_parents.check_same_data(parent, cv.data.fingerprint, folds_sha)
        started_at, here = parent.data.tags.get(names.GIT_COMMIT_TAG, ""), self._env_tags[names.GIT_COMMIT_TAG]
        if started_at and started_at != here:
            say(f"warning: parent run {run_id} was started at commit {started_at[:10]}, this process runs {here[:10]}")
        if parent.info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")

    def _finished_fold_runs(self) -> dict[int, Run]:
        assert self._parent is not None, "open() sets the parent"
        return newest_finished_fold_runs(self.client, self._parent)


def model_summary(config: TrainConfig) -> str:
    """Keras's summary of the config's model, kept on every fold run that trains."""
    lines: list[str] = []
    get_task(config.task).build_model(config).summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    return "\n".join(lines) + "\n"


def kept_metrics(result: FoldResult) -> dict[str, float]:
    """The kept epoch (1-based) and that epoch's history values under their own names, plus ``val_score``.

    ``val_dice`` on a fold run is the per-epoch curve (its latest value is the last epoch);
    ``val_dice_kept`` is the value of the epoch whose weights were kept. With ``checkpoint="inner"`` the
    ``val_*`` history is on the inner split that chose the epoch; ``val_score`` is always the scored fold's.
    """
    epoch = result.kept_epoch
    metrics = {names.KEPT_EPOCH: float(epoch), names.VAL_SCORE: float(result.val_score)}
    for key in names.KEPT_HISTORY_KEYS:
        values = result.history.get(key) or []
        if 1 <= epoch <= len(values):
            metrics[names.kept_metric(key)] = float(values[epoch - 1])
    return metrics


class EpochLogger(CVObserver):
    """Each epoch's metrics on the run that ``run_id_of(fold)`` names (the fold's run, opened before training),
    as ``names.epoch_metric_name`` says (``train_loss``, ``val_dice``, ``lr``...: never a param's name), with the
    epoch number from 1 as the step and the epoch's wall time beside them."""

    def __init__(self, client: MlflowClient, run_id_of: Callable[[int], str]) -> None:
        self._client, self._run_id_of = client, run_id_of
        self._started = time.monotonic()

    def on_epoch_begin(self, fold: int, epoch: int) -> None:
        self._started = time.monotonic()

    def on_epoch_end(self, fold: int, epoch: int, logs: Mapping[str, float]) -> None:
        metrics = {names.epoch_metric_name(k): v for k, v in logs.items()}
        metrics[names.EPOCH_SECONDS] = time.monotonic() - self._started
        now = int(time.time() * 1000)
        self._client.log_batch(
            self._run_id_of(fold), metrics=[Metric(k, v, now, epoch + 1) for k, v in metrics.items()]
        )
