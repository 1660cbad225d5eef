"""What the command-line scripts in ``src/`` share: bad input ends in one ``error: ...`` line and exit 2.

Only the user's errors get one line: :class:`~nerveseg.errors.NervesegError` (config, arguments, data,
tracking, search space, submission inputs) and ``OSError``s about one of the user's paths (no
permission, not a folder, already exists, read-only or full disk). Every other exception, a plain
``ValueError`` from NumPy or Keras included, is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, ParamSpec

from nerveseg import names
from nerveseg.errors import NervesegError
from nerveseg.io_utils import FULL_DISK_ERRNOS, check_outside
from nerveseg.paths import FOLDS_DIR, PROCESSED_DIR, RAW_DIR

P = ParamSpec("P")

USAGE_ERROR = 2  # bad input, the status argparse uses for bad arguments
RAW_HELP = "the data: nerve <raw-dir>/train (and test) *.tif, isbi2012 <raw-dir>/isbi2012, toy <raw-dir>/train.npz"
INTERRUPTED = 130  # 128 + SIGINT: what a shell reports after Ctrl-C

_PATH_ERRORS = (PermissionError, NotADirectoryError, IsADirectoryError, FileExistsError)
_PATH_ERRNOS = {errno.EROFS}


class ArgumentParser(argparse.ArgumentParser):
    """Every script's parser: a bad argument is one ``error: ...`` line naming the script (exit 2), like every other
    user error, instead of argparse's usage block; ``--help`` still shows the whole usage."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(USAGE_ERROR)


def user_path_error(err: BaseException) -> str | None:
    """One line for an ``OSError`` about a path the user chose, or None when ``err`` is something else.

    A full disk is the user's problem even when the library that wrote (MLflow copying an artifact, say)
    lost the file name: that line names no file but says which disks to look at.
    """
    if not isinstance(err, OSError):
        return None
    if err.errno in FULL_DISK_ERRNOS:
        where = err.filename if err.filename is not None else "a disk is full"
        hint = "free space on the disk of the output, cache or tracking store (MLflow artifacts) and run again"
        return f"{where}: {err.strerror or 'no space left on device'}; {hint}"
    if err.filename is None:
        return None
    if not isinstance(err, _PATH_ERRORS) and err.errno not in _PATH_ERRNOS:
        return None
    reason = err.strerror or type(err).__name__
    return f"{err.filename}: {reason}; check the path and its permissions, or pass another one"


def one_line_errors(*, interrupted: str | None = None) -> Callable[[Callable[P, int]], Callable[P, int]]:
    """Decorate a script's ``main`` so that user errors print ``error: <message>`` to stderr and return 2.

    With ``interrupted``, Ctrl-C prints that line to stderr and returns 130; without, it propagates.
    """

    def decorate(main: Callable[P, int]) -> Callable[P, int]:
        @functools.wraps(main)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> int:
            try:
                return main(*args, **kwargs)
            except NervesegError as err:
                print(f"error: {err}", file=sys.stderr)
                return USAGE_ERROR
            except OSError as err:
                line = user_path_error(err)
                if line is None:
                    raise
                print(f"error: {line}", file=sys.stderr)
                return USAGE_ERROR
            except KeyboardInterrupt:
                if interrupted is None:
                    raise
                print(interrupted, file=sys.stderr)
                return INTERRUPTED

        return wrapper

    return decorate


def add_registry_options(parser: argparse.ArgumentParser) -> None:
    """``--model-name`` and ``--alias`` of the model registry (``register.py``, ``cv_train.py --register``).

    Both default to None, so that a command can tell an option given from one left out; ``registry_choice``
    fills in the defaults.
    """
    parser.add_argument("--model-name", help=f"registered model name ({names.REGISTERED_MODEL})")
    parser.add_argument("--alias", help=f"alias moved to the new version ({names.CHAMPION_ALIAS})")


def registry_choice(args: argparse.Namespace) -> dict[str, str]:
    """The registered model's ``name`` and ``alias`` as ``add_registry_options`` parsed them, defaults filled in."""
    return {"name": args.model_name or names.REGISTERED_MODEL, "alias": args.alias or names.CHAMPION_ALIAS}


def add_data_folders(parser: argparse.ArgumentParser, raw_help: str = RAW_HELP, *, folds: bool = True) -> None:
    """``--raw-dir`` (``raw_help``: what the command reads there), ``--cache-dir`` and, with ``folds``,
    ``--folds-dir``: one definition of the folders of every command that reads the data."""
    parser.add_argument("--raw-dir", type=Path, default=RAW_DIR, help=f"{raw_help} ({RAW_DIR})")
    parser.add_argument(
        "--cache-dir", type=Path, default=PROCESSED_DIR, help=f"where decoded arrays are cached ({PROCESSED_DIR})"
    )
    if folds:
        parser.add_argument(
            "--folds-dir", type=Path, default=FOLDS_DIR, help=f"where fold splits are kept ({FOLDS_DIR})"
        )


def add_verbose(parser: argparse.ArgumentParser) -> None:
    """``--verbose``: TensorFlow's start-up and C++ log lines, which ``logs.quiet_tensorflow`` hides otherwise."""
    parser.add_argument(
        "--verbose", action="store_true", help="show TensorFlow's start-up and C++ log lines (hidden by default)"
    )


def check_outside_raw(args: argparse.Namespace, *options: str) -> None:
    """Derived data never goes into the raw data: each folder of ``options`` (``--cache-dir``...) must lie outside
    ``--raw-dir`` (one line naming the option otherwise)."""
    for option in options:
        check_outside(getattr(args, option[2:].replace("-", "_")), args.raw_dir, option)
