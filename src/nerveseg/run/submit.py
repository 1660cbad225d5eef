"""From finished cross-validations, in either store, to a submission file: the use case behind ``submit.py``.

``write_submission`` takes the runs as ``run.store.RunReader`` objects (MLflow runs or LocalStore folders),
resolves each to its config and fold weights, reuses a single run's ``postprocessing.json`` (or lets the task
decide it on the runs' out-of-fold predictions), lets the runs' task predict the test data with every fold model
and write its file (nerve: the Kaggle CSV; isbi2012: the float32 TIFF stack) as ``<out>/<UTC time>_<run
name><suffix>``, never overwritten. Where the submission is recorded is a ``SubmissionLog``'s business: a tracking
store (``track.submission_run.MlflowSubmissions``) logs an MLflow child run of the CV run, and keeps there a
post-processing decided now; ``JsonRecord`` (a LocalStore folder, no tracking store) writes the same params and
metrics as ``<submission file>.json`` beside the file, since a finished LocalStore folder is never modified.
``make_submission`` takes the runs from a LocalStore folder or a tracking store: named by id, by a registered
model, or the best one trained on the data to predict (``run.choice``).
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from nerveseg import names
from nerveseg.config import DEFAULT_TASK
from nerveseg.data.synthetic import read_test_subjects
from nerveseg.errors import NervesegError
from nerveseg.evaluate.uncertainty import Interval, interval_for_ids
from nerveseg.io_utils import atomic_create_text, check_writable_dir, sha256_file
from nerveseg.paths import PROCESSED_DIR, RAW_DIR, SUBMISSIONS_DIR
from nerveseg.run.choice import DataToMatch, RunCatalog, chosen_runs, cv_prediction_interval
from nerveseg.run.fold_files import json_text
from nerveseg.run.local_store import LocalRunReader
from nerveseg.run.resolved_run import ResolvedRun, Sources, postprocessing_for_runs, resolve
from nerveseg.run.store import RunReader
from nerveseg.tasks import get_task
from nerveseg.tasks.base import Decision, SubmissionFile, Task

RECORD_SUFFIX = ".json"  # JsonRecord's record: <submission file>.json beside it


@dataclass(frozen=True)
class SubmitOptions:
    """How to submit: ``tta`` None uses the views the runs' out-of-fold predictions were made with (config
    ``tta``); ``test_masks_dir`` (``<id>_mask.tif``, nerve only) adds a local test score; ``file_name``
    replaces the ``<UTC time>_<run name>`` name (the task's suffix is added)."""

    raw_dir: Path = RAW_DIR
    out_dir: Path = SUBMISSIONS_DIR
    cache_dir: Path = PROCESSED_DIR
    tta: bool | None = None
    batch_size: int = 256
    test_masks_dir: Path | None = None
    progress: bool = True
    file_name: str | None = None


@dataclass
class Written:
    """What was submitted: the runs used, how, and what came out (what a store records)."""

    runs: list[ResolvedRun]
    tta: bool
    batch_size: int
    decision: Decision
    source: str  # run.resolved_run.RUN, DECIDED or DECIDED_ENSEMBLE
    file: SubmissionFile
    test_score: float | None
    seconds: dict[str, float]
    test_interval: Interval | None = None
    cv_prediction: Interval | None = None


@dataclass
class SubmissionResult:
    """What a submission produced; ``seconds`` splits the wall time by stage. ``csv_path`` is the task's file
    (nerve: the RLE CSV; isbi2012: the TIFF stack); the record is an MLflow run or a JSON file beside it."""

    csv_path: Path
    run_ids: list[str]
    n_images: int
    empty_share: float  # nerve: share of test images predicted empty; nan for tasks without that notion
    postprocessing: Decision
    postprocessing_source: str  # "run" (reused), "decided" or "decided_ensemble"
    test_score: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    test_interval: Interval | None = None
    task: str = DEFAULT_TASK
    cv_prediction: Interval | None = None  # the CV run's prediction interval for new subjects (one run only)
    submission_run_id: str = ""  # the MLflow submission run, when recorded in MLflow
    record_path: Path | None = None  # the JSON record, when submitted from a LocalStore folder

    @classmethod
    def of(cls, written: Written, **record: Any) -> SubmissionResult:
        return cls(
            csv_path=written.file.path,
            run_ids=[r.run_id for r in written.runs],
            n_images=written.file.n_images,
            empty_share=written.file.metrics.get(names.PREDICTED_EMPTY_SHARE, float("nan")),
            postprocessing=written.decision,
            postprocessing_source=written.source,
            test_score=written.test_score,
            seconds=written.seconds,
            test_interval=written.test_interval,
            task=written.runs[0].config.task,
            cv_prediction=written.cv_prediction,
            **record,
        )


def check_file_name(name: str) -> str:
    """``--out-name``: a plain file name (no folder part, not hidden, not empty); raises ``NervesegError``."""
    if not name or name in (".", "..") or Path(name).name != name or name.startswith(".") or "\x00" in name:
        raise NervesegError(
            f"--out-name {name!r} must be a plain file name (no folder part, not hidden); use --out-dir for the folder"
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


def check_options(options: SubmitOptions) -> None:
    """Every option error before anything is read, downloaded or predicted."""
    if options.batch_size < 1:
        raise NervesegError(f"batch_size={options.batch_size} must be >= 1")
    if options.test_masks_dir is not None and not Path(options.test_masks_dir).is_dir():
        raise NervesegError(f"test mask folder {options.test_masks_dir} does not exist")
    if options.file_name is not None:
        check_file_name(options.file_name)
    check_writable_dir(Path(options.out_dir), "--out-dir")
    check_writable_dir(Path(options.cache_dir), "--cache-dir")


def runs_task(readers: Sequence[RunReader], options: SubmitOptions) -> Task:
    """The one task of the runs, with its checks of the options and the test data, before anything is
    downloaded. A mix of tasks cannot be ensembled."""
    tasks = {reader.run_id: reader.task for reader in readers}
    if len(set(tasks.values())) > 1:
        raise NervesegError(
            f"the runs belong to different tasks ({', '.join(f'{k}={v}' for k, v in tasks.items())}); "
            "ensemble runs of one task"
        )
    task = get_task(next(iter(tasks.values())))
    if options.test_masks_dir is not None and not task.supports_test_masks:
        raise NervesegError(f"--test-masks scores nerve CSVs only; task {task.name} has no local test score")
    task.check_test_data(Path(options.raw_dir))
    return task


def views_for(runs: list[ResolvedRun], tta: bool | None) -> bool:
    """The runs' own test-time views (their out-of-fold predictions used them) unless ``tta`` says otherwise."""
    trained_with = {r.config.tta for r in runs}
    chosen = all(trained_with) if tta is None else tta
    if trained_with != {chosen}:
        print(
            f"note: shipping {'with' if chosen else 'without'} test-time views, while some runs' post-processing was "
            "decided on out-of-fold predictions made otherwise (config tta)"
        )
    return chosen


def submission_name(runs: list[ResolvedRun]) -> str:
    """The file's name part: the run's name, or ``ensemble_<a>+<b>...`` for several runs."""
    return runs[0].name if len(runs) == 1 else "ensemble_" + "+".join(r.name for r in runs)


def write_submission(readers: Sequence[RunReader], options: SubmitOptions) -> Written:
    """Predict the test data with the runs' fold models (equal weight per run) and write a new, checked file."""
    from nerveseg.submit.submission_file import check_new_submission

    check_options(options)
    task = runs_task(readers, options)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    raw_dir, cache_dir = Path(options.raw_dir), Path(options.cache_dir)
    with tempfile.TemporaryDirectory(prefix="nerveseg-submit-") as tmp:
        runs = [resolve(reader, Path(tmp)) for reader in readers]
        name = submission_name(runs)
        path = submission_path(options.out_dir, name, suffix=task.submission_suffix, file_name=options.file_name)
        check_new_submission(path)
        sources = Sources(Path(tmp), raw_dir, cache_dir, options.progress)
        decision, source = postprocessing_for_runs(runs, sources)
        seconds["resolve_runs"] = time.perf_counter() - started
        tta = views_for(runs, options.tta)
        written_file = task.write_submission(
            [r.models() for r in runs], decision, path, raw_dir=raw_dir, cache_dir=cache_dir, tta=tta,
            batch_size=options.batch_size, progress=options.progress,
        )  # fmt: skip
    seconds.update(written_file.seconds)
    test_score, test_interval = None, None
    if options.test_masks_dir is not None:
        test_score, test_interval = _test_score(written_file.path, Path(options.test_masks_dir))
    seconds["total"] = time.perf_counter() - started
    prediction = cv_prediction_interval(readers[0].metrics()) if len(readers) == 1 else None
    return Written(
        runs, tta, options.batch_size, decision, source, written_file, test_score, seconds, test_interval, prediction
    )


def submission_params(sub: Written) -> dict[str, Any]:
    """The submission's params, as its record keeps them."""
    return {
        names.RUN_IDS_PARAM: ",".join(r.run_id for r in sub.runs),
        "run_names": ",".join(r.name for r in sub.runs),
        names.TASK_PARAM: sub.runs[0].config.task,
        "n_models": sum(len(r.weights_paths) for r in sub.runs),
        "tta": sub.tta,
        "batch_size": sub.batch_size,
        **sub.decision.params(),
    }


def submission_metrics(sub: Written) -> dict[str, float]:
    """The submission's metrics (counts, timings, the decision's OOF scores, the local test score)."""
    metrics = {
        names.N_TEST_IMAGES: sub.file.n_images,
        **sub.file.metrics,
        **{f"seconds_{k}": v for k, v in sub.seconds.items()},
        **sub.decision.metrics(),
    }
    if sub.test_score is not None:
        metrics[names.TEST_SCORE] = sub.test_score
    if sub.test_interval is not None:
        metrics[names.TEST_SCORE_CI_LOW] = sub.test_interval.low
        metrics[names.TEST_SCORE_CI_HIGH] = sub.test_interval.high
    if sub.test_score is not None and sub.cv_prediction is not None:
        metrics[names.TEST_INSIDE_PI] = float(sub.cv_prediction.contains(sub.test_score))
    return {k: float(v) for k, v in metrics.items()}


def submission_tags(sub: Written) -> dict[str, str]:
    """What identifies the submission: the test data, the file's hash and name, where its post-processing came from."""
    return {
        "test_data_fingerprint": sub.file.test_fingerprint,
        names.SUBMISSION_SHA_TAG: sha256_file(sub.file.path),
        names.SUBMISSION_FILE_TAG: sub.file.path.name,
        "postprocessing_source": sub.source,
    }


class SubmissionLog(Protocol):
    """Where a written submission is recorded."""

    def record(self, written: Written) -> SubmissionResult:
        """Record ``written`` (its params, metrics, tags and post-processing) and say where."""


class TrackedRuns(RunCatalog, SubmissionLog, Protocol):
    """A tracking store as ``make_submission`` uses it: its runs, chosen or named, and their submissions' record."""

    def reader(self, run_id: str, *, unfinished: str = "refuse") -> RunReader:
        """CV run ``run_id``; ``unfinished="warn"`` takes one whose summary did not finish, with a warning."""

    def run_of_model(self, uri: str) -> str:
        """The CV run a registered model (``models:/nerveseg@champion``) was made of."""


@dataclass(frozen=True)
class JsonRecord:
    """A ``SubmissionLog`` with no tracking store: ``<submission file>.json`` beside the file, naming the LocalStore
    folders ``run_dirs`` it was made from."""

    run_dirs: Sequence[Path]

    def record(self, written: Written) -> SubmissionResult:
        record = {
            "runs": [str(Path(d).resolve()) for d in self.run_dirs],
            "params": submission_params(written),
            "metrics": submission_metrics(written),
            "tags": submission_tags(written),
            names.POSTPROCESSING_ARTIFACT: written.decision.to_json(),
        }
        record_path = written.file.path.with_name(written.file.path.name + RECORD_SUFFIX)
        atomic_create_text(record_path, json_text(record))
        return SubmissionResult.of(written, record_path=record_path)


def make_submission(
    open_runs: Callable[[], TrackedRuns],
    *,
    run_id: str | None = None,
    run_ids: list[str] | None = None,
    run_dir: Path | None = None,
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
    """Predict the test data with the chosen CV run(s) of the store ``open_runs()`` opens, write and validate a new
    file, record it there.

    ``run_id`` picks one run, ``run_ids`` ensembles several (equal weight per run), neither picks the best
    finished CV run of ``task`` trained on the data in ``raw_dir`` (its data fingerprint), by that task's estimate
    (``run.choice.choose_cv_run``; ``task`` None: that of the newest run on this data, else of the newest run).
    ``model`` (``models:/nerveseg@champion``) picks the CV run a registered model was made of instead, so its
    submission is the run's. ``run_dir`` submits from that LocalStore folder instead and records the submission
    as ``<file>.json`` beside it (``JsonRecord``): ``open_runs`` is then never called, so no tracking store is
    used. The other options are ``SubmitOptions``'. Bad input raises ``NervesegError`` naming it; the output and
    cache folders are checked writable before the store is opened.
    """
    if model is not None and (run_id is not None or run_ids):
        raise NervesegError("pass either --model or --run-id/--runs, not both")
    if run_id is not None and run_ids:
        raise NervesegError("pass either one run id (--run-id) or several (--runs), not both")
    others = {"--run-id": run_id, "--runs": run_ids, "--model": model, "--task": task}
    if run_dir is not None and any(others.values()):
        raise NervesegError(f"--run-dir names the run itself: drop {', '.join(k for k, v in others.items() if v)}")
    if run_ids is not None and len(set(run_ids)) != len(run_ids):
        raise NervesegError(f"--runs lists a run twice: {run_ids}")
    options = SubmitOptions(
        Path(raw_dir), Path(out_dir), Path(cache_dir), tta, batch_size, test_masks_dir, progress, file_name
    )
    check_options(options)
    if run_dir is not None:
        return JsonRecord([run_dir]).record(write_submission([LocalRunReader(run_dir)], options))
    runs = open_runs()
    if model is not None:  # a registered model: submit from the CV run it was made of
        run_id = runs.run_of_model(model)
    data = DataToMatch(options.raw_dir, options.cache_dir, progress)
    chosen = chosen_runs(runs, run_id, run_ids, task, data)
    readers = [runs.reader(rid, unfinished="warn") for rid in chosen]
    return runs.record(write_submission(readers, options))


def prediction_check(test_score: float, test_interval: Interval | None, prediction: Interval) -> str:
    """One line: did the test score land in the CV's prediction interval (and was it made for this many subjects)?"""
    inside = "inside" if prediction.contains(test_score) else "OUTSIDE"
    line = (
        f"CV prediction for {prediction.new_groups} new subjects {prediction.estimate:.4f} "
        f"(95 % PI {prediction.low:.4f}-{prediction.high:.4f}): the test score {test_score:.4f} is {inside} it"
    )
    by_subject = test_interval is not None and test_interval.unit == "subject"
    if by_subject and test_interval.n_groups != prediction.new_groups:
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
