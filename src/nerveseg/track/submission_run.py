"""From tracked cross-validation runs to a submission, recorded back in MLflow.

Choose the runs (one given id, several ids to ensemble, or the best finished CV run of one task by
its ranking metric), download each fold's weights and the run's ``config.yaml``, reuse the run's
``postprocessing.json`` (or let the task decide it on the run's out-of-fold predictions), let the
runs' task predict the test data with every fold model (with TTA) and write its file (nerve: the
Kaggle CSV; isbi2012: the float32 TIFF stack) as ``submissions/<UTC time>_<run name><suffix>``,
never overwritten, and log it as a child run "submission" of the CV run. The array work is in the
tasks and core modules; this module only talks to MLflow and wires them together.
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient

from nerveseg.data.synthetic import read_test_subjects
from nerveseg.errors import NervesegError
from nerveseg.evaluate.uncertainty import Interval, interval_for_ids
from nerveseg.io_utils import check_writable_dir, sha256_file
from nerveseg.paths import PROCESSED_DIR, RAW_DIR, SUBMISSIONS_DIR
from nerveseg.tasks import get_task
from nerveseg.tasks.base import Decision, SubmissionFile, Task, TrainedModels
from nerveseg.track import schema
from nerveseg.track.registry import run_of_model
from nerveseg.track.run_models import RunModels, best_cv_run, get_run, resolve_run
from nerveseg.track.run_postprocessing import Sources, decide_for_runs, postprocessing_for_runs
from nerveseg.track.schema import (
    PARENT_TAG,
    POSTPROCESSING_ARTIFACT,
    RUN_TYPE_TAG,
    SUBMISSION_RUN,
)
from nerveseg.track.store import (
    check_store_to_read,
    get_client,
    load_mlflow_settings,
)

SUBMISSION_RUN_NAME = "submission"


@dataclass
class SubmissionResult:
    """What ``make_submission`` produced; ``seconds`` splits the wall time by stage.

    ``csv_path`` is the submission file of the runs' task (nerve: the RLE CSV; isbi2012: the TIFF stack).
    """

    csv_path: Path
    run_ids: list[str]
    submission_run_id: str
    n_images: int
    empty_share: float  # nerve: share of test images predicted empty; nan for tasks without that notion
    postprocessing: Decision
    postprocessing_source: str  # "run" (reused), "decided" (logged on the run) or "decided_ensemble"
    test_score: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    test_interval: Interval | None = None  # bootstrap 95 % interval of test_score (by subject when known)
    task: str = "nerve"
    cv_prediction: Interval | None = None  # the CV run's prediction interval for new subjects (one run only)


# ------------------------------------------------------------------------------------------ submit


def check_file_name(name: str) -> str:
    """``--name``: a plain file name (no folder part, not hidden, not empty); raises ``NervesegError``."""
    if not name or name in (".", "..") or Path(name).name != name or name.startswith(".") or "\x00" in name:
        raise NervesegError(
            f"--name {name!r} must be a plain file name (no folder part, not hidden); use --out-dir for the folder"
        )
    return name


def submission_path(
    out_dir: Path, run_name: str, now: datetime | None = None, suffix: str = ".csv", file_name: str | None = None
) -> Path:
    """``out_dir/<UTC YYYYmmddTHHMMSSZ>_<run name><suffix>`` with the name made file-safe, or
    ``out_dir/<file_name>`` (``suffix`` added unless it ends so) when the user picked the name."""
    if file_name is not None:
        name = check_file_name(file_name)
        return Path(out_dir) / (name if name.lower().endswith(suffix) else name + suffix)
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    safe = re.sub(r"[^A-Za-z0-9._+-]+", "_", run_name).strip("._") or "run"
    return Path(out_dir) / f"{stamp}_{safe[:80]}{suffix}"


@dataclass
class _Written:
    """What the submission run records: the runs used, how, and what came out."""

    runs: list[RunModels]
    tta: bool
    batch_size: int
    decision: Decision
    source: str
    file: SubmissionFile
    test_score: float | None
    seconds: dict[str, float]
    test_interval: Interval | None = None
    cv_prediction: Interval | None = None


def _submission_params(sub: _Written) -> dict[str, Any]:
    return {
        "run_ids": ",".join(r.run_id for r in sub.runs),
        "run_names": ",".join(r.name for r in sub.runs),
        schema.TASK_PARAM: sub.runs[0].config.task,
        "n_models": sum(len(r.weights_paths) for r in sub.runs),
        "tta": sub.tta,
        "batch_size": sub.batch_size,
        **sub.decision.params(),
    }


def _submission_metrics(sub: _Written) -> dict[str, float]:
    metrics = {
        "n_test_images": sub.file.n_images,
        **sub.file.metrics,
        **{f"seconds_{k}": v for k, v in sub.seconds.items()},
        **sub.decision.metrics(),
    }
    if sub.test_score is not None:
        metrics[schema.TEST_SCORE] = sub.test_score
    if sub.test_interval is not None:
        metrics[schema.TEST_SCORE_CI_LOW] = sub.test_interval.low
        metrics[schema.TEST_SCORE_CI_HIGH] = sub.test_interval.high
    if sub.test_score is not None and sub.cv_prediction is not None:
        metrics[schema.TEST_INSIDE_PI] = float(sub.cv_prediction.contains(sub.test_score))
    return {k: float(v) for k, v in metrics.items()}


def _log_submission_run(client: MlflowClient, sub: _Written) -> str:
    """A FINISHED child run "submission" under the (first) CV run with params, metrics and the file."""
    parent = sub.runs[0]
    path = sub.file.path
    tags = {
        PARENT_TAG: parent.run_id,
        RUN_TYPE_TAG: SUBMISSION_RUN,
        "test_data_fingerprint": sub.file.test_fingerprint,
        "submission_sha256": sha256_file(path),
        "submission_file": path.name,
        "postprocessing_source": sub.source,
    }
    run_id = client.create_run(parent.experiment_id, run_name=SUBMISSION_RUN_NAME, tags=tags).info.run_id
    try:
        now = int(time.time() * 1000)
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, 0) for k, v in _submission_metrics(sub).items()],
            params=[Param(k, str(v)[: schema.MAX_PARAM_LENGTH]) for k, v in _submission_params(sub).items()],
        )
        client.log_artifact(run_id, str(path), schema.SUBMISSION_DIR)
        client.log_dict(run_id, sub.decision.to_json(), POSTPROCESSING_ARTIFACT)
    except BaseException:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _check_inputs(run_id: str | None, run_ids: list[str] | None, batch_size: int, test_masks_dir: Path | None) -> None:
    """Every argument error before anything is downloaded or predicted."""
    if run_id is not None and run_ids:
        raise NervesegError("pass either one run id (--run-id) or several (--runs), not both")
    if batch_size < 1:
        raise NervesegError(f"batch_size={batch_size} must be >= 1")
    if test_masks_dir is not None and not Path(test_masks_dir).is_dir():
        raise NervesegError(f"test mask folder {test_masks_dir} does not exist")
    if run_ids is not None and len(set(run_ids)) != len(run_ids):
        raise NervesegError(f"--runs lists a run twice: {run_ids}")


def _runs_task(client: MlflowClient, run_ids: list[str], raw_dir: Path, test_masks_dir: Path | None) -> Task:
    """The one task of the runs (their ``task`` param; runs older than it are nerve runs), with its checks
    of the options and the test data, before anything is downloaded. A mix of tasks cannot be ensembled."""
    tasks = {run_id: get_run(client, run_id).data.params.get(schema.TASK_PARAM, "nerve") for run_id in run_ids}
    if len(set(tasks.values())) > 1:
        raise NervesegError(
            f"the runs belong to different tasks ({', '.join(f'{k}={v}' for k, v in tasks.items())}); "
            "ensemble runs of one task"
        )
    task = get_task(next(iter(tasks.values())))
    if test_masks_dir is not None and not task.supports_test_masks:
        raise NervesegError(f"--test-masks scores nerve CSVs only; task {task.name} has no local test score")
    task.check_test_data(raw_dir)
    return task


def tracking() -> tuple[MlflowClient, str, str]:
    """A client for the configured store, checked reachable in seconds (and existing); its URI and experiment."""
    settings = load_mlflow_settings()
    check_store_to_read(settings.tracking_uri)
    return get_client(settings.tracking_uri), settings.tracking_uri, settings.experiment_name


def chosen_runs(
    run_id: str | None, run_ids: list[str] | None, experiment_name: str, uri: str, task: str | None
) -> list[str]:
    if run_id is None and not run_ids:
        run_id, name, score = best_cv_run(experiment_name, tracking_uri=uri, task=task)
        chosen = get_task(task) if task else None
        metric = chosen.ranking_metric if chosen else "score"
        print(f"best finished CV run: {name} ({run_id}), {metric} {score:.4f}")
    return [run_id] if run_id is not None else list(run_ids or [])


def _views_for(runs: list[RunModels], tta: bool | None) -> bool:
    """The runs' own test-time views (their out-of-fold predictions used them) unless ``tta`` says otherwise."""
    trained_with = {r.config.tta for r in runs}
    chosen = all(trained_with) if tta is None else tta
    if trained_with != {chosen}:
        print(
            f"note: shipping {'with' if chosen else 'without'} test-time views, while some runs' post-processing was "
            "decided on out-of-fold predictions made otherwise (config tta)"
        )
    return chosen


