"""submit.py refuses unusable output folders in one line, before the tracking store or any prediction."""

from __future__ import annotations

from pathlib import Path

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
