"""The leaderboard beside the estimate: scores recorded on real MLflow submission runs (an SQLite store of the
test's own), the interval sized for Kaggle's test set, the table and the trust-your-CV plot, and what is sent to the
Kaggle client (a stand-in first on PATH) for an upload or a listing."""

from __future__ import annotations

import runpy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from kaggle_fake import install
from nerveseg import names
from nerveseg.errors import NervesegError
from nerveseg.evaluate.paired import ImageScores
from nerveseg.evaluate.uncertainty import Interval, prediction_interval
from nerveseg.io_utils import sha256_file
from nerveseg.kaggle_client import (
    COMPETITION,
    KaggleError,
    credential_sources,
    message_line,
    parse_submissions,
)
from nerveseg.report.leaderboard import (
    LeaderboardEntry,
    interval_for_test_set,
    leaderboard_table,
    subjects_in_test_set,
    submission_message,
    trust_your_cv_figure,
)
from nerveseg.run.fold_files import save_image_scores
from nerveseg.run.submit import SubmissionResult
from nerveseg.track import schema, submission_run

ROOT = Path(__file__).resolve().parents[1]
SUBJECTS, FRAMES = 47, 120  # Kaggle's training set: 5,635 images of 47 subjects


# ------------------------------------------------------------------------------------------- pure parts


def test_kaggles_test_set_is_46_subjects_at_the_training_sets_frames_per_subject() -> None:
    assert subjects_in_test_set(5508, 5635, 47) == 46
    assert subjects_in_test_set(160, 96 * 16, 96) == 10  # the demo's synthetic test set
    with pytest.raises(ValueError, match=">= 1"):
        subjects_in_test_set(0, 5635, 47)


def _scores(seed: int = 0, subjects: int = SUBJECTS, frames: int = FRAMES) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    effect = rng.normal(0.7, 0.1, subjects)
    groups = np.repeat(np.arange(subjects), frames)
    return np.clip(effect[groups] + rng.normal(0, 0.2, groups.size), 0, 1), groups


def test_the_interval_is_the_prediction_interval_for_the_test_sets_subjects() -> None:
    scores, groups = _scores()
    interval = interval_for_test_set(scores, groups, 5508)
    assert interval == prediction_interval(scores, groups, 46) and interval.new_groups == 46
    assert interval_for_test_set(scores, groups, 5508, new_subjects=9).new_groups == 9
    # a test set of 46 subjects averages more subjects than one fold of 9: a narrower interval
    nine = prediction_interval(scores, groups, 9)
    assert interval.high - interval.low < nine.high - nine.low


def _entry(name: str, estimate: float, public: float | None, private: float | None) -> LeaderboardEntry:
    interval = Interval(estimate, estimate - 0.05, estimate + 0.05, 47, "subject", 0.95, 46)
    return LeaderboardEntry(name, name * 4, interval, public, private)


def test_the_table_says_whether_each_score_is_inside_the_interval() -> None:
    entries = [_entry("strong", 0.73, 0.70, 0.71), _entry("base", 0.60, 0.50, None)]
    entries.append(LeaderboardEntry("a+b", "e" * 32, None, 0.7, 0.7))
    lines = leaderboard_table(entries).splitlines()
    assert lines[0].split()[:2] == ["run", "submission"]
    assert "0.6800-0.7800 (46 subj.)" in lines[1] and lines[1].rstrip().endswith("yes / yes")
    assert lines[2].rstrip().endswith("NO / -") and "0.5000" in lines[2]
    assert lines[3].split()[2] == "-"  # an ensemble has no single estimate
    fig = trust_your_cv_figure(entries)
    (ax,) = fig.axes
    assert ax.get_xlabel().startswith("CV estimate") and "46 test subjects" in ax.get_title()
    assert ax.get_xlim() == ax.get_ylim()  # y = x is the diagonal
    with pytest.raises(ValueError, match="record a score first"):
        trust_your_cv_figure([entries[2]])


