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
from typing import ParamSpec

from nerveseg import names
from nerveseg.errors import NervesegError
from nerveseg.io_utils import FULL_DISK_ERRNOS

P = ParamSpec("P")

USAGE_ERROR = 2  # bad input, the status argparse uses for bad arguments
INTERRUPTED = 130  # 128 + SIGINT: what a shell reports after Ctrl-C

_PATH_ERRORS = (PermissionError, NotADirectoryError, IsADirectoryError, FileExistsError)
_PATH_ERRNOS = {errno.EROFS}


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
