"""Kaggle's side of a submission, kept on its MLflow submission run: the upload, the leaderboard scores, the plot.

``submit.py --kaggle`` uploads the file through the Kaggle client (``kaggle_client.submit``) and tags the submission
run with the upload's time and message. ``leaderboard.py`` records the public and private leaderboard scores as
metrics of that run (typed in, or read back through the client and matched by file name or message), beside the CV
estimate's prediction interval sized for Kaggle's test set (``report.leaderboard``), and draws every recorded
submission of the experiment in one trust-your-CV plot.

That plot and its table belong to no single submission, so they are logged on the experiment's one run tagged
``leaderboard`` (created the first time, replaced on every call): the MLflow UI then always shows the current plot
in one place, while each submission run keeps only its own scores.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from nerveseg import kaggle_client, names
from nerveseg.errors import NervesegError
from nerveseg.evaluate.uncertainty import Interval
from nerveseg.io_utils import atomic_write_bytes, sha256_file
from nerveseg.report.leaderboard import (
    KAGGLE_TEST_IMAGES,
    LeaderboardEntry,
    interval_for_test_set,
    leaderboard_table,
    plottable,
    submission_message,
    trust_your_cv_figure,
)
from nerveseg.report.plots import figure_png
from nerveseg.run.submit import SubmissionResult
from nerveseg.track import schema
from nerveseg.track.run_reader import MlflowRunReader, get_run, run_name
from nerveseg.track.store import log_metrics
from nerveseg.track.submission_run import tracking

TYPED, FROM_KAGGLE = "typed", "kaggle client"
PLOT_DPI = 110


@dataclass(frozen=True)
class LeaderboardReport:
    """What ``leaderboard.py`` did: the scores it recorded (one line each), every recorded submission, the plot."""

    recorded: list[str]
    entries: list[LeaderboardEntry]
    table: str
    plot_path: Path | None
    leaderboard_run_id: str | None


# ------------------------------------------------------------------------------------------ submission runs


def submission_run(client: MlflowClient, run_id: str) -> Run:
    """Run ``run_id``, checked to be a submission run (what ``submit.py`` logs under the CV run)."""
    run = get_run(client, run_id)
    if run.data.tags.get(schema.RUN_TYPE_TAG) != schema.SUBMISSION_RUN:
        raise NervesegError(
            f"run {run_id} ({run_name(run)}) is not a submission run; pass the id submit.py printed "
            '("MLflow submission run ...") or the submission\'s CSV with --csv'
        )
    return run


def _submission_runs(client: MlflowClient, experiment_id: str, extra: str = "") -> list[Run]:
    query = f"tags.`{schema.RUN_TYPE_TAG}` = '{schema.SUBMISSION_RUN}' and attributes.status = 'FINISHED'{extra}"
    return client.search_runs([experiment_id], query, max_results=10_000, order_by=["attributes.start_time DESC"])


def submission_run_of_csv(client: MlflowClient, experiment_id: str, csv_path: Path) -> Run:
    """The submission run that wrote ``csv_path``, found by the file's hash (so a renamed copy is found too)."""
    if not Path(csv_path).is_file():
        raise NervesegError(f"--csv {csv_path} does not exist; pass the CSV submit.py wrote (in submissions/)")
    digest = sha256_file(csv_path)
    runs = _submission_runs(client, experiment_id, f" and tags.`{names.SUBMISSION_SHA_TAG}` = '{digest}'")
    if not runs:
        raise NervesegError(
            f"--csv {csv_path}: no submission run of this experiment recorded a file with these bytes; pass "
            "--submission-run-id, or set MLFLOW_EXPERIMENT_NAME to the experiment its CV run is in"
        )
    return runs[0]


def is_ensemble(run: Run) -> bool:
    return "," in run.data.params.get(names.RUN_IDS_PARAM, "")


def cv_run_id(run: Run) -> str:
    return run.data.tags[schema.PARENT_TAG]


