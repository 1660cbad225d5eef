"""Cross-validation tracked in MLflow: the one code path behind ``cv_train.py`` and ``tune.py``.

One parent run per cross-validation (named after the config) and one nested child run per fold.
Folds may be trained in one process, spread over processes or machines (``fold=k`` with
``parent_run_id``), or continued after an interruption (``resume=True``). Whichever process
finishes the last fold finalises the parent: it assembles the out-of-fold (OOF) predictions from
the fold runs' artifacts, so no fold is ever trained twice, and decides the post-processing.

Runs are written with ``MlflowClient`` and explicit run ids, never through MLflow's global
"active run", so tune's own study run and several folds in one process cannot get mixed up. A run
that is FINISHED is never written to again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import keras
import numpy as np
from mlflow.entities import Metric, Param, Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.registry import resolve_tags

from nerveseg.config import TrainConfig, config_to_yaml
from nerveseg.data.cache import PreparedData, prepare_train
from nerveseg.data.folds import load_or_create_folds
from nerveseg.data.raw import index_train, read_image
from nerveseg.evaluate.metrics import to_full_resolution
from nerveseg.evaluate.postprocess import decide_postprocessing
from nerveseg.io_utils import atomic_save_npz, atomic_write_text, sha256_file
from nerveseg.model.unet import build_model_from_config
from nerveseg.paths import FOLDS_DIR, PROCESSED_DIR, RAW_DIR
from nerveseg.track.store import RUN_TYPE_TAG, MlflowSettings, environment_tags, load_mlflow_settings, setup_mlflow
from nerveseg.train import fold as training
from nerveseg.train.cv_summary import CVSummary, format_summary_table, interval_metrics, summarize_cv
from nerveseg.train.plots import pick_best_worst, plot_gallery, plot_learning_curves

PARENT_TAG = "mlflow.parentRunId"
STOPPED_TAG = "nerveseg.stopped"  # exception class that stopped a KILLED run (KeyboardInterrupt, TrialPruned...)
ERROR_TAG = "nerveseg.error"  # first line of the error that FAILED a run
GALLERY_IMAGES = 4  # best and worst each


class CVListener(Protocol):
    """Hooks for tuning: may raise (e.g. ``optuna.TrialPruned``) to stop; the runs are then marked KILLED."""

    def on_epoch_end(self, fold: int, epoch: int, logs: Mapping[str, float]) -> None:
        """After each epoch; ``epoch`` is 0-based as in Keras, ``logs`` has the HISTORY_KEYS names."""

    def on_fold_end(self, fold: int, score: float) -> None:
        """After a fold's run is FINISHED; ``score`` is its val_score (full resolution)."""


@dataclass
class CVRunResult:
    """What a call did; ``summary``/``postprocessing`` are None until the parent's last fold is done."""

    parent_run_id: str
    summary: CVSummary | None
    postprocessing: dict[str, Any] | None
    experiment_id: str = ""
    trained_folds: list[int] = field(default_factory=list)  # folds trained by this call


@dataclass
class _StopState:
    """Remembers an exception raised by the listener, so it marks runs KILLED rather than FAILED."""

    listener_error: BaseException | None = None


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _param_strings(config: TrainConfig) -> dict[str, str]:
    """Config params as MLflow stores them (strings), for comparing a run's params with a config."""
    return {key: str(value) for key, value in config.to_params().items()}


# ------------------------------------------------------------------------------------- parent runs


def _fold_children(client: MlflowClient, parent: Run) -> dict[int, list[Run]]:
    """The parent's fold runs by fold number (any status), oldest first."""
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}' and tags.`{RUN_TYPE_TAG}` = 'fold'",
        max_results=10_000,
        order_by=["attributes.start_time ASC"],
    )
    children: dict[int, list[Run]] = {}
    for run in runs:
        children.setdefault(int(run.data.tags["fold"]), []).append(run)
    return children


def _finished_folds(client: MlflowClient, parent: Run) -> dict[int, Run]:
    """fold -> its newest FINISHED run."""
    finished = {}
    for fold, runs in _fold_children(client, parent).items():
        done = [run for run in runs if run.info.status == "FINISHED"]
        if done:
            finished[fold] = done[-1]
    return finished


