"""Quiet, readable console output for the command-line scripts: TensorFlow's start-up noise hidden by default,
and progress bars that stay readable when stderr is a log file.

TensorFlow 2.21 prints about seven lines on every start (oneDNN and CUDA notices, twice, plus a cuInit error on
a machine without a GPU). ``TF_CPP_MIN_LOG_LEVEL`` hides only some of them: the rest come from absl logging
before it is initialised, which ignores every threshold (abseil/abseil-cpp#1957), so they are filtered out of
stderr around the import instead. ``TF_ENABLE_ONEDNN_OPTS=0`` would hide one line too, but halves CPU speed.

A tqdm bar redraws itself with carriage returns; in a file those pile up on one line and the next message is
glued to its end. ``progress_bar`` therefore writes one plain line per update (at most every 30 s) when its
stream is not a terminal. Nothing here runs on import: the scripts call these functions in ``main``.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from tqdm import tqdm
from tqdm.auto import tqdm as terminal_tqdm

# Lines TensorFlow prints on every start that say nothing about this run. Anything else is passed through.
TENSORFLOW_NOISE = tuple(
    re.compile(pattern)
    for pattern in (
        r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
        r"port\.cc:\d+\] oneDNN custom operations are on",
        r"cudart_stub\.cc:\d+\] Could not find cuda drivers",
        r"cuda_platform\.cc:\d+\] failed call to cuInit",
        r"cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized",
        r"^To enable the following instructions: .*rebuild TensorFlow",
        r"Unable to register cu(DNN|FFT|BLAS) factory",
    )
)
NON_TERMINAL_INTERVAL_S = 30.0  # a progress line at most this often when stderr is a file
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@contextlib.contextmanager
def drop_stderr_lines(patterns: Iterable[re.Pattern[str]]) -> Iterator[None]:
    """Capture file descriptor 2 (C++ libraries write there directly) and, when the block ends, pass on every
    captured line that matches none of ``patterns``. Errors raised in the block still show their output."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode("utf-8", errors="replace").splitlines(keepends=True)
            kept = [line for line in lines if not any(p.search(line) for p in patterns)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def quiet_tensorflow(verbose: bool = False, *, import_now: bool = True) -> None:
    """Hide TensorFlow's C++ start-up noise unless ``verbose``; call it before anything imports TensorFlow.

    Sets ``TF_CPP_MIN_LOG_LEVEL=2`` (warnings and errors of TensorFlow's own logging still show) and turns
    off MLflow's per-artifact download bars; a value the user exported wins for both. With ``import_now``
    it imports TensorFlow and probes its devices (where the cuInit line comes from) while the known noise
    lines are filtered out of stderr. Scripts that never load TensorFlow pass ``import_now=False``. With
    ``verbose`` nothing is changed: every line shows.
    """
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # MLflow draws one carriage-return bar per downloaded artifact: dozens glued together in a log file
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if not import_now or "tensorflow" in sys.modules:
        return
    with drop_stderr_lines(TENSORFLOW_NOISE):
        import tensorflow as tf

        tf.config.list_physical_devices()


class _LineStream:
    """A file-like wrapper that turns tqdm's carriage-return redraws into whole lines, dropping repeated counts."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.last = ""

    def write(self, text: str) -> int:
        for part in re.split(r"[\r\n]", _ANSI_ESCAPE.sub("", text)):
            line = part.rstrip()
            progress = line.split(" [", 1)[0]  # the count without the timing, which changes on every redraw
            if line and progress != self.last:
                self.stream.write(line + "\n")
                self.last = progress
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def progress_bar(iterable: Iterable[Any] | None = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)`` on a terminal; on a file or pipe, the same bar as plain lines that never
    run into the next message: one at the start, at most one per ``NON_TERMINAL_INTERVAL_S``, one at the end
    (kept even with ``leave=False``, so the log records that the step finished)."""
    stream = kwargs.pop("file", None) or sys.stderr
    if _is_terminal(stream):
        return terminal_tqdm(iterable, file=stream, **kwargs)
    kwargs.setdefault("mininterval", NON_TERMINAL_INTERVAL_S)
    kwargs["maxinterval"] = max(kwargs["mininterval"], kwargs.get("maxinterval", 10.0))
    kwargs["leave"] = True
    kwargs.setdefault("ascii", True)  # log viewers and `less` show "#" reliably, block characters less so
    return tqdm(iterable, file=_LineStream(stream), dynamic_ncols=False, **kwargs)