def _submission_name(runs: list[RunModels]) -> str:
    """The file's name part: the run's name, or ``ensemble_<a>+<b>...`` for several runs."""
    return runs[0].name if len(runs) == 1 else "ensemble_" + "+".join(r.name for r in runs)


def make_submission(
    *,
    run_id: str | None = None,
    run_ids: list[str] | None = None,
    tta: bool | None = None,
    raw_dir: Path = RAW_DIR,
    out_dir: Path = SUBMISSIONS_DIR,
    cache_dir: Path = PROCESSED_DIR,
    batch_size: int = 256,
    test_masks_dir: Path | None = None,
    progress: bool = True,
    task: str | None = None,
    file_name: str | None = None,
    model: str | None = None,
) -> SubmissionResult:
    """Predict the test data with the chosen CV run(s), write and validate a new file, log it in MLflow.

    ``tta`` None uses the test-time views the runs' out-of-fold predictions were made with (config ``tta``).
    ``run_id`` picks one run, ``run_ids`` ensembles several (equal weight per run), neither picks the
    best finished CV run of ``task`` (None: the task of the newest finished CV run) by that task's
    ranking metric. The runs' task writes the file (nerve: ``<UTC time>_<run>.csv``; isbi2012: a float32
    TIFF stack ``.tif``); ``file_name`` replaces that name (the suffix is added). ``model``
    (``models:/nerveseg@champion``) picks the CV run a registered model was made of instead, so its
    submission is the run's. ``test_masks_dir`` (``<id>_mask.tif``, nerve only) adds a local ``test_score``.
    Bad input raises ``NervesegError`` naming it; the output and cache folders are checked writable first.
    """
    from nerveseg.submit.submission_file import check_new_submission

    raw_dir, out_dir, cache_dir = Path(raw_dir), Path(out_dir), Path(cache_dir)
    if model is not None and (run_id is not None or run_ids):
        raise NervesegError("pass either --model or --run-id/--runs, not both")
    _check_inputs(run_id, run_ids, batch_size, test_masks_dir)
    if file_name is not None:
        check_file_name(file_name)
    check_writable_dir(out_dir, "--out-dir")
    check_writable_dir(cache_dir, "--cache-dir")
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    client, uri, experiment_name = tracking()
    if model is not None:  # a registered model: submit from the CV run it was made of
        run_id = run_of_model(client, model)
    chosen = chosen_runs(run_id, run_ids, experiment_name, uri, task)
    the_task = _runs_task(client, chosen, raw_dir, test_masks_dir)
    with tempfile.TemporaryDirectory(prefix="nerveseg-submit-") as tmp:
        workdir = Path(tmp)
        runs = [resolve_run(client, rid, workdir, uri) for rid in chosen]
        path = check_new_submission(
            submission_path(out_dir, _submission_name(runs), suffix=the_task.submission_suffix, file_name=file_name)
        )
        sources = Sources(workdir, uri, raw_dir, cache_dir, progress)
        decision, source = postprocessing_for_runs(client, runs, sources)
        seconds["resolve_runs"] = time.perf_counter() - started
        models = [TrainedModels(r.config, r.weights_paths) for r in runs]
        tta = _views_for(runs, tta)
        written_file = the_task.write_submission(
            models, decision, path, raw_dir=raw_dir, cache_dir=cache_dir, tta=tta, batch_size=batch_size,
            progress=progress,
        )  # fmt: skip
    seconds.update(written_file.seconds)
    test_score, test_interval = None, None
    if test_masks_dir is not None:
        test_score, test_interval = _test_score(written_file.path, Path(test_masks_dir))
    seconds["total"] = time.perf_counter() - started
    prediction = cv_prediction_interval(get_run(client, chosen[0]).data.metrics) if len(chosen) == 1 else None
    written = _Written(
        runs, tta, batch_size, decision, source, written_file, test_score, seconds, test_interval, prediction
    )
    return _logged_result(client, written, the_task.name)