def test_set_interval(client: MlflowClient, uri: str, run: Run, new_subjects: int = 0) -> Interval | None:
    """The submission's CV estimate with its 95 % PI for Kaggle's test set (``report.leaderboard``), computed from
    the CV run's per-image OOF scores; None for an ensemble of runs (no single estimate)."""
    if is_ensemble(run):
        return None
    scores = MlflowRunReader(client, cv_run_id(run), uri, unfinished="warn").image_scores()
    test_images = int(run.data.metrics.get(names.N_TEST_IMAGES, KAGGLE_TEST_IMAGES))
    return interval_for_test_set(scores.scores, scores.subjects, test_images, new_subjects)


def record_interval(client: MlflowClient, run_id: str, interval: Interval | None) -> None:
    if interval is not None:
        values = {schema.TEST_SET_PI_LOW: interval.low, schema.TEST_SET_PI_HIGH: interval.high}
        log_metrics(client, run_id, {**values, schema.TEST_SET_PI_SUBJECTS: interval.new_groups})


# ---------------------------------------------------------------------------------------------- the upload


def upload_and_record(result: SubmissionResult, message: str | None = None) -> str:
    """Upload ``result``'s file through the Kaggle client (default message: the run and its CV estimate with the
    interval for Kaggle's test set) and tag its submission run; one line for the user. A failure leaves the file
    and the run as they are and says how to upload by hand (``kaggle_client.submit``)."""
    client, uri, _ = tracking()
    run = submission_run(client, result.submission_run_id)
    interval = _interval_or_none(client, uri, run)
    text = message if message is not None else submission_message(_label(client, run), interval)
    line = kaggle_client.submit(result.csv_path, text)
    client.set_tag(run.info.run_id, schema.KAGGLE_UPLOADED_TAG, datetime.now(UTC).isoformat(timespec="seconds"))
    client.set_tag(run.info.run_id, schema.KAGGLE_MESSAGE_TAG, text)
    record_interval(client, run.info.run_id, interval)
    return line


def _interval_or_none(client: MlflowClient, uri: str, run: Run) -> Interval | None:
    """The test-set interval, or None (with a note) when the CV run keeps no per-image scores."""
    try:
        return test_set_interval(client, uri, run)
    except NervesegError as err:
        print(f"note: no prediction interval for Kaggle's test set ({err})")
        return None


# ------------------------------------------------------------------------------------------------- scores


def check_score(value: float | None, option: str) -> float | None:
    """A leaderboard score is a mean Dice: a number in [0, 1]."""
    if value is not None and not 0.0 <= value <= 1.0:
        raise NervesegError(
            f"{option} {value}: a leaderboard score (mean Dice) lies in [0, 1]; type it as Kaggle shows it"
        )
    return value


def record_scores(
    client: MlflowClient, uri: str, run: Run, public: float | None, private: float | None, *, source: str,
    new_subjects: int = 0,
) -> str:  # fmt: skip
    """Log the leaderboard scores on the submission run (and the test-set interval, when not there yet or when
    ``new_subjects`` asks for another size); one line saying what was recorded."""
    values = {schema.LEADERBOARD_PUBLIC: public, schema.LEADERBOARD_PRIVATE: private}
    values = {key: value for key, value in values.items() if value is not None}
    if not values:
        raise NervesegError("no score to record: pass --public and/or --private, or --from-kaggle")
    log_metrics(client, run.info.run_id, values)
    client.set_tag(run.info.run_id, schema.LEADERBOARD_SOURCE_TAG, source)
    if new_subjects:
        record_interval(client, run.info.run_id, test_set_interval(client, uri, run, new_subjects))
    elif schema.TEST_SET_PI_LOW not in run.data.metrics:
        record_interval(client, run.info.run_id, _interval_or_none(client, uri, run))
    shown = ", ".join(f"{key} {value:.4f}" for key, value in values.items())
    return f"recorded on submission run {run.info.run_id} ({_label(client, run)}): {shown} ({source})"


def _label(client: MlflowClient, run: Run) -> str:
    """The submission's name in tables: its CV run's name (``a+b`` for an ensemble)."""
    ids = run.data.params.get(names.RUN_IDS_PARAM) or run.data.tags.get(schema.PARENT_TAG, "")
    labels = []
    for run_id in filter(None, ids.split(",")):
        try:
            labels.append(run_name(client.get_run(run_id)))
        except MlflowException:  # a deleted CV run: its id still names it
            labels.append(run_id[:8])
    return "+".join(labels) or run.info.run_id[:8]