def _params_differ(run: Run, params: Mapping[str, str]) -> list[str]:
    return [
        f"{k}: run {run.data.params.get(k)!r} vs config {v!r}" for k, v in params.items() if run.data.params.get(k) != v
    ]


def _existing_parent(client: MlflowClient, run_id: str, config: TrainConfig, params: Mapping[str, str]) -> Run:
    """The parent run ``run_id`` after checking it may be joined: a cv run, unfinished, same params."""
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        raise ValueError(f"parent run {run_id!r} was not found in the tracking store ({err.message})") from err
    if run.data.tags.get(RUN_TYPE_TAG) != "cv":
        raise ValueError(
            f"run {run_id} is not a cross-validation parent run (tag {RUN_TYPE_TAG}="
            f"{run.data.tags.get(RUN_TYPE_TAG)!r}); pass the id of a cv_train parent run"
        )
    if run.info.status == "FINISHED":
        raise ValueError(
            f"parent run {run_id} ({run.info.run_name}) is FINISHED and is never modified; "
            "start a new cross-validation without --parent-run-id/--resume"
        )
    differences = _params_differ(run, params)
    if differences:
        raise ValueError(
            f"parent run {run_id} was started with other settings ({'; '.join(differences)}); "
            "use the same config, --folds, --epochs and --seed, or start a new run"
        )
    return run


def _resumable_parent(
    client: MlflowClient, experiment_id: str, config: TrainConfig, params: Mapping[str, str], nested_under: str | None
) -> Run:
    """The most recent unfinished parent run with this config's name and identical params."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{RUN_TYPE_TAG}` = 'cv'",
        max_results=10_000,
        order_by=["attributes.start_time DESC"],
    )
    for run in runs:
        if (
            run.info.run_name == config.name
            and run.info.status != "FINISHED"
            and not _params_differ(run, params)
            and (nested_under is None or run.data.tags.get(PARENT_TAG) == nested_under)
        ):
            return run
    raise ValueError(
        f"--resume found no unfinished parent run named {config.name!r} with identical params in this experiment; "
        "pass --parent-run-id, or start a new run without --resume"
    )


def _describe(run: Run) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.info.start_time / 1000))
    return f"{run.info.run_id} ({run.info.run_name}, status {run.info.status}, started {started})"


def _check_same_data(run: Run, fingerprint: str, folds_sha: str) -> None:
    """Folds of one parent must come from one data set and one split, or the OOF score is meaningless."""
    tags = run.data.tags
    if tags.get("data_fingerprint") not in (None, fingerprint):
        raise ValueError(
            f"parent run {run.info.run_id} was trained on data {tags['data_fingerprint'][:12]}, but --raw-dir "
            f"now holds data {fingerprint[:12]}; use the same data or start a new run"
        )
    if tags.get("folds_file_sha256") not in (None, folds_sha):
        raise ValueError(
            f"parent run {run.info.run_id} used another folds file (sha256 {tags['folds_file_sha256'][:12]}, "
            f"now {folds_sha[:12]}); restore experiments/folds from the run's folds/ artifact or start a new run"
        )


def _create_parent(
    client: MlflowClient,
    experiment_id: str,
    config: TrainConfig,
    tags: Mapping[str, str],
    folds_file: Path,
    work: Path,
) -> Run:
    run = client.create_run(experiment_id, run_name=config.name, tags=resolve_tags(dict(tags)))
    run_id = run.info.run_id
    client.log_batch(run_id, params=[Param(k, v) for k, v in _param_strings(config).items()])
    config_path = work / "config.yaml"
    atomic_write_text(config_path, config_to_yaml(config))
    client.log_artifact(run_id, str(config_path))
    client.log_artifact(run_id, str(folds_file), "folds")
    return run


# ------------------------------------------------------------------------------------- fold runs


class _EpochLogger(keras.callbacks.Callback):
    """Logs each epoch's metrics to the fold's run (step = epoch number from 1) and calls the listener."""

    def __init__(
        self, client: MlflowClient, run_id: str, fold: int, listener: CVListener | None, state: _StopState
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
        values["epoch_seconds"] = time.monotonic() - self._started
        now = int(time.time() * 1000)
        self._client.log_batch(self._run_id, metrics=[Metric(k, v, now, epoch + 1) for k, v in values.items()])
        if self._listener is not None:
            try:
                self._listener.on_epoch_end(self._fold, epoch, values)
            except BaseException as err:
                self._state.listener_error = err
                raise


def _model_summary(config: TrainConfig) -> str:
    lines: list[str] = []
    build_model_from_config(config).summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    return "\n".join(lines) + "\n"


def _log_fold(
    client: MlflowClient, run_id: str, parent_id: str, data: PreparedData, result: training.FoldResult, summary: str
) -> None:
    """The fold's artifacts (weights, OOF, facts) on its run; its learning curve on the parent."""
    k = result.fold
    work = result.weights_path.parent
    client.log_batch(
        run_id,
        metrics=[Metric("val_score", result.val_score, int(time.time() * 1000), 0)],
    )
    client.log_artifact(run_id, str(result.weights_path), "weights")
    client.log_text(run_id, summary, "model_summary.txt")
    oof_path = work / f"oof_fold_{k}.npz"
    arrays = {"ids": data.ids[result.val_index], "probs": result.oof_probs}
    if result.oof_presence is not None:
        arrays["presence"] = result.oof_presence
    atomic_save_npz(oof_path, **arrays)
    client.log_artifact(run_id, str(oof_path), "oof")
    facts = {
        "fold": k,
        "kept_epoch": result.kept_epoch,
        "checkpoint": result.checkpoint,
        "val_score": result.val_score,
        "norm_mean": result.norm_mean,
        "norm_std": result.norm_std,
        "val_ids": data.ids[result.val_index].tolist(),
        "history": result.history,
    }
    client.log_text(run_id, json.dumps(facts, indent=1) + "\n", f"fold_{k}.json")
    curve = plot_learning_curves(
        result.history, work / f"learning_curve_fold_{k}.png", best_epoch=result.kept_epoch, title=f"fold {k}"
    )
    client.log_artifact(parent_id, str(curve), "plots")