def test_the_default_message_names_the_run_and_its_estimate() -> None:
    interval = Interval(0.7312, 0.69, 0.77, 47, "subject", 0.95, 46)
    assert submission_message("strong", interval) == (
        "strong: CV estimate 0.7312, 95 % PI 0.6900-0.7700 for 46 test subjects (nerveseg)"
    )
    assert submission_message("a+b", None) == "a+b (nerveseg)"


def test_the_clients_submissions_table_is_read_below_its_warnings() -> None:
    output = (
        "Warning: Looks like you're using an outdated API Version, please consider updating (server 1.8.3)\n"
        "fileName,date,description,status,publicScore,privateScore\n"
        'b.csv,2026-01-02 10:00:00,"strong: CV estimate 0.7312, 95 % PI",SubmissionStatus.COMPLETE,0.68512,0.69104\n'
        "a.csv,2026-01-01 10:00:00,first,SubmissionStatus.PENDING,None,\n"
    )
    rows = parse_submissions(output)
    assert [r.file_name for r in rows] == ["b.csv", "a.csv"]
    assert rows[0].description == "strong: CV estimate 0.7312, 95 % PI" and rows[0].private_score == 0.69104
    assert rows[1].public_score is None and rows[1].private_score is None
    assert parse_submissions("No submissions found\n") == []
    with pytest.raises(KaggleError, match=r"printed no table .*403 Client Error"):
        parse_submissions("Traceback (most recent call last):\n  File x\nHTTPError: 403 Client Error: Forbidden\n")


def test_the_clients_message_is_its_last_line_not_a_progress_bar_or_a_stack_frame() -> None:
    assert message_line("Downloading x.zip\r 50%|#####     | 1M/2M\n100%|##########| 2M/2M\n") == "Downloading x.zip"
    trace = (
        'Traceback (most recent call last):\n  File "cli.py", line 70\n    f()\nOSError: Could not find kaggle.json\n'
    )
    assert message_line(trace) == "OSError: Could not find kaggle.json"
    assert message_line("") == "(the client printed nothing)"


