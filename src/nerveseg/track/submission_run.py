"""From tracked cross-validation runs to a Kaggle submission, recorded back in MLflow.

Choose the runs (one given id, several ids to ensemble, or the best finished CV run of the
experiment by ``cv_score_mean``), download each fold's weights and the run's ``config.yaml``,
reuse the run's ``postprocessing.json`` (or decide it from the run's out-of-fold predictions),
predict the test set with every fold model and its mirror image, post-process at 580x420, write
``submissions/<UTC time>_<run name>.csv``, prove it, and log it as a child run "submission" of
the CV run. The array work is in the core modules (inference, postprocess, submission); this
module only talks to MLflow and wires them together.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.entities import Metric, Param, Run, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from nerveseg.config import TrainConfig, load_config
from nerveseg.data.synthetic import read_test_subjects
from nerveseg.evaluate.metrics import to_full_resolution
from nerveseg.evaluate.postprocess import check_settings
from nerveseg.evaluate.uncertainty import Interval, interval_for_ids
from nerveseg.paths import PROCESSED_DIR, RAW_DIR, SUBMISSIONS_DIR
from nerveseg.track.store import (
    RUN_TYPE_TAG,
    check_tracking_server,
    download_artifacts,
    find_runs,
    get_client,
    load_mlflow_settings,
)

POSTPROCESSING_ARTIFACT = "postprocessing.json"
CONFIG_ARTIFACT = "config.yaml"
OOF_ARTIFACT = "oof/oof_probs.npz"
SUBMISSION_RUN_NAME = "submission"


@dataclass
class RunModels:
    """One CV run resolved to local files: its config and one weights file per fold."""

    run_id: str
    name: str
    experiment_id: str
    config: TrainConfig
    weights_paths: list[Path]
    tags: dict[str, str]
    cv_score_mean: float | None


@dataclass
class SubmissionResult:
    """What ``make_submission`` produced; ``seconds`` splits the wall time by stage."""

    csv_path: Path
    run_ids: list[str]
    submission_run_id: str
    n_images: int
    empty_share: float
    postprocessing: dict[str, Any]
    postprocessing_source: str  # "run" (reused), "decided" (logged on the run) or "decided_ensemble"
    test_score: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    test_interval: Interval | None = None  # bootstrap 95 % interval of test_score (by subject when known)


# ----------------------------------------------------------------------------------- choosing runs


def _get_run(client: MlflowClient, run_id: str) -> Run:
    try:
        return client.get_run(run_id)
    except MlflowException as err:
        raise ValueError(
            f"unknown MLflow run id {run_id!r} at this tracking store; list runs with `mlflow runs list` "
            "or pick one in the MLflow UI (the parent cross-validation run)"
        ) from err


def best_cv_run(experiment_name: str | None = None, *, tracking_uri: str | None = None) -> tuple[str, str, float]:
    """(run id, name, cv_score_mean) of the best FINISHED cross-validation run of the experiment."""
    settings = load_mlflow_settings()
    name = experiment_name or settings.experiment_name
    runs = find_runs(name, run_type="cv", status="FINISHED", tracking_uri=tracking_uri)
    column = "metrics.cv_score_mean"
    if column in runs:
        runs = runs[runs[column].notna()]
    if runs.empty or column not in runs:
        raise ValueError(
            f"no finished cross-validation run with cv_score_mean in MLflow experiment {name!r}; "
            "train one with `python src/cv_train.py` or pass --run-id"
        )
    best = runs.loc[runs[column].idxmax()]
    return str(best["run_id"]), str(best.get("tags.mlflow.runName") or best["run_id"]), float(best[column])


def _fold_runs(client: MlflowClient, parent: Run) -> dict[int, Run]:
    """The newest FINISHED child run per fold (a resumed CV can have failed attempts beside it)."""
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
        max_results=1000,
        order_by=["attributes.start_time DESC"],
    )
    folds: dict[int, Run] = {}
    for child in children:
        if child.data.tags.get(RUN_TYPE_TAG) != "fold" or child.info.status != "FINISHED":
            continue
        try:
            fold = int(child.data.tags.get("fold", child.data.params.get("fold", "")))
        except ValueError:
            continue
        folds.setdefault(fold, child)
    return folds


def resolve_run(client: MlflowClient, run_id: str, workdir: Path, tracking_uri: str) -> RunModels:
    """Download ``config.yaml`` and every fold's weights of CV run ``run_id`` into ``workdir``."""
    run = _get_run(client, run_id)
    run_type = run.data.tags.get(RUN_TYPE_TAG)
    name = run.data.tags.get("mlflow.runName") or run.info.run_name or run_id
    if run_type == "fold":
        parent = run.data.tags.get("mlflow.parentRunId", "?")
        raise ValueError(f"run {run_id} ({name}) is one fold's run; pass its cross-validation parent {parent}")
    if run_type != "cv":
        raise ValueError(
            f"run {run_id} ({name}) has {RUN_TYPE_TAG}={run_type!r}; expected a cross-validation run ('cv')"
        )
    if run.info.status != "FINISHED":
        print(f"warning: run {run_id} ({name}) is {run.info.status}, not FINISHED", file=sys.stderr)
    local = workdir / run_id
    try:
        config_path = download_artifacts(run_id, CONFIG_ARTIFACT, local, tracking_uri=tracking_uri)
    except ValueError as err:
        raise ValueError(f"run {run_id} ({name}) has no {CONFIG_ARTIFACT} artifact; is it a CV parent run?") from err
    config = load_config(config_path).replace(name=name)
    folds = _fold_runs(client, run)
    missing = [k for k in range(config.folds) if k not in folds]
    if missing:
        raise ValueError(
            f"run {run_id} ({name}) has no finished fold run for folds {missing} of {config.folds}, so no weights "
            "for them; finish the cross-validation (python src/cv_train.py --resume) or pick another run"
        )
    weights = []
    for k in range(config.folds):
        artifact = f"weights/fold_{k}.weights.h5"
        try:
            weights.append(
                download_artifacts(folds[k].info.run_id, artifact, local / f"fold_{k}", tracking_uri=tracking_uri)
            )
        except ValueError as err:
            raise ValueError(
                f"run {run_id} ({name}) has no weights for fold {k} (artifact {artifact} of fold run "
                f"{folds[k].info.run_id}); retrain that fold or pick another run"
            ) from err
    score = run.data.metrics.get("cv_score_mean")
    return RunModels(run_id, name, run.info.experiment_id, config, weights, dict(run.data.tags), score)