def _load_fold(
    client: MlflowClient, run: Run, data: PreparedData, folds: np.ndarray, work: Path
) -> training.FoldResult:
    """A FoldResult rebuilt from a finished fold run's artifacts (trained by another call or process)."""
    k = int(run.data.tags["fold"])
    run_id = run.info.run_id
    dst = work / f"fold_{k}_{run_id}"
    try:
        oof_local = client.download_artifacts(run_id, f"oof/oof_fold_{k}.npz", str(dst))
        facts_local = client.download_artifacts(run_id, f"fold_{k}.json", str(dst))
    except (MlflowException, OSError) as err:
        raise ValueError(f"fold run {run_id} (fold {k}) lacks its OOF artifacts ({err}); retrain that fold") from err
    facts = json.loads(Path(facts_local).read_text())
    with np.load(oof_local) as saved:
        ids, probs = saved["ids"].astype(str), saved["probs"]
        presence = saved["presence"] if "presence" in saved.files else None
    expected = np.flatnonzero(folds == k)
    if not np.array_equal(ids, data.ids[expected]):
        raise ValueError(
            f"fold run {run_id} (fold {k}) validated other images than fold {k} of the current folds file; "
            "the data or the split changed, start a new run"
        )
    return training.FoldResult(
        fold=k,
        val_index=expected,
        oof_probs=probs,
        oof_presence=presence,
        history={key: list(values) for key, values in facts["history"].items()},
        kept_epoch=int(facts["kept_epoch"]),
        checkpoint=facts["checkpoint"],
        weights_path=Path(f"runs:/{run_id}/weights/fold_{k}.weights.h5"),
        val_score=float(facts["val_score"]),
        norm_mean=float(facts["norm_mean"]),
        norm_std=float(facts["norm_std"]),
    )


# ------------------------------------------------------------------------------------- finalising


def _gallery(data: PreparedData, oof: np.ndarray, raw_dir: Path, path: Path, title: str) -> Path:
    """Best and worst OOF images at full resolution, outlined, with their Dice at threshold 0.5."""
    scores = training.full_resolution_dice(data, np.arange(len(data)), oof)
    best, worst = pick_best_worst(scores, data.has_mask, GALLERY_IMAGES)
    chosen = np.concatenate([best, worst])
    labels = ["best"] * len(best) + ["worst"] * len(worst)
    index = index_train(raw_dir)
    paths = dict(zip(index["id"], index["image_path"], strict=True))
    images = np.stack([read_image(paths[i]) for i in data.ids[chosen]])
    return plot_gallery(
        images,
        data.full_masks(chosen),
        to_full_resolution(oof[chosen]) > 0.5,
        [f"{label}: {i}  Dice {scores[j]:.3f}" for label, i, j in zip(labels, data.ids[chosen], chosen, strict=True)],
        path,
        suptitle=title,
    )