def test_credentials_are_found_where_the_client_reads_them(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    assert credential_sources({}, home) == []
    assert credential_sources({"KAGGLE_USERNAME": "u"}, home) == []  # a user name alone is not a credential
    assert credential_sources({"KAGGLE_USERNAME": "u", "KAGGLE_KEY": "k"}, home) == ["KAGGLE_USERNAME/KAGGLE_KEY"]
    assert credential_sources({"KAGGLE_API_TOKEN": "t"}, home) == ["KAGGLE_API_TOKEN"]
    (home / ".config" / "kaggle").mkdir(parents=True)
    (home / ".config" / "kaggle" / "kaggle.json").write_text("{}")
    assert credential_sources({}, home) == [str(home / ".config" / "kaggle" / "kaggle.json")]
    elsewhere = tmp_path / "conf"
    elsewhere.mkdir()
    (elsewhere / "kaggle.json").write_text("{}")
    assert str(elsewhere / "kaggle.json") in credential_sources({"KAGGLE_CONFIG_DIR": str(elsewhere)}, home)


# ------------------------------------------------------------------------------------ on a real MLflow store


@dataclass
class Tracked:
    client: object
    experiment_id: str
    cv_run_id: str
    scores: np.ndarray
    groups: np.ndarray
    tmp: Path

    def submission(self, name: str = "a.csv", *, n_test: int = 5508, run_ids: str | None = None, tags=None) -> tuple:
        """A finished submission run under the CV run, as submit.py logs it, and its CSV."""
        csv = self.tmp / name
        csv.write_text(f"img,pixels\n1,{name}\n")
        run_tags = {
            schema.PARENT_TAG: self.cv_run_id, schema.RUN_TYPE_TAG: schema.SUBMISSION_RUN,
            names.SUBMISSION_FILE_TAG: csv.name, names.SUBMISSION_SHA_TAG: sha256_file(csv), **(tags or {}),
        }  # fmt: skip
        run = self.client.create_run(self.experiment_id, run_name="submission", tags=run_tags)
        self.client.log_param(run.info.run_id, names.RUN_IDS_PARAM, run_ids or self.cv_run_id)
        self.client.log_metric(run.info.run_id, names.N_TEST_IMAGES, n_test)
        self.client.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id, csv


@pytest.fixture()
def tracked(store, tmp_path: Path) -> Tracked:
    """A finished CV run "strong" of 47 subjects x 120 frames with its per-image OOF scores, in the test's store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store.tracking_uri)
    experiment_id = client.create_experiment(store.experiment_name)
    scores, groups = _scores()
    run = client.create_run(experiment_id, run_name="strong", tags={schema.RUN_TYPE_TAG: schema.CV_RUN})
    run_id = run.info.run_id
    client.log_param(run_id, names.TASK_PARAM, "nerve")
    client.log_metric(run_id, names.OOF_SCORE_POSTPROCESSED, float(scores.mean()))
    ids = np.array([f"{s}_{i}" for s, i in zip(groups, np.tile(np.arange(FRAMES), SUBJECTS), strict=True)])
    image_scores = ImageScores(ids, groups.astype(str), groups % 5, scores, names.OOF_SCORE_POSTPROCESSED)
    client.log_artifact(run_id, str(save_image_scores(tmp_path / names.IMAGE_SCORES_FILE, image_scores)),
                        names.OOF_DIR)  # fmt: skip
    client.set_terminated(run_id, "FINISHED")
    return Tracked(client, experiment_id, run_id, scores, groups.astype(str), tmp_path)


@pytest.fixture(scope="module")
def leaderboard_main():
    return runpy.run_path(str(ROOT / "src" / "leaderboard.py"))["main"]


def test_typed_scores_land_on_the_submission_run_with_the_test_set_interval_and_the_plot(
    tracked: Tracked, leaderboard_main, capsys: pytest.CaptureFixture[str]
) -> None:
    first, csv = tracked.submission("a.csv")
    second, _ = tracked.submission("b.csv")
    plot = tracked.tmp / "plots" / "trust.png"
    assert leaderboard_main(["--csv", str(csv), "--public", "0.68", "--private", "0.69", "--plot", str(plot)]) == 0
    metrics = tracked.client.get_run(first).data.metrics
    assert metrics[names.LEADERBOARD_PUBLIC] == 0.68 and metrics[names.LEADERBOARD_PRIVATE] == 0.69
    expected = prediction_interval(tracked.scores, tracked.groups, 46)
    assert metrics[names.TEST_SET_PI_SUBJECTS] == 46
    assert (metrics[names.TEST_SET_PI_LOW], metrics[names.TEST_SET_PI_HIGH]) == (expected.low, expected.high)
    assert tracked.client.get_run(first).data.tags[names.LEADERBOARD_SOURCE_TAG] == "typed"
    out = capsys.readouterr().out
    assert f"recorded on submission run {first} (strong)" in out and "(46 subj.)" in out
    assert plot.read_bytes().startswith(b"\x89PNG") and f"wrote {plot}" in out

    assert leaderboard_main(["--submission-run-id", second, "--private", "0.10", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert out.count("strong ") == 2 and "NO" in out  # 0.10 lies far below the interval
    query = f"tags.`{schema.RUN_TYPE_TAG}` = '{submission_run.LEADERBOARD_RUN}'"
    (board,) = tracked.client.search_runs([tracked.experiment_id], query)  # one leaderboard run, reused
    artifacts = {a.path for a in tracked.client.list_artifacts(board.info.run_id)}
    plots = {a.path for a in tracked.client.list_artifacts(board.info.run_id, "plots")}
    assert submission_run.LEADERBOARD_TABLE_ARTIFACT in artifacts and plots == {submission_run.TRUST_PLOT_ARTIFACT}
    table = tracked.client.download_artifacts(
        board.info.run_id, submission_run.LEADERBOARD_TABLE_ARTIFACT, str(tracked.tmp)
    )
    assert len(Path(table).read_text().splitlines()) == 4  # header, two submissions, the note


def test_scores_are_read_back_through_the_client_and_matched_by_file_or_message(
    tracked: Tracked, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, leaderboard_main,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    kaggle = install(tmp_path, monkeypatch)
    uploaded = {names.KAGGLE_UPLOADED_TAG: "2026-01-01T10:00:00+00:00"}
    by_file, _ = tracked.submission("a.csv", tags={**uploaded, names.KAGGLE_MESSAGE_TAG: "first"})
    by_message, _ = tracked.submission("b.csv", tags={**uploaded, names.KAGGLE_MESSAGE_TAG: "strong, second try"})
    pending, _ = tracked.submission("c.csv", tags={**uploaded, names.KAGGLE_MESSAGE_TAG: "third"})
    tracked.submission("d.csv")  # never uploaded: not asked about
    kaggle.serve_submissions(
        [
            ("c.csv", "2026-01-03 10:00:00", "third", "SubmissionStatus.PENDING", "None", "None"),
            ("renamed.csv", "2026-01-02 10:00:00", "strong, second try", "SubmissionStatus.COMPLETE", "0.61", "0.62"),
            ("a.csv", "2026-01-01 10:00:00", "first", "SubmissionStatus.COMPLETE", "0.70", "0.71"),
        ],
        warning="Warning: Looks like you're using an outdated API Version",
    )
    assert leaderboard_main(["--from-kaggle", "--plot", str(tmp_path / "p.png")]) == 0
    assert kaggle.calls() == [["competitions", "submissions", "-c", COMPETITION, "--csv"]]
    assert tracked.client.get_run(by_file).data.metrics[names.LEADERBOARD_PRIVATE] == 0.71
    assert tracked.client.get_run(by_message).data.metrics[names.LEADERBOARD_PUBLIC] == 0.61
    assert names.LEADERBOARD_PUBLIC not in tracked.client.get_run(pending).data.metrics
    assert tracked.client.get_run(by_file).data.tags[names.LEADERBOARD_SOURCE_TAG] == "kaggle client"
    out = capsys.readouterr().out
    assert "c.csv: not among Kaggle's listed submissions with a score" in out and out.count("(kaggle client)") == 2


def _result(tracked: Tracked, submission_run_id: str, csv: Path) -> SubmissionResult:
    """What submit.py hands to --kaggle after writing the CSV (the prediction part is not needed here)."""
    return SubmissionResult(csv, [tracked.cv_run_id], 1, 0.5, None, "run", submission_run_id=submission_run_id)


def test_an_upload_sends_the_file_and_message_and_tags_the_run(
    tracked: Tracked, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nerveseg.run.leaderboard import upload_and_record
    from nerveseg.track.submission_run import MlflowSubmissions

    kaggle = install(tmp_path, monkeypatch)
    run_id, csv = tracked.submission("a.csv")
    line = upload_and_record(MlflowSubmissions.open(), _result(tracked, run_id, csv))
    ((command, *sent),) = kaggle.calls()
    message = sent[-1]
    assert [command, *sent[:-1]] == ["competitions", "submit", "-c", COMPETITION, "-f", str(csv), "-m"]
    expected = prediction_interval(tracked.scores, tracked.groups, 46)
    assert message == submission_message("strong", expected) and "for 46 test subjects" in message
    assert (
        line
        == f"uploaded a.csv to Kaggle: Successfully submitted to Ultrasound Nerve Segmentation (message: {message})"
    )
    run = tracked.client.get_run(run_id)
    assert run.data.tags[names.KAGGLE_MESSAGE_TAG] == message and names.KAGGLE_UPLOADED_TAG in run.data.tags
    assert run.data.metrics[names.TEST_SET_PI_SUBJECTS] == 46

    upload_and_record(MlflowSubmissions.open(), _result(tracked, run_id, csv), "my own words")
    assert kaggle.calls()[-1][-1] == "my own words"


@pytest.mark.parametrize("failure", ["exit", "answer", "no client"])
def test_a_failed_upload_keeps_the_file_and_says_how_to_upload_by_hand(
    failure: str, tracked: Tracked, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nerveseg.run.leaderboard import upload_and_record
    from nerveseg.track.submission_run import MlflowSubmissions

    kaggle = install(tmp_path, monkeypatch)
    if failure == "exit":
        kaggle.fail("403 - Forbidden - You must accept this competition's rules")
    elif failure == "answer":  # the client exits 0 when its upload failed
        kaggle.answer("Could not submit to competition")
    else:
        monkeypatch.setenv("PATH", str(tmp_path / "home"))
    run_id, csv = tracked.submission("a.csv")
    with pytest.raises(KaggleError) as caught:
        upload_and_record(MlflowSubmissions.open(), _result(tracked, run_id, csv), "msg")
    text = str(caught.value)
    assert "\n" not in text and "The file is kept: upload it by hand with `kaggle competitions submit" in text
    assert f"-f {csv} -m msg`" in text and "ultrasound-nerve-segmentation/submit" in text
    assert csv.is_file() and names.KAGGLE_UPLOADED_TAG not in tracked.client.get_run(run_id).data.tags


def test_an_ensemble_is_listed_without_an_estimate_and_not_drawn(
    tracked: Tracked, leaderboard_main, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id, _ = tracked.submission("e.csv", run_ids=f"{tracked.cv_run_id},{'f' * 32}")
    plot = tracked.tmp / "p.png"
    assert leaderboard_main(["--submission-run-id", run_id, "--public", "0.7", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "no plot: no recorded submission has both a CV estimate and a score" in out
    assert not plot.exists()


BAD = {
    "score out of range": (["--submission-run-id", "SUB", "--public", "68"], ["--public 68.0", "lies in [0, 1]"]),
    "score without submission": (["--public", "0.6"], ["need the submission", "--csv PATH"]),
    "scores and from-kaggle": (["--csv", "CSV", "--public", "0.6", "--from-kaggle"], ["not both"]),
    "unknown csv": (["--csv", "OTHER", "--public", "0.6"], ["no submission run", "recorded a file with these bytes"]),
    "not a submission run": (["--submission-run-id", "CV", "--public", "0.6"], ["is not a submission run"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line(
    case: str, tracked: Tracked, leaderboard_main, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id, csv = tracked.submission("a.csv")
    other = tracked.tmp / "other.csv"
    other.write_text("img,pixels\n")
    values = {"SUB": run_id, "CSV": str(csv), "OTHER": str(other), "CV": tracked.cv_run_id}
    args, words = BAD[case]
    assert leaderboard_main([values.get(a, a) for a in args] + ["--plot", str(tracked.tmp / "p.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(word in err[0] for word in words), err
    assert names.LEADERBOARD_PUBLIC not in tracked.client.get_run(run_id).data.metrics


def test_from_kaggle_without_any_upload_says_what_to_pass(tracked: Tracked) -> None:
    from nerveseg.run.leaderboard import record_leaderboard
    from nerveseg.track.submission_run import MlflowSubmissions

    tracked.submission("a.csv")
    with pytest.raises(NervesegError, match="no submission of this experiment was uploaded"):
        record_leaderboard(MlflowSubmissions.open, from_kaggle=True)


def test_a_run_dir_submission_is_uploaded_with_no_tracking_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """submit.py --run-dir --kaggle: the upload, its message from the folder's name and the CV's own interval."""
    import submit

    kaggle = install(tmp_path, monkeypatch)
    csv = tmp_path / "x.csv"
    csv.write_text("img,pixels\n1,\n")
    prediction = Interval(0.7, 0.6, 0.8, 96, "subject", 0.95, 10)
    runs = [str(tmp_path / "runs" / "demo")]
    result = SubmissionResult(csv, runs, 1, 0.5, None, "run", cv_prediction=prediction, record_path=tmp_path / "x.json")
    submit._upload(result, None)  # recorded as a JSON file beside it: no MLflow submission run to tag
    message = "demo: CV estimate 0.7000, 95 % PI 0.6000-0.8000 for 10 test subjects (nerveseg)"
    assert kaggle.calls() == [["competitions", "submit", "-c", COMPETITION, "-f", str(csv), "-m", message]]
    assert capsys.readouterr().out.startswith("uploaded x.csv to Kaggle: Successfully submitted")