# ---------------------------------------------------------------------------------- post-processing


def _load_oof(run: RunModels, workdir: Path, tracking_uri: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    try:
        path = download_artifacts(run.run_id, OOF_ARTIFACT, workdir / run.run_id / "oof", tracking_uri=tracking_uri)
    except ValueError as err:
        raise ValueError(
            f"run {run.run_id} ({run.name}) has neither {POSTPROCESSING_ARTIFACT} nor {OOF_ARTIFACT}; "
            "post-processing cannot be decided without out-of-fold predictions"
        ) from err
    with np.load(path, allow_pickle=False) as npz:
        ids = npz["ids"].astype(str)
        probs = npz["probs"].astype(np.float32)
        presence = npz["presence"] if "presence" in npz.files else None
    if probs.ndim == 4:
        probs = probs[..., 0]
    if presence is not None and (presence.size == 0 or presence.dtype.kind not in "fiu"):
        presence = None
    return ids, probs, None if presence is None else presence.reshape(-1).astype(np.float32)


def _resize_to(probs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return probs if probs.shape[1:] == shape else to_full_resolution(probs, height=shape[0], width=shape[1])


def decide_for_runs(
    runs: list[RunModels],
    workdir: Path,
    tracking_uri: str,
    *,
    raw_dir: Path,
    cache_dir: Path,
    progress: bool,
) -> dict[str, Any]:
    """Post-processing decided on the (mean) OOF probabilities of ``runs`` against the training masks."""
    from nerveseg.data.cache import prepare_train
    from nerveseg.evaluate.postprocess import decide_postprocessing

    fingerprints = {r.tags["data_fingerprint"] for r in runs if r.tags.get("data_fingerprint")}
    if len(fingerprints) > 1:
        raise ValueError(
            "the runs were trained on different data (data_fingerprint tags "
            + ", ".join(f"{r.name}={str(r.tags.get('data_fingerprint'))[:12]}" for r in runs)
            + "); their out-of-fold predictions cannot be averaged, ensemble runs of one data set"
        )
    oofs = [_load_oof(r, workdir, tracking_uri) for r in runs]
    ids = oofs[0][0]
    for run, (other_ids, _, _) in zip(runs[1:], oofs[1:], strict=True):
        if not np.array_equal(np.sort(other_ids), np.sort(ids)):
            raise ValueError(
                f"out-of-fold ids of run {run.run_id} ({run.name}) differ from those of {runs[0].run_id}; "
                "ensemble runs that cover the same training images"
            )
    shape = (runs[0].config.height, runs[0].config.width)
    order = np.argsort(ids)
    probs_sum = np.zeros((len(ids), *shape), np.float32)
    presences = []
    for other_ids, probs, presence in oofs:
        position = np.argsort(other_ids)  # align each run's rows to the first run's sorted ids
        probs_sum[order] += _resize_to(probs[position], shape)
        if presence is not None:
            aligned = np.empty_like(presence)
            aligned[order] = presence[position]
            presences.append(aligned)
    probs = probs_sum / len(oofs)
    presence = np.mean(presences, axis=0) if len(presences) == len(oofs) else None

    data = prepare_train(raw_dir, cache_dir, shape[0], shape[1], progress=progress)
    expected = next(iter(fingerprints), None)
    if expected is not None and data.fingerprint != expected:
        raise ValueError(
            f"the training data in {raw_dir} (fingerprint {data.fingerprint[:12]}) is not the data run "
            f"{runs[0].run_id} was trained on ({str(expected)[:12]}); point --raw-dir at that data"
        )
    index_of = {image_id: k for k, image_id in enumerate(data.ids.astype(str).tolist())}
    missing = [i for i in ids.tolist() if i not in index_of]
    if missing:
        raise ValueError(
            f"{len(missing)} out-of-fold ids are not in the training data at {raw_dir}, e.g. {missing[:5]}"
        )
    rows = np.array([index_of[i] for i in ids.tolist()])
    return decide_postprocessing(probs, lambda index: data.full_masks(rows[index]), presence, progress=progress)


def _postprocessing(
    client: MlflowClient,
    runs: list[RunModels],
    workdir: Path,
    tracking_uri: str,
    *,
    raw_dir: Path,
    cache_dir: Path,
    progress: bool,
) -> tuple[dict[str, Any], str]:
    """The settings and where they came from: a single run's stored ``postprocessing.json`` ("run"), or
    decided now on the OOF predictions ("decided", then stored on that run; "decided_ensemble")."""
    if len(runs) == 1:
        run = runs[0]
        try:
            path = download_artifacts(
                run.run_id, POSTPROCESSING_ARTIFACT, workdir / run.run_id, tracking_uri=tracking_uri
            )
        except ValueError:
            path = None  # not decided yet (an older or interrupted run): decide now and store it on the run
        if path is not None:
            try:
                settings = json.loads(Path(path).read_text())
                check_settings(settings)
            except ValueError as err:  # JSONDecodeError is a ValueError
                raise ValueError(
                    f"{POSTPROCESSING_ARTIFACT} of run {run.run_id} ({run.name}) is not usable: {err}"
                ) from err
            return settings, "run"
    settings = decide_for_runs(runs, workdir, tracking_uri, raw_dir=raw_dir, cache_dir=cache_dir, progress=progress)
    if len(runs) > 1:
        return settings, "decided_ensemble"
    client.log_dict(runs[0].run_id, settings, POSTPROCESSING_ARTIFACT)
    return settings, "decided"


# ------------------------------------------------------------------------------------------ submit


def submission_path(out_dir: Path, run_name: str, now: datetime | None = None) -> Path:
    """``out_dir/<UTC YYYYmmddTHHMMSSZ>_<run name>.csv`` with the name made file-safe."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    safe = re.sub(r"[^A-Za-z0-9._+-]+", "_", run_name).strip("._") or "run"
    return Path(out_dir) / f"{stamp}_{safe[:80]}.csv"


def _log_submission_run(
    client: MlflowClient,
    parent: RunModels,
    runs: list[RunModels],
    *,
    tta: bool,
    batch_size: int,
    settings: dict[str, Any],
    source: str,
    csv_path: Path,
    stats: Any,
    test_fingerprint: str,
    test_score: float | None,
    seconds: dict[str, float],
    test_interval: Interval | None = None,
) -> str:
    """A FINISHED child run "submission" under the (first) CV run with params, metrics and the CSV."""
    from nerveseg.io_utils import sha256_file

    run = client.create_run(
        parent.experiment_id,
        run_name=SUBMISSION_RUN_NAME,
        tags={
            "mlflow.parentRunId": parent.run_id,
            RUN_TYPE_TAG: "submission",
            "test_data_fingerprint": test_fingerprint,
            "submission_sha256": sha256_file(csv_path),
            "submission_file": csv_path.name,
            "postprocessing_source": source,
        },
    )
    run_id = run.info.run_id
    try:
        params = {
            "run_ids": ",".join(r.run_id for r in runs),
            "run_names": ",".join(r.name for r in runs),
            "n_models": sum(len(r.weights_paths) for r in runs),
            "tta": tta,
            "batch_size": batch_size,
            "threshold": settings["threshold"],
            "largest_component": settings["largest_component"],
            "min_area": settings["min_area"],
            "presence_threshold": settings["presence_threshold"],
        }
        metrics = {
            "n_test_images": stats.n_images,
            "predicted_empty_share": stats.empty_share,
            **{f"seconds_{k}": v for k, v in seconds.items()},
        }
        for key in ("oof_score", "oof_score_raw"):
            if isinstance(settings.get(key), int | float):
                metrics[f"postprocessing_{key}"] = float(settings[key])
        if test_score is not None:
            metrics["test_score"] = test_score
        if test_interval is not None:
            metrics.update(test_score_ci_low=test_interval.low, test_score_ci_high=test_interval.high)
            metrics["test_score_ci_groups"] = test_interval.n_groups
        now = int(time.time() * 1000)
        client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
            params=[Param(k, str(v)[:6000]) for k, v in params.items()],
        )
        client.log_artifact(run_id, str(csv_path), "submission")
        client.log_dict(run_id, settings, POSTPROCESSING_ARTIFACT)
    except BaseException:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


def make_submission(
    *,
    run_id: str | None = None,
    run_ids: list[str] | None = None,
    tta: bool = True,
    raw_dir: Path = RAW_DIR,
    out_dir: Path = SUBMISSIONS_DIR,
    cache_dir: Path = PROCESSED_DIR,
    batch_size: int = 256,
    test_masks_dir: Path | None = None,
    progress: bool = True,
) -> SubmissionResult:
    """Predict ``raw_dir/test`` with the chosen CV run(s), write and validate a new CSV, log it in MLflow.

    ``run_id`` picks one run, ``run_ids`` ensembles several (equal weight per run), neither picks the
    best finished CV run of the experiment by ``cv_score_mean``. ``test_masks_dir`` (``<id>_mask.tif``,
    e.g. synthetic data) adds a local ``test_score``. Bad input raises ``ValueError`` naming it.
    """
    from nerveseg.data.cache import prepare_test
    from nerveseg.submit.predict import load_fold_models, predict_ensemble
    from nerveseg.submit.submission_file import postprocess_and_write, score_submission

    if run_id is not None and run_ids:
        raise ValueError("pass either one run id (--run-id) or several (--runs), not both")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    raw_dir, out_dir, cache_dir = Path(raw_dir), Path(out_dir), Path(cache_dir)
    test_dir = raw_dir / "test"
    if not test_dir.is_dir():
        raise ValueError(f"test folder {test_dir} does not exist; put Kaggle's test/*.tif under --raw-dir {raw_dir}")
    if test_masks_dir is not None and not Path(test_masks_dir).is_dir():
        raise ValueError(f"test mask folder {test_masks_dir} does not exist")
    if run_ids is not None and len(set(run_ids)) != len(run_ids):
        raise ValueError(f"--runs lists a run twice: {run_ids}")

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    settings_ml = load_mlflow_settings()
    uri = settings_ml.tracking_uri
    check_tracking_server(uri)
    client = get_client(uri)
    if run_id is None and not run_ids:
        run_id, name, score = best_cv_run(settings_ml.experiment_name, tracking_uri=uri)
        print(f"best finished CV run: {name} ({run_id}), cv_score_mean {score:.4f}")
    chosen = [run_id] if run_id is not None else list(run_ids or [])

    with tempfile.TemporaryDirectory(prefix="nerveseg-submit-") as tmp:
        workdir = Path(tmp)
        runs = [resolve_run(client, rid, workdir, uri) for rid in chosen]
        name = runs[0].name if len(runs) == 1 else "ensemble_" + "+".join(r.name for r in runs)
        csv_path = submission_path(out_dir, name)  # named now: the time the submission was asked for
        if csv_path.exists():
            raise ValueError(f"submission {csv_path} already exists; wait a second and run again")
        settings, source = _postprocessing(
            client, runs, workdir, uri, raw_dir=raw_dir, cache_dir=cache_dir, progress=progress
        )
        seconds["resolve_runs"] = time.perf_counter() - started

        shapes = {(r.config.height, r.config.width) for r in runs}
        shape = (runs[0].config.height, runs[0].config.width)
        test_by_shape = {}
        mark = time.perf_counter()
        for height, width in shapes:
            test_by_shape[(height, width)] = prepare_test(raw_dir, cache_dir, height, width, progress=progress)
        test = test_by_shape[shape]
        seconds["prepare_test"] = time.perf_counter() - mark

        mark = time.perf_counter()
        probs = np.zeros((len(test), *shape), np.float32)
        presences = []
        for run in runs:
            models = load_fold_models(run.config, run.weights_paths)
            run_test = test_by_shape[(run.config.height, run.config.width)]
            run_probs, run_presence = predict_ensemble(
                models, run_test.images, tta=tta, batch_size=batch_size, progress=progress
            )
            probs += _resize_to(run_probs, shape)
            presences.append(run_presence)
            del models
        probs /= len(runs)
        presence = None if any(p is None for p in presences) else np.mean(presences, axis=0)
        seconds["predict"] = time.perf_counter() - mark

    stats = postprocess_and_write(test.ids, probs, settings, csv_path, presence)
    seconds.update(stats.seconds)
    test_score = test_interval = None
    if test_masks_dir is not None:
        test_score, per_image = score_submission(csv_path, test_masks_dir)
        test_interval = interval_for_ids(
            per_image["dice"].to_numpy(), per_image["img"].to_numpy(), read_test_subjects(Path(test_masks_dir))
        )
    seconds["total"] = time.perf_counter() - started
    submission_run_id = _log_submission_run(
        client,
        runs[0],
        runs,
        tta=tta,
        batch_size=batch_size,
        settings=settings,
        source=source,
        csv_path=csv_path,
        stats=stats,
        test_fingerprint=test.fingerprint,
        test_score=test_score,
        seconds=seconds,
        test_interval=test_interval,
    )
    return SubmissionResult(
        csv_path=csv_path,
        run_ids=[r.run_id for r in runs],
        submission_run_id=submission_run_id,
        n_images=stats.n_images,
        empty_share=stats.empty_share,
        postprocessing=settings,
        postprocessing_source=source,
        test_score=test_score,
        seconds=seconds,
        test_interval=test_interval,
    )