@dataclass
class _CV:
    """What one ``run_cv`` call works with, so that its steps take one argument instead of ten."""

    client: MlflowClient
    experiment_id: str
    config: TrainConfig
    data: PreparedData
    folds: np.ndarray
    folds_file: Path
    raw_dir: Path
    work: Path
    env_tags: dict[str, str]
    listener: CVListener | None
    progress: bool
    state: _StopState = field(default_factory=_StopState)


def _finalise(cv: _CV, run_id: str, results: list[training.FoldResult]) -> tuple[CVSummary, dict[str, Any]]:
    """Summary metrics and artifacts of a complete cross-validation, then the parent is FINISHED."""
    client, config, data = cv.client, cv.config, cv.data
    summary, oof = summarize_cv(data, cv.folds, results)
    presence = None
    if all(r.oof_presence is not None for r in results):
        presence = np.empty(len(data), dtype=np.float32)
        for r in results:
            presence[r.val_index] = r.oof_presence
    postprocessing = decide_postprocessing(oof, data.full_masks, presence, progress=cv.progress)

    now = int(time.time() * 1000)
    metrics = {
        "cv_score_mean": summary.cv_score_mean,
        "cv_score_std": summary.cv_score_std,
        "oof_score": summary.oof_score,
        "empty_baseline_score": summary.empty_baseline_score,
        "oof_score_postprocessed_insample": float(postprocessing["oof_score"]),  # decided and scored on one set
        **interval_metrics(summary),  # honest oof_score_postprocessed (cross-fitted), cv_score_ci_low/high...
        **{f"fold_{k}_score": score for k, score in summary.fold_scores.items()},
    }
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
    client.set_tag(run_id, "checkpoint", summary.checkpoint)
    client.set_tag(run_id, "cv_optimistic", str(summary.optimistic).lower())

    oof_path = cv.work / "oof_probs.npz"
    arrays = {"ids": data.ids, "probs": oof}
    if presence is not None:
        arrays["presence"] = presence
    atomic_save_npz(oof_path, **arrays)
    client.log_artifact(run_id, str(oof_path), "oof")
    facts = {
        **dataclasses.asdict(summary),
        "fold_scores": {str(k): v for k, v in summary.fold_scores.items()},
        "config_name": config.name,
        "n_folds": config.folds,
        "n_images": len(data),
        "data_fingerprint": data.fingerprint,
        "folds_file": cv.folds_file.name,
        "table": format_summary_table(summary),
    }
    client.log_text(run_id, json.dumps(facts, indent=1) + "\n", "summary.json")
    client.log_text(run_id, json.dumps(postprocessing, indent=1, default=_json_default) + "\n", "postprocessing.json")
    gallery = _gallery(data, oof, cv.raw_dir, cv.work / "gallery.png", f"{config.name}: out-of-fold predictions")
    client.log_artifact(run_id, str(gallery), "plots")
    client.set_terminated(run_id, "FINISHED")
    return summary, postprocessing


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _stop_runs(client: MlflowClient, run_ids: list[str], err: BaseException, state: _StopState) -> None:
    """Mark runs KILLED (interrupt or a listener's exception) or FAILED; never hides ``err``."""
    stopped = isinstance(err, KeyboardInterrupt) or err is state.listener_error
    status = "KILLED" if stopped else "FAILED"
    tag = (STOPPED_TAG, type(err).__name__) if stopped else (ERROR_TAG, f"{type(err).__name__}: {err}"[:500])
    for run_id in run_ids:
        try:
            if client.get_run(run_id).info.status == "FINISHED":
                continue
            client.set_tag(run_id, *tag)
            client.set_terminated(run_id, status)
        except Exception as log_err:  # the store may be what failed; the original error matters more
            _say(f"warning: could not mark run {run_id} {status}: {log_err}")


# ------------------------------------------------------------------------------------------ run_cv


