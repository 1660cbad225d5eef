"""The narrow error channel: user errors get one line and exit 2, bugs keep their traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nerveseg.cli import USAGE_ERROR, one_line_errors
from nerveseg.config import load_config
from nerveseg.errors import ConfigError, NervesegError

ROOT = Path(__file__).resolve().parents[1]


def test_a_nerveseg_error_prints_one_line_and_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    @one_line_errors()
    def main() -> int:
        raise ConfigError("config file x.yaml: epochs=0 is out of range")

    assert main() == USAGE_ERROR
    err = capsys.readouterr().err
    assert err == "error: config file x.yaml: epochs=0 is out of range\n"


def test_a_plain_value_error_from_numpy_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ValueError raised deep inside a library is a bug: it propagates (traceback, exit status 1)."""

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("operands could not be broadcast together")

    monkeypatch.setattr(np, "concatenate", broken)

    @one_line_errors()
    def main() -> int:
        np.concatenate([np.zeros(2), np.zeros(3)])
        return 0

    with pytest.raises(ValueError, match="broadcast"):
        main()


def test_a_bug_in_a_script_exits_non_2_with_a_traceback(tmp_path: Path) -> None:
    """End to end through a real script: score.py on a CSV whose reading fails inside pandas."""
    script = (
        "import sys, pandas\n"
        "sys.path.insert(0, 'src')\n"
        "def broken(*a, **k):\n"
        "    raise ValueError('deep inside pandas')\n"
        "pandas.read_csv = broken\n"
        "import runpy\n"
        "sys.argv = ['score.py', sys.argv[1], '--masks', sys.argv[2]]\n"
        "runpy.run_path('src/score.py', run_name='__main__')\n"
    )
    csv = tmp_path / "s.csv"
    csv.write_text("img,pixels\n1,\n")
    done = subprocess.run(
        [sys.executable, "-c", script, str(csv), str(tmp_path)], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode not in (0, USAGE_ERROR)
    assert "Traceback" in done.stderr and "deep inside pandas" in done.stderr


def test_a_permission_error_on_a_user_path_names_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "submissions"

    @one_line_errors()
    def main() -> int:
        raise PermissionError(13, "Permission denied", str(target))

    assert main() == USAGE_ERROR
    err = capsys.readouterr().err
    assert err.startswith(f"error: {target}: Permission denied") and err.count("\n") == 1


def test_an_oserror_without_a_path_keeps_its_traceback() -> None:
    @one_line_errors()
    def main() -> int:
        raise ConnectionResetError(104, "Connection reset by peer")

    with pytest.raises(ConnectionResetError):
        main()


def test_user_errors_are_value_errors_for_old_callers() -> None:
    from nerveseg.data.raw import DataError
    from nerveseg.track.store import TrackingError

    for error in (ConfigError, DataError, TrackingError):
        assert issubclass(error, NervesegError) and issubclass(error, ValueError)


def test_epochs_0_on_the_command_line_is_blamed_on_the_option_not_the_file() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(ROOT / "experiments" / "baseline.yaml", epochs=0)
    message = str(caught.value)
    assert message.startswith("override epochs=0 (command line")
    assert not message.startswith("config file")


def test_a_bad_config_file_is_still_blamed_on_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 0\n")
    with pytest.raises(ConfigError, match=rf"^config file {bad}: "):
        load_config(bad, epochs=3)


@pytest.mark.slow
@pytest.mark.parametrize("script", ["cv_train.py", "tune.py"])
def test_config_errors_answer_before_tensorflow_loads(script: str, tmp_path: Path) -> None:
    """The script's main is called in a fresh interpreter; TensorFlow must not have been imported."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: -1\n")
    extra = ["--study", "s", "--trials", "1"] if script == "tune.py" else []
    probe = (
        "import runpy, sys\n"
        "sys.path.insert(0, 'src')\n"
        f"main = runpy.run_path('src/{script}')['main']\n"
        "code = main(sys.argv[1:])\n"
        "print('tensorflow loaded' if 'tensorflow' in sys.modules else 'tensorflow not loaded')\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, "--config", str(bad), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == USAGE_ERROR, done.stderr
    assert f"error: config file {bad}" in done.stderr
    assert "tensorflow not loaded" in done.stdout


@pytest.mark.parametrize("script", sorted(path.name for path in (ROOT / "src").glob("*.py")))
def test_every_script_answers_a_bad_argument_in_one_line_naming_itself(
    script: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """argparse's usage block would be several lines; every script's parser (cli.ArgumentParser) gives one."""
    import runpy

    monkeypatch.setattr(sys, "argv", [f"src/{script}"])  # argparse names the script after argv[0]
    main = runpy.run_path(str(ROOT / "src" / script))["main"]
    with pytest.raises(SystemExit) as stop:
        main(["--no-such-option"])
    assert stop.value.code == USAGE_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and err.endswith(f" (see {script} --help)\n")
