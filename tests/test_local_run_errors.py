"""The ``--run-dir`` options of the commands: misuse is one line and exit 2, before any data or model is read,
and the hints for a missing model say what works from either store (issue 24)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nerveseg.cli import USAGE_ERROR


def _error(main, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == USAGE_ERROR
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_cv_train_refuses_mlflow_options_with_a_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cv_train import main

    line = _error(main, ["--run-dir", str(tmp_path / "cv"), "--resume", "--register"], capsys)
    assert "drop --resume, --register" in line and not (tmp_path / "cv").exists()


def test_register_needs_out_with_a_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from register import main

    assert "--run-dir needs --out MODEL_DIR" in _error(main, ["--run-dir", str(tmp_path)], capsys)


def test_register_names_a_folder_that_is_no_localstore_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from register import main

    line = _error(main, ["--run-dir", str(tmp_path), "--out", str(tmp_path / "model")], capsys)
    assert f"{tmp_path} is not a LocalStore cross-validation folder" in line and not (tmp_path / "model").exists()


def test_register_never_writes_over_an_existing_model_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from register import main

    (tmp_path / "model").mkdir()
    line = _error(main, ["--run-dir", str(tmp_path), "--out", str(tmp_path / "model")], capsys)
    assert "already exists; a model folder is never overwritten" in line


def test_submit_refuses_task_with_a_run_dir_and_names_an_unfinished_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from submit import main

    out = ["--out-dir", str(tmp_path / "subs"), "--cache-dir", str(tmp_path / "cache")]
    assert "drop --task" in _error(main, ["--run-dir", str(tmp_path), "--task", "nerve", *out], capsys)
    (tmp_path / "parent.json").write_text('{"status": "RUNNING"}')
    line = _error(main, ["--run-dir", str(tmp_path), *out], capsys)
    assert "holds an unfinished cross-validation (RUNNING); finish it first" in line
    assert not (tmp_path / "subs").exists()


def test_a_model_that_cannot_be_loaded_says_what_works_from_either_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from predict import main

    image = tmp_path / "1.png"
    image.write_bytes(b"")
    line = _error(main, [str(image), "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "p")], capsys)
    assert "register.py --run-dir DIR --out MODEL_DIR" in line and "--model MODEL_DIR" in line