def _choose_parent(
    client: MlflowClient,
    experiment_id: str,
    config: TrainConfig,
    requested: list[int],
    parent_run_id: str | None,
    resume: bool,
    nested_under: str | None,
) -> tuple[Run | None, list[int]]:
    """The parent to continue (None: a new one) and the requested folds it still lacks; no data read yet."""
    params = _param_strings(config)
    if parent_run_id is not None:
        parent = _existing_parent(client, parent_run_id, config, params)
    elif resume:
        parent = _resumable_parent(client, experiment_id, config, params, nested_under)
    else:
        return None, requested
    finished = _finished_folds(client, parent)
    already = [k for k in requested if k in finished]
    if already and not resume:
        raise ValueError(
            f"fold(s) {already} of parent run {parent.info.run_id} already FINISHED and are never retrained; "
            "pass --resume to train only the missing folds"
        )
    _say(f"{'resuming' if resume else 'joining'} parent run {_describe(parent)}, finished folds {sorted(finished)}")
    return parent, [k for k in requested if k not in finished]


def _open_parent(
    cv: _CV,
    parent: Run | None,
    *,
    experiment_name: str,
    nested_under: str | None,
    parent_tags: Mapping[str, str] | None,
    one_fold: bool,
) -> Run:
    """Create the parent run, or check that the data matches the one being joined and set it RUNNING."""
    client, data = cv.client, cv.data
    folds_sha = sha256_file(cv.folds_file)
    if parent is None:
        tags = {
            RUN_TYPE_TAG: "cv",
            "data_fingerprint": data.fingerprint,
            "folds_file_sha256": folds_sha,
            "seed": str(cv.config.seed),
            **cv.env_tags,
            **({PARENT_TAG: nested_under} if nested_under else {}),
            **(parent_tags or {}),
        }
        parent = _create_parent(client, cv.experiment_id, cv.config, tags, cv.folds_file, cv.work)
        run_id = parent.info.run_id
        _say(f"MLflow parent run {run_id} ({cv.config.name}) in experiment {experiment_name!r}")
        if one_fold:
            _say(f"train the other folds with: --fold <k> --parent-run-id {run_id}")
        return parent
    run_id = parent.info.run_id
    _check_same_data(parent, data.fingerprint, folds_sha)
    started_at, here = parent.data.tags.get("git_commit", ""), cv.env_tags["git_commit"]
    if started_at and started_at != here:
        _say(f"warning: parent run {run_id} was started at commit {started_at[:10]}, this process runs {here[:10]}")
    if parent.info.status != "RUNNING":
        client.update_run(run_id, status="RUNNING")
    return parent


def _train_fold_run(cv: _CV, parent_id: str, fold: int, position: str, summary_text: str) -> training.FoldResult:
    """One fold as a child run: FINISHED with its artifacts, or KILLED/FAILED and re-raised."""
    client = cv.client
    tags = {RUN_TYPE_TAG: "fold", "fold": str(fold), PARENT_TAG: parent_id, **cv.env_tags}
    run_id = client.create_run(cv.experiment_id, run_name=f"fold_{fold}", tags=resolve_tags(tags)).info.run_id
    try:
        n_val = int(np.count_nonzero(cv.folds == fold))
        _say(
            f"fold {fold} ({position}; {cv.config.folds} folds in all): "
            f"{len(cv.data) - n_val} training / {n_val} validation images, run {run_id}"
        )
        result = training.train_fold(
            cv.config,
            cv.data,
            cv.folds,
            fold,
            cv.work,
            callbacks=[_EpochLogger(client, run_id, fold, cv.listener, cv.state)],
            verbose=2 if cv.progress else 0,
        )
        _log_fold(client, run_id, parent_id, cv.data, result, summary_text)
        client.set_terminated(run_id, "FINISHED")
    except BaseException as err:
        _stop_runs(client, [run_id], err, cv.state)
        raise
    _say(f"fold {fold}: val_score {result.val_score:.4f} (kept epoch {result.kept_epoch}: {result.checkpoint})")
    return result


