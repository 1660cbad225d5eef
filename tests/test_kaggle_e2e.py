"""The competitor's path against a stand-in Kaggle client: the competition zip downloaded and unpacked by
get_data.py, a tiny tracked CV on it, ``submit.py --kaggle``, the scores read back by ``leaderboard.py --from-kaggle``
and the trust-your-CV plot; a failed upload keeps the CSV and says how to upload by hand."""

from __future__ import annotations

import runpy
from collections.abc import Iterator
from pathlib import Path

import pytest

from kaggle_fake import FakeKaggle, competition_zip, install
from nerveseg import names
from nerveseg.kaggle_client import COMPETITION

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def competitor(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> Iterator[dict]:
    """get_data.py through the stand-in client into an empty raw folder, then one tiny finished CV run on it
    (2 folds x 1 epoch) in an SQLite store of the module's own."""
    from nerveseg.config import TrainConfig
    from nerveseg.run.cross_validate import cross_validate
    from nerveseg.run.store import CVPaths
    from nerveseg.track.mlflow_store import MlflowStore

    tmp = tmp_path_factory.mktemp("kaggle_e2e")
    with pytest.MonkeyPatch.context() as patch:
        kaggle = install(tmp, patch)
        kaggle.serve_zip(competition_zip(synthetic_root / "raw", tmp / "c.zip", nested=True))
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")
        patch.setenv("MLFLOW_EXPERIMENT_NAME", "kaggle-e2e")
        raw = tmp / "data" / "raw"
        get_data = runpy.run_path(str(ROOT / "src" / "get_data.py"))["main"]
        assert get_data(["--raw-dir", str(raw), "--download-dir", str(tmp / "downloads")]) == 0
        config = TrainConfig(
            name="tiny", height=32, width=40, depth=3, base_filters=4, learning_rate=1e-3, batch_size=8, epochs=1,
            folds=2, seed=1,
        )  # fmt: skip
        paths = CVPaths(raw_dir=raw, cache_dir=tmp / "cache", folds_dir=tmp / "folds")
        result = cross_validate(config, paths, MlflowStore(progress=False), progress=False)
        yield {"tmp": tmp, "raw": raw, "run_id": result.parent_id, "kaggle": kaggle, "patch": patch}


def _submit_args(competitor: dict, out: Path) -> list[str]:
    return [
        "--run-id", competitor["run_id"], "--raw-dir", str(competitor["raw"]), "--out-dir", str(out),
        "--cache-dir", str(competitor["tmp"] / "cache"), "--batch-size", "8", "--no-progress",
    ]  # fmt: skip


def test_submit_uploads_and_the_leaderboard_comes_back_beside_the_estimate(
    competitor: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import submit
    from nerveseg.track.store import get_client

    kaggle: FakeKaggle = competitor["kaggle"]
    assert submit.main([*_submit_args(competitor, tmp_path), "--kaggle"]) == 0
    out = capsys.readouterr().out
    (csv,) = tmp_path.glob("*_tiny.csv")
    command = kaggle.calls()[-1]
    assert command[:6] == ["competitions", "submit", "-c", COMPETITION, "-f", str(csv)] and command[6] == "-m"
    message = command[7]
    assert message.startswith("tiny: CV estimate ") and "test subjects (nerveseg)" in message
    assert f"uploaded {csv.name} to Kaggle: Successfully submitted" in out

    client = get_client()
    (run,) = client.search_runs(
        [client.get_run(competitor["run_id"]).info.experiment_id],
        f"tags.`{names.SUBMISSION_FILE_TAG}` = '{csv.name}'",
    )
    assert run.data.tags[names.KAGGLE_MESSAGE_TAG] == message and names.KAGGLE_UPLOADED_TAG in run.data.tags
    # the synthetic test set: 6 images at 8 frames per training subject -> an interval for 1 subject
    assert run.data.metrics[names.TEST_SET_PI_SUBJECTS] == 1

    kaggle.serve_submissions([(csv.name, "2026-01-01 10:00:00", message, "COMPLETE", "0.5123", "0.5345")])
    leaderboard = runpy.run_path(str(ROOT / "src" / "leaderboard.py"))["main"]
    plot = tmp_path / "trust.png"
    assert leaderboard(["--from-kaggle", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "(kaggle client)" in out and "0.5123" in out and "0.5345" in out and f"wrote {plot}" in out
    metrics = client.get_run(run.info.run_id).data.metrics
    assert metrics[names.LEADERBOARD_PUBLIC] == 0.5123 and metrics[names.LEADERBOARD_PRIVATE] == 0.5345
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_a_failed_upload_keeps_the_csv_and_says_how_to_upload_by_hand(
    competitor: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import submit

    kaggle: FakeKaggle = competitor["kaggle"]
    kaggle.fail("401 - Unauthorized")
    try:
        assert submit.main([*_submit_args(competitor, tmp_path), "--kaggle", "--message", "try 2"]) == 2
    finally:
        (kaggle.folder / "fail.txt").unlink()
    captured = capsys.readouterr()
    (csv,) = tmp_path.glob("*_tiny.csv")
    assert f"wrote {csv}" in captured.out
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("error: `kaggle competitions submit` failed (exit 1): 401 - Unauthorized")
    assert "KAGGLE_USERNAME" in line and "upload it by hand with `kaggle competitions submit" in line
    assert f"-f {csv} -m 'try 2'`" in line


def test_a_message_without_kaggle_is_refused_before_any_work(
    competitor: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import submit

    assert submit.main([*_submit_args(competitor, tmp_path), "--message", "x"]) == 2
    assert "add --kaggle" in capsys.readouterr().err and not list(tmp_path.iterdir())
