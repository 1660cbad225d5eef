"""Kaggle's side of a submission: the upload, the leaderboard scores, the trust-your-CV plot (``leaderboard.py``).

``submit.py --kaggle`` uploads the file through the Kaggle client (``kaggle_client.submit``) and tags the submission's
record with the upload's time and message. ``leaderboard.py`` records the public and private leaderboard scores on
that record (typed in, or read back through the client and matched by file name or message), beside the CV
estimate's prediction interval sized for Kaggle's test set (``report.leaderboard``), and draws every recorded
submission in one trust-your-CV plot, which is published beside them.

Where the records are kept is a ``SubmissionRecords``' business: ``track.submission_run.MlflowSubmissions`` keeps
them as MLflow submission runs (and the plot and table on the experiment's one "leaderboard" run); nothing here
knows the store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from nerveseg import kaggle_client, names
from nerveseg.errors import NervesegError
from nerveseg.evaluate.uncertainty import Interval
from nerveseg.io_utils import atomic_write_bytes
from nerveseg.report.leaderboard import (
    DPI,
    KAGGLE_TEST_IMAGES,
    LeaderboardEntry,
    interval_for_test_set,
    leaderboard_table,
    plottable,
    submission_message,
    trust_your_cv_figure,
)
from nerveseg.report.plots import figure_png
from nerveseg.run.store import RunReader
from nerveseg.run.submit import SubmissionResult

TYPED, FROM_KAGGLE = "typed", "kaggle client"  # where recorded scores came from (names.LEADERBOARD_SOURCE_TAG)


@dataclass(frozen=True)
class SubmissionRecord:
    """A recorded submission: its id, the CV runs it was made of (the first is the one it is recorded under), where
    it belongs (the MLflow experiment whose other submissions are listed beside it) and its metrics and tags."""

    run_id: str
    cv_runs: tuple[str, ...]
    experiment: str
    metrics: Mapping[str, float]
    tags: Mapping[str, str]

    @property
    def is_ensemble(self) -> bool:
        return len(self.cv_runs) > 1


class SubmissionRecords(Protocol):
    """The recorded submissions and their CV runs, as the leaderboard reads and writes them."""

    def submission(self, run_id: str) -> SubmissionRecord:
        """The submission recorded as ``run_id`` (one line when it is no submission's record)."""

    def submission_of_file(self, path: Path) -> SubmissionRecord:
        """The submission that wrote ``path``, found by the file's hash (so a renamed copy is found too)."""

    def submissions(self, experiment: str | None = None) -> list[SubmissionRecord]:
        """Every finished submission of ``experiment`` (None: the configured one), newest first."""

    def cv_run(self, run_id: str) -> tuple[str, Mapping[str, float]] | None:
        """CV run ``run_id``'s name and metrics; None when it was deleted."""

    def reader(self, run_id: str, *, unfinished: str = "refuse") -> RunReader:
        """CV run ``run_id`` read back (its per-image scores)."""

    def log(self, sub: SubmissionRecord, metrics: Mapping[str, float], tags: Mapping[str, str]) -> None:
        """Add ``metrics`` and ``tags`` to the submission's record."""

    def publish(self, experiment: str | None, table: str, plot_png: bytes | None) -> str:
        """Keep the table (and the plot) of the scored submissions of ``experiment`` (None: the configured one); the
        id of where."""


@dataclass(frozen=True)
class LeaderboardReport:
    """What ``leaderboard.py`` did: the scores it recorded (one line each), every recorded submission, the plot."""

    recorded: list[str]
    entries: list[LeaderboardEntry]
    table: str
    plot_path: Path | None
    leaderboard_run_id: str | None


# ------------------------------------------------------------------------------------------ the interval


def test_set_interval(records: SubmissionRecords, sub: SubmissionRecord, new_subjects: int = 0) -> Interval | None:
    """The submission's CV estimate with its 95 % PI for Kaggle's test set (``report.leaderboard``), computed from
    the CV run's per-image OOF scores (centred on the fold ensemble's expected score when the CV measured its gain);
    None for an ensemble of runs (no single estimate)."""
    if sub.is_ensemble:
        return None
    reader = records.reader(sub.cv_runs[0], unfinished="warn")
    scores = reader.image_scores()
    test_images = int(sub.metrics.get(names.N_TEST_IMAGES, KAGGLE_TEST_IMAGES))
    interval = interval_for_test_set(scores.scores, scores.subjects, test_images, new_subjects)
    return interval.shifted(reader.metrics().get(names.ENSEMBLE_GAIN, 0.0))


def interval_metrics(interval: Interval | None) -> dict[str, float]:
    """The test-set interval as the submission's metrics (none when there is no interval)."""
    if interval is None:
        return {}
    return {names.TEST_SET_PI_LOW: interval.low, names.TEST_SET_PI_HIGH: interval.high,
            names.TEST_SET_PI_SUBJECTS: interval.new_groups}  # fmt: skip


def _interval_or_none(records: SubmissionRecords, sub: SubmissionRecord) -> Interval | None:
    """The test-set interval, or None (with a note) when the CV run keeps no per-image scores."""
    try:
        return test_set_interval(records, sub)
    except NervesegError as err:
        print(f"note: no prediction interval for Kaggle's test set ({err})")
        return None


# ---------------------------------------------------------------------------------------------- the upload


def upload_and_record(records: SubmissionRecords, result: SubmissionResult, message: str | None = None) -> str:
    """Upload ``result``'s file through the Kaggle client (default message: the run and its CV estimate with the
    interval for Kaggle's test set) and tag its record; one line for the user. A failure leaves the file and the
    record as they are and says how to upload by hand (``kaggle_client.submit``)."""
    sub = records.submission(result.submission_run_id)
    interval = _interval_or_none(records, sub)
    text = message if message is not None else submission_message(_label(records, sub), interval)
    line = kaggle_client.submit(result.csv_path, text)
    uploaded = {names.KAGGLE_UPLOADED_TAG: datetime.now(UTC).isoformat(timespec="seconds")}
    records.log(sub, interval_metrics(interval), {**uploaded, names.KAGGLE_MESSAGE_TAG: text})
    return line


# ------------------------------------------------------------------------------------------------- scores


def check_score(value: float | None, option: str) -> float | None:
    """A leaderboard score is a mean Dice: a number in [0, 1]."""
    if value is not None and not 0.0 <= value <= 1.0:
        raise NervesegError(
            f"{option} {value}: a leaderboard score (mean Dice) lies in [0, 1]; type it as Kaggle shows it"
        )
    return value


def record_scores(
    records: SubmissionRecords, sub: SubmissionRecord, public: float | None, private: float | None, *, source: str,
    new_subjects: int = 0,
) -> str:  # fmt: skip
    """Log the leaderboard scores on the submission (and the test-set interval, when not there yet or when
    ``new_subjects`` asks for another size); one line saying what was recorded."""
    values = {names.LEADERBOARD_PUBLIC: public, names.LEADERBOARD_PRIVATE: private}
    values = {key: value for key, value in values.items() if value is not None}
    if not values:
        raise NervesegError("no score to record: pass --public and/or --private, or --from-kaggle")
    records.log(sub, values, {names.LEADERBOARD_SOURCE_TAG: source})
    if new_subjects:
        records.log(sub, interval_metrics(test_set_interval(records, sub, new_subjects)), {})
    elif names.TEST_SET_PI_LOW not in sub.metrics:
        records.log(sub, interval_metrics(_interval_or_none(records, sub)), {})
    shown = ", ".join(f"{key} {value:.4f}" for key, value in values.items())
    return f"recorded on submission run {sub.run_id} ({_label(records, sub)}): {shown} ({source})"


def _label(records: SubmissionRecords, sub: SubmissionRecord) -> str:
    """The submission's name in tables: its CV run's name (``a+b`` for an ensemble)."""
    labels = []
    for run_id in sub.cv_runs:
        found = records.cv_run(run_id)
        labels.append(found[0] if found is not None else run_id[:8])  # a deleted CV run: its id still names it
    return "+".join(labels) or sub.run_id[:8]


def match_kaggle_rows(
    sub: SubmissionRecord, rows: list[kaggle_client.KaggleSubmission]
) -> kaggle_client.KaggleSubmission | None:
    """The newest row of Kaggle's submissions list that is this submission's upload (same file name, or the message
    it was uploaded with) and has a score; None when there is none (not uploaded, not scored yet, or older than the
    20 rows the client lists)."""
    file_name = sub.tags.get(names.SUBMISSION_FILE_TAG)
    message = sub.tags.get(names.KAGGLE_MESSAGE_TAG)
    for row in rows:  # newest first
        same = row.file_name == file_name or (message is not None and row.description == message)
        if same and (row.public_score is not None or row.private_score is not None):
            return row
    return None


def scores_from_kaggle(records: SubmissionRecords, subs: list[SubmissionRecord], new_subjects: int = 0) -> list[str]:
    """Read one's submissions back through the Kaggle client and record the scores of every one found there."""
    rows = kaggle_client.list_submissions()
    lines = []
    for sub in subs:
        row = match_kaggle_rows(sub, rows)
        if row is None:
            file_name = sub.tags.get(names.SUBMISSION_FILE_TAG, "?")
            lines.append(f"{file_name}: not among Kaggle's listed submissions with a score (pending, or not uploaded)")
            continue
        lines.append(record_scores(records, sub, row.public_score, row.private_score, source=FROM_KAGGLE,
                                   new_subjects=new_subjects))  # fmt: skip
    return lines


# ------------------------------------------------------------------------------------------------ the verb


def record_leaderboard(
    open_records: Callable[[], SubmissionRecords],
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
    recorded submission beside it. Without scores it only tabulates and plots (``test_subjects`` re-sizes the
    chosen submission's interval). Bad input is a one-line ``NervesegError``, before ``open_records()`` is called."""
    typed = check_score(public, "--public") is not None or check_score(private, "--private") is not None
    if typed and from_kaggle:
        raise NervesegError("pass either the scores (--public/--private) or --from-kaggle, not both")
    if test_subjects < 0:
        raise NervesegError(f"--test-subjects {test_subjects}: pass a count >= 1 (or leave it out: 46 for Kaggle)")
    if submission_run_id is not None and csv_path is not None:
        raise NervesegError("pass either --submission-run-id or --csv, not both")
    records = open_records()
    chosen = None
    if submission_run_id is not None:
        chosen = records.submission(submission_run_id)
    elif csv_path is not None:
        chosen = records.submission_of_file(csv_path)
    if typed and chosen is None:
        raise NervesegError("--public/--private need the submission: --submission-run-id ID or --csv PATH")
    experiment = chosen.experiment if chosen is not None else None
    recorded = []
    if typed:
        recorded.append(record_scores(records, chosen, public, private, source=TYPED, new_subjects=test_subjects))
    elif from_kaggle:
        subs = [chosen] if chosen is not None else _uploaded(records)
        recorded += scores_from_kaggle(records, subs, test_subjects)
    elif chosen is not None and test_subjects:
        records.log(chosen, interval_metrics(test_set_interval(records, chosen, test_subjects)), {})
    found = entries(records, experiment)
    table = leaderboard_table(found) if found else ""
    run_id, written = publish(records, experiment, found, table, plot_path)
    return LeaderboardReport(recorded, found, table, written, run_id)


def _uploaded(records: SubmissionRecords) -> list[SubmissionRecord]:
    subs = [sub for sub in records.submissions() if names.KAGGLE_UPLOADED_TAG in sub.tags]
    if not subs:
        raise NervesegError(
            "no submission of this experiment was uploaded with submit.py --kaggle; name the one you uploaded "
            "by hand with --submission-run-id ID or --csv PATH"
        )
    return subs


# ------------------------------------------------------------------------------------------ table and plot


def entries(records: SubmissionRecords, experiment: str | None) -> list[LeaderboardEntry]:
    """Every finished submission of ``experiment`` (None: the configured one) with a leaderboard score, oldest
    first."""
    found = []
    for sub in reversed(records.submissions(experiment)):
        public, private = sub.metrics.get(names.LEADERBOARD_PUBLIC), sub.metrics.get(names.LEADERBOARD_PRIVATE)
        if public is None and private is None:
            continue
        interval = _recorded_interval(records, sub)
        found.append(LeaderboardEntry(_label(records, sub), sub.run_id, interval, public, private))
    return found


def _recorded_interval(records: SubmissionRecords, sub: SubmissionRecord) -> Interval | None:
    """The test-set interval recorded with the submission, around its CV run's estimate; None when either is
    missing."""
    keys = (names.TEST_SET_PI_LOW, names.TEST_SET_PI_HIGH, names.TEST_SET_PI_SUBJECTS)
    if sub.is_ensemble or not all(key in sub.metrics for key in keys):
        return None
    cv_run = records.cv_run(sub.cv_runs[0])
    estimate = None if cv_run is None else cv_run[1].get(names.OOF_SCORE_POSTPROCESSED)  # deleted: nothing to draw
    if estimate is None:
        return None
    low, high, subjects = (sub.metrics[key] for key in keys)
    return Interval(estimate, low, high, 0, "subject", new_groups=int(subjects))


def publish(
    records: SubmissionRecords,
    experiment: str | None,
    found: list[LeaderboardEntry],
    table: str,
    plot_path: Path | None,
) -> tuple[str | None, Path | None]:
    """Publish ``table`` (``found`` tabulated) and the plot (when something can be drawn) beside the records and
    write the plot to ``plot_path``; (where they are kept, the plot written), or (None, None) when no score is
    recorded."""
    if not found:
        return None, None
    png = figure_png(trust_your_cv_figure(found), DPI) if plottable(found) else None
    run_id = records.publish(experiment, table, png)
    if png is None:
        return run_id, None
    if plot_path is not None:
        atomic_write_bytes(plot_path, png)
    return run_id, plot_path


__all__ = [
    "FROM_KAGGLE",
    "TYPED",
    "LeaderboardReport",
    "SubmissionRecord",
    "SubmissionRecords",
    "entries",
    "match_kaggle_rows",
    "publish",
    "record_leaderboard",
    "record_scores",
    "scores_from_kaggle",
    "test_set_interval",
    "upload_and_record",
]
