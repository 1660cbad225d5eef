"""Quiet TensorFlow start-up and progress bars that stay readable in log files."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nerveseg import logs

SRC = Path(__file__).resolve().parents[1] / "src"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_writes_whole_lines_to_a_file() -> None:
    stream = io.StringIO()
    with logs.progress_bar(total=5, desc="predict", unit="img", file=stream, leave=False) as bar:
        for _ in range(5):
            bar.update(1)
    stream.write("next message\n")
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines[0].startswith("predict:") and "0/5" in lines[0]
    assert lines[-2].startswith("predict: 100%") and "5/5" in lines[-2]  # the end is logged even with leave=False
    assert lines[-1] == "next message"  # not glued to the bar
    assert len(lines) == len(set(lines)) <= 4  # no repeated line, not one line per update


def test_progress_bar_wraps_an_iterable_and_can_be_disabled() -> None:
    stream = io.StringIO()
    assert list(logs.progress_bar(range(3), desc="x", file=stream)) == [0, 1, 2]
    assert "3/3" in stream.getvalue().splitlines()[-1]
    silent = io.StringIO()
    assert list(logs.progress_bar(range(3), file=silent, disable=True)) == [0, 1, 2]
    assert silent.getvalue() == ""


def test_progress_bar_on_a_terminal_is_plain_tqdm() -> None:
    stream = Terminal()
    for _ in logs.progress_bar(range(3), desc="x", file=stream, mininterval=0):
        pass
    assert "\r" in stream.getvalue()  # redrawn in place, as on any terminal


def test_drop_stderr_lines_filters_file_descriptor_2(capfd: pytest.CaptureFixture[str]) -> None:
    with logs.drop_stderr_lines(logs.TENSORFLOW_NOISE):
        os.write(2, b"W0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on. You may see...\n")
        os.write(2, b"a real warning\n")
    assert capfd.readouterr().err == "a real warning\n"
    with pytest.raises(RuntimeError), logs.drop_stderr_lines([re.compile("noise")]):
        os.write(2, b"noise\nwhy it failed\n")
        raise RuntimeError("boom")
    assert capfd.readouterr().err == "why it failed\n"


def test_quiet_tensorflow_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    logs.quiet_tensorflow(verbose=True, import_now=False)
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ  # --verbose: TensorFlow's own default, every line
    assert "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" not in os.environ
    logs.quiet_tensorflow(import_now=False)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"  # no glued download bars in logs
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    logs.quiet_tensorflow(import_now=False)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"  # the user's choice wins
    assert "TF_ENABLE_ONEDNN_OPTS" not in os.environ  # it would halve CPU speed


@pytest.mark.slow
@pytest.mark.parametrize("verbose", [False, True])
def test_tensorflow_start_is_quiet_unless_verbose(verbose: bool) -> None:
    code = (
        "from nerveseg.logs import quiet_tensorflow\n"
        f"quiet_tensorflow({verbose})\n"
        "import tensorflow as tf\n"
        "print(float(tf.reduce_sum(tf.ones(3))))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    env["PYTHONPATH"] = str(SRC)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "3.0\n"
    noisy = [line for line in done.stderr.splitlines() if any(p.search(line) for p in logs.TENSORFLOW_NOISE)]
    if verbose:
        assert noisy, "with --verbose TensorFlow's start-up lines show again"
    else:
        assert done.stderr == "", done.stderr