def _complete(
    cv: _CV, parent: Run, results: dict[int, training.FoldResult]
) -> tuple[CVSummary | None, dict[str, Any] | None]:
    """Finalise the parent when all its folds are FINISHED (here or elsewhere); otherwise say what is missing."""
    parent_id, n_folds = parent.info.run_id, cv.config.folds
    finished = _finished_folds(cv.client, parent)
    missing = [k for k in range(n_folds) if k not in finished]
    if missing:
        _say(
            f"parent run {parent_id}: {n_folds - len(missing)}/{n_folds} folds finished, missing {missing}; "
            f"train them with --fold <k> --parent-run-id {parent_id} (the last one to finish finalises the run)"
        )
        return None, None
    if cv.client.get_run(parent_id).info.status == "FINISHED":
        _say(f"parent run {parent_id} was already finalised by another process")
        return None, None
    all_results = [
        results[k] if k in results else _load_fold(cv.client, finished[k], cv.data, cv.folds, cv.work)
        for k in range(n_folds)
    ]
    return _finalise(cv, parent_id, all_results)


def run_cv(
    config: TrainConfig,
    *,
    raw_dir: Path = RAW_DIR,
    cache_dir: Path = PROCESSED_DIR,
    folds_dir: Path = FOLDS_DIR,
    fold: int | None = None,
    parent_run_id: str | None = None,
    resume: bool = False,
    listener: CVListener | None = None,
    parent_tags: Mapping[str, str] | None = None,
    nested_under: str | None = None,
    work_dir: Path | None = None,
    progress: bool = True,
    settings: MlflowSettings | None = None,
) -> CVRunResult:
    """Train the cross-validation ``config`` (all folds, or only ``fold``) as MLflow runs.

    ``parent_run_id`` joins an unfinished parent run (same params, data and folds file); ``resume``
    skips folds whose run FINISHED and, without ``parent_run_id``, picks the newest unfinished parent
    of this config. ``nested_under`` makes the parent a child of that run (tune's study run);
    ``parent_tags`` are added to a new parent. ``work_dir`` keeps the local weights and OOF files
    (a temporary folder otherwise). The tracking store is checked before any data is read.
    Exceptions propagate after the runs are marked KILLED (interrupt, listener) or FAILED.
    """
    if fold is not None and not 0 <= fold < config.folds:
        raise ValueError(f"fold={fold} is out of range; this config has folds 0..{config.folds - 1}")
    settings = settings or load_mlflow_settings()
    experiment_id = setup_mlflow(settings)
    client = MlflowClient(settings.tracking_uri)
    if nested_under is not None:
        try:
            client.get_run(nested_under)
        except MlflowException as err:
            raise ValueError(f"nested_under={nested_under!r} is not a run in the tracking store") from err
    requested = [fold] if fold is not None else list(range(config.folds))
    parent, to_train = _choose_parent(client, experiment_id, config, requested, parent_run_id, resume, nested_under)
    if parent is not None:
        experiment_id = parent.info.experiment_id  # a parent named by id may live in another experiment

    data = prepare_train(raw_dir, cache_dir, config.height, config.width, progress=progress)
    folds, folds_file = load_or_create_folds(data, config.folds, config.seed, folds_dir)
    with contextlib.ExitStack() as stack:
        work = Path(work_dir) if work_dir is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=True)
        cv = _CV(
            client=client,
            experiment_id=experiment_id,
            config=config,
            data=data,
            folds=folds,
            folds_file=folds_file,
            raw_dir=Path(raw_dir),
            work=work,
            env_tags=environment_tags(),
            listener=listener,
            progress=progress,
        )
        parent = _open_parent(
            cv,
            parent,
            experiment_name=settings.experiment_name,
            nested_under=nested_under,
            parent_tags=parent_tags,
            one_fold=fold is not None,
        )
        parent_id = parent.info.run_id
        results: dict[int, training.FoldResult] = {}
        try:
            summary_text = _model_summary(config) if to_train else ""
            for position, k in enumerate(to_train, 1):
                results[k] = _train_fold_run(cv, parent_id, k, f"{position}/{len(to_train)}", summary_text)
                if listener is not None:
                    try:
                        listener.on_fold_end(k, results[k].val_score)
                    except BaseException as err:
                        cv.state.listener_error = err
                        raise
            summary, postprocessing = _complete(cv, parent, results)
        except BaseException as err:
            _stop_runs(client, [parent_id], err, cv.state)
            raise
    return CVRunResult(parent_id, summary, postprocessing, experiment_id, list(results))


__all__ = ["CVListener", "CVRunResult", "run_cv"]