def _logged_result(client: MlflowClient, written: _Written, task: str) -> SubmissionResult:
    """Log the submission run and say what was written, from what and how."""
    return SubmissionResult(
        csv_path=written.file.path,
        run_ids=[r.run_id for r in written.runs],
        submission_run_id=_log_submission_run(client, written),
        n_images=written.file.n_images,
        empty_share=written.file.metrics.get("predicted_empty_share", float("nan")),
        postprocessing=written.decision,
        postprocessing_source=written.source,
        test_score=written.test_score,
        seconds=written.seconds,
        test_interval=written.test_interval,
        task=task,
        cv_prediction=written.cv_prediction,
    )


def cv_prediction_interval(metrics: dict[str, float]) -> Interval | None:
    """The CV run's logged prediction interval (``summarize_cv``) as an Interval, or None for runs without one."""
    keys = (
        schema.OOF_SCORE_POSTPROCESSED,
        schema.OOF_SCORE_POSTPROCESSED_PI_LOW,
        schema.OOF_SCORE_POSTPROCESSED_PI_HIGH,
    )
    if not all(key in metrics for key in keys) or schema.PI_SUBJECTS not in metrics:
        return None
    estimate, low, high = (metrics[key] for key in keys)
    return Interval(estimate, low, high, 0, "subject", new_groups=int(metrics[schema.PI_SUBJECTS]))


