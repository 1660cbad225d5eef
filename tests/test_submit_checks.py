"""submit.py refuses unusable output folders in one line, before the tracking store or any prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def test_out_dir_that_is_a_file_is_named_before_anything_else(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import submit

    # an unreachable tracking server: had the folder check come later, this would be the error
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    target = tmp_path / "submissions.csv"
    target.write_text("not a folder")
    args = ["--run-id", "x", "--raw-dir", str(synthetic_root / "raw"), "--out-dir", str(target)]
    assert submit.main([*args, "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --out-dir {target} is a file, not a folder; pass a folder path\n"
    assert not (tmp_path / "cache").exists()


def test_read_only_out_dir_is_named_before_anything_else(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import submit
    from helpers import read_only_folder

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    with read_only_folder(tmp_path / "submissions") as locked:
        args = ["--run-id", "x", "--raw-dir", str(synthetic_root / "raw"), "--out-dir", str(locked)]
        assert submit.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out-dir {locked} is not writable") and err.count("\n") == 1


def test_the_free_space_asked_for_is_the_largest_any_task_could_write(synthetic_root: Path, tmp_path: Path) -> None:
    """Each task sizes its own file (the script knows no task); the nerve CSV grows with test/*.tif, the ISBI
    stack with its slices, and a folder without a task's test data asks nothing for it."""
    import tifffile

    from nerveseg.submit.submission_file import expected_csv_bytes
    from nerveseg.tasks import get_task
    from nerveseg.tasks.isbi2012.submission import expected_stack_bytes
    from submit import expected_output_bytes

    raw = synthetic_root / "raw"
    n_test = len(list((raw / "test").glob("*.tif")))
    assert get_task("nerve").submission_bytes(raw) == expected_csv_bytes(n_test) > expected_csv_bytes(0)
    assert get_task("isbi2012").submission_bytes(raw) == 0 and get_task("toy").submission_bytes(raw) == 0
    assert expected_output_bytes(raw) == expected_csv_bytes(n_test)
    isbi = tmp_path / "raw" / "isbi2012"
    isbi.mkdir(parents=True)
    tifffile.imwrite(isbi / "test-volume.tif", np.zeros((30, 512, 512), np.uint8))
    assert expected_output_bytes(tmp_path / "raw") == expected_stack_bytes(30) > expected_csv_bytes(n_test)


@pytest.mark.parametrize(
    "names",
    [
        {"model": "models:/m@a", "run_id": "a" * 32},
        {"run_dir": Path("cv"), "run_id": "a" * 32},
        {"run_dir": Path("cv"), "model": "models:/m@a"},
        {"run_dir": Path("cv"), "task": "nerve"},
    ],
)
def test_a_submission_names_its_runs_one_way(names: dict, tmp_path: Path) -> None:
    """Two ways of naming the runs at once are refused before any store is opened or folder read."""
    from nerveseg.errors import NervesegError
    from nerveseg.run.submit import make_submission

    def no_store() -> None:
        raise AssertionError("the store was opened")

    with pytest.raises(NervesegError, match=r"drop|not both"):
        make_submission(no_store, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache", **names)


def test_kaggle_upload_is_refused_for_a_task_without_a_kaggle_competition(tmp_path: Path) -> None:
    """The task says whether its file goes to Kaggle (``kaggle_submission``): ISBI and toy files are refused in one
    line before the Kaggle client is touched."""
    from types import SimpleNamespace

    import submit
    from nerveseg.errors import NervesegError

    for task in ("isbi2012", "toy"):
        result = SimpleNamespace(
            task=task, csv_path=tmp_path / f"{task}.out", run_ids=["r"], cv_prediction=None, record_path=None
        )
        with pytest.raises(NervesegError, match=f"uploads nerve CSVs to Kaggle; .* is a {task} submission"):
            submit._upload(result, None)