def match_kaggle_rows(run: Run, rows: list[kaggle_client.KaggleSubmission]) -> kaggle_client.KaggleSubmission | None:
    """The newest row of Kaggle's submissions list that is this run's upload (same file name, or the message it
    was uploaded with) and has a score; None when there is none (not uploaded, not scored yet, or older than the
    20 rows the client lists)."""
    file_name = run.data.tags.get(names.SUBMISSION_FILE_TAG)
    message = run.data.tags.get(schema.KAGGLE_MESSAGE_TAG)
    for row in rows:  # newest first
        same = row.file_name == file_name or (message is not None and row.description == message)
        if same and (row.public_score is not None or row.private_score is not None):
            return row
    return None


def scores_from_kaggle(client: MlflowClient, uri: str, runs: list[Run], new_subjects: int = 0) -> list[str]:
    """Read one's submissions back through the Kaggle client and record the scores of every run found there."""
    rows = kaggle_client.list_submissions()
    lines = []
    for run in runs:
        row = match_kaggle_rows(run, rows)
        if row is None:
            file_name = run.data.tags.get(names.SUBMISSION_FILE_TAG, "?")
            lines.append(f"{file_name}: not among Kaggle's listed submissions with a score (pending, or not uploaded)")
            continue
        lines.append(record_scores(client, uri, run, row.public_score, row.private_score, source=FROM_KAGGLE,
                                   new_subjects=new_subjects))  # fmt: skip
    return lines


# ------------------------------------------------------------------------------------------------ the verb


def record_leaderboard(
    *,
    submission_run_id: str | None = None,
    csv_path: Path | None = None,
    public: float | None = None,
    private: float | None = None,
    from_kaggle: bool = False,
    test_subjects: int = 0,
    plot_path: Path | None = None,
) -> LeaderboardReport:
    """Record a submission's leaderboard scores (typed in, or ``from_kaggle``: read back through the client for
    the chosen submission, or for every one uploaded with ``submit.py --kaggle``), then tabulate and plot every
    recorded submission of the experiment. Without scores it only tabulates and plots (``test_subjects`` re-sizes
    the chosen submission's interval). Bad input is a one-line ``NervesegError``."""
    typed = check_score(public, "--public") is not None or check_score(private, "--private") is not None
    if typed and from_kaggle:
        raise NervesegError("pass either the scores (--public/--private) or --from-kaggle, not both")
    if test_subjects < 0:
        raise NervesegError(f"--test-subjects {test_subjects}: pass a count >= 1 (or leave it out: 46 for Kaggle)")
    client, uri, experiment_name = tracking()
    chosen = _chosen_run(client, experiment_name, submission_run_id, csv_path)
    if typed and chosen is None:
        raise NervesegError("--public/--private need the submission: --submission-run-id ID or --csv PATH")
    experiment_id = chosen.info.experiment_id if chosen is not None else _experiment_id(client, experiment_name)
    recorded = []
    if typed:
        recorded.append(record_scores(client, uri, chosen, public, private, source=TYPED, new_subjects=test_subjects))
    elif from_kaggle:
        runs = [chosen] if chosen is not None else _uploaded_runs(client, experiment_id)
        recorded += scores_from_kaggle(client, uri, runs, test_subjects)
    elif chosen is not None and test_subjects:
        record_interval(client, chosen.info.run_id, test_set_interval(client, uri, chosen, test_subjects))
    found = entries(client, experiment_id)
    table = leaderboard_table(found) if found else ""
    run_id, written = publish(client, experiment_id, found, table, plot_path)
    return LeaderboardReport(recorded, found, table, written, run_id)


def _chosen_run(client: MlflowClient, experiment_name: str, run_id: str | None, csv_path: Path | None) -> Run | None:
    if run_id is not None and csv_path is not None:
        raise NervesegError("pass either --submission-run-id or --csv, not both")
    if run_id is not None:
        return submission_run(client, run_id)
    if csv_path is not None:
        return submission_run_of_csv(client, _experiment_id(client, experiment_name), csv_path)
    return None


