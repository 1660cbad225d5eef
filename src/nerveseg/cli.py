"""What the command-line scripts in ``src/`` share: bad input ends in one ``error: ...`` line and exit 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import ParamSpec

P = ParamSpec("P")

USAGE_ERROR = 2  # bad input, the status argparse uses for bad arguments
INTERRUPTED = 130  # 128 + SIGINT: what a shell reports after Ctrl-C


def one_line_errors(
    *errors: type[Exception], interrupted: str | None = None
) -> Callable[[Callable[P, int]], Callable[P, int]]:
    """Decorate a script's ``main`` so that ``errors`` (default: ``ValueError``, which ``DataError`` and
    ``TrackingError`` are) print ``error: <message>`` to stderr, without a traceback, and return 2.

    With ``interrupted``, Ctrl-C prints that line to stderr and returns 130; without, it propagates.
    """
    caught = errors or (ValueError,)

    def decorate(main: Callable[P, int]) -> Callable[P, int]:
        @functools.wraps(main)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> int:
            try:
                return main(*args, **kwargs)
            except caught as err:
                print(f"error: {err}", file=sys.stderr)
                return USAGE_ERROR
            except KeyboardInterrupt:
                if interrupted is None:
                    raise
                print(interrupted, file=sys.stderr)
                return INTERRUPTED

        return wrapper

    return decorate