def prediction_check(test_score: float, test_interval: Interval | None, prediction: Interval) -> str:
    """One line: did the test score land in the CV's prediction interval (and was it made for this many subjects)?"""
    inside = "inside" if prediction.contains(test_score) else "OUTSIDE"
    line = (
        f"CV prediction for {prediction.new_groups} new subjects {prediction.estimate:.4f} "
        f"(95 % PI {prediction.low:.4f}-{prediction.high:.4f}): the test score {test_score:.4f} is {inside} it"
    )
    if (
        test_interval is not None
        and test_interval.unit == "subject"
        and test_interval.n_groups != prediction.new_groups
    ):
        line += (
            f" (the test set has {test_interval.n_groups} subjects; "
            f"cv_train --predict-subjects {test_interval.n_groups} makes the interval for that size)"
        )
    return line


def _test_score(csv_path: Path, masks_dir: Path) -> tuple[float, Interval]:
    """The submission's mean Dice against ``masks_dir`` and its bootstrap interval (by subject when the
    folder has the synthetic generator's ``subjects.csv``, else by image)."""
    from nerveseg.submit.submission_file import score_submission

    score, per_image = score_submission(csv_path, masks_dir)
    ids = per_image["img"].to_numpy()
    return score, interval_for_ids(per_image["dice"].to_numpy(), ids, read_test_subjects(masks_dir))


__all__ = [
    "Sources",
    "SubmissionResult",
    "best_cv_run",
    "cv_prediction_interval",
    "decide_for_runs",
    "make_submission",
    "prediction_check",
    "resolve_run",
    "submission_path",
]