def _experiment_id(client: MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        raise NervesegError(
            f"MLflow experiment {name!r} does not exist: nothing was submitted there; set MLFLOW_EXPERIMENT_NAME "
            "to the experiment of your runs"
        )
    return experiment.experiment_id


def _uploaded_runs(client: MlflowClient, experiment_id: str) -> list[Run]:
    runs = [run for run in _submission_runs(client, experiment_id) if schema.KAGGLE_UPLOADED_TAG in run.data.tags]
    if not runs:
        raise NervesegError(
            "no submission of this experiment was uploaded with submit.py --kaggle; name the one you uploaded "
            "by hand with --submission-run-id ID or --csv PATH"
        )
    return runs


# ------------------------------------------------------------------------------------------ table and plot


def entries(client: MlflowClient, experiment_id: str) -> list[LeaderboardEntry]:
    """Every finished submission run of the experiment with a leaderboard score, oldest first."""
    found = []
    for run in reversed(_submission_runs(client, experiment_id)):
        metrics = run.data.metrics
        public, private = metrics.get(schema.LEADERBOARD_PUBLIC), metrics.get(schema.LEADERBOARD_PRIVATE)
        if public is None and private is None:
            continue
        found.append(LeaderboardEntry(_label(client, run), run.info.run_id, _recorded_interval(client, run), public,
                                      private))  # fmt: skip
    return found


def _recorded_interval(client: MlflowClient, run: Run) -> Interval | None:
    """The test-set interval logged on the run, around its CV run's estimate; None when either is missing."""
    metrics = run.data.metrics
    keys = (schema.TEST_SET_PI_LOW, schema.TEST_SET_PI_HIGH, schema.TEST_SET_PI_SUBJECTS)
    if is_ensemble(run) or not all(key in metrics for key in keys):
        return None
    try:
        estimate = client.get_run(cv_run_id(run)).data.metrics.get(names.OOF_SCORE_POSTPROCESSED)
    except MlflowException:  # the CV run was deleted: no estimate to draw
        return None
    if estimate is None:
        return None
    low, high, subjects = (metrics[key] for key in keys)
    return Interval(estimate, low, high, 0, "subject", new_groups=int(subjects))


def leaderboard_run(client: MlflowClient, experiment_id: str) -> str:
    """The experiment's one run tagged ``leaderboard`` (created, FINISHED, the first time)."""
    query = f"tags.`{schema.RUN_TYPE_TAG}` = '{schema.LEADERBOARD_RUN}'"
    runs = client.search_runs([experiment_id], query, max_results=1, order_by=["attributes.start_time ASC"])
    if runs:
        return runs[0].info.run_id
    run = client.create_run(
        experiment_id, run_name=schema.LEADERBOARD_RUN, tags={schema.RUN_TYPE_TAG: schema.LEADERBOARD_RUN}
    )
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def publish(
    client: MlflowClient, experiment_id: str, found: list[LeaderboardEntry], table: str, plot_path: Path | None
) -> tuple[str | None, Path | None]:
    """Log ``table`` (``found`` tabulated) and the plot (when something can be drawn) on the experiment's leaderboard
    run and write the plot to ``plot_path``; (that run's id, the plot written), or (None, None) when no score is
    recorded."""
    if not found:
        return None, None
    run_id = leaderboard_run(client, experiment_id)
    with tempfile.TemporaryDirectory(prefix="nerveseg-leaderboard-") as tmp:
        table_file = Path(tmp) / schema.LEADERBOARD_TABLE_ARTIFACT
        table_file.write_text(table + "\n")
        client.log_artifact(run_id, str(table_file))
        if not plottable(found):
            return run_id, None
        png = figure_png(trust_your_cv_figure(found), PLOT_DPI)
        plot_file = Path(tmp) / Path(schema.TRUST_PLOT_ARTIFACT).name
        plot_file.write_bytes(png)
        client.log_artifact(run_id, str(plot_file), str(Path(schema.TRUST_PLOT_ARTIFACT).parent))
    if plot_path is not None:
        atomic_write_bytes(plot_path, png)
    return run_id, plot_path


__all__ = [
    "FROM_KAGGLE",
    "TYPED",
    "LeaderboardReport",
    "entries",
    "match_kaggle_rows",
    "publish",
    "record_leaderboard",
    "record_scores",
    "scores_from_kaggle",
    "submission_run",
    "submission_run_of_csv",
    "test_set_interval",
    "upload_and_record",
]
