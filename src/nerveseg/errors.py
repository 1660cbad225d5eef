"""The project's user-error channel: what a command reports in one line, without a traceback.

Everything raised because of the user's input (a config file, an argument, the data, the tracking
store, a search space, a submission) derives from :class:`NervesegError`. A plain ``ValueError``
from inside NumPy or Keras is a bug and keeps its traceback (see ``nerveseg.cli.one_line_errors``).
``NervesegError`` is a ``ValueError`` so that callers and tests that expect ``ValueError`` still work.
"""

from __future__ import annotations


class NervesegError(ValueError):
    """Bad user input or setup; the message names what was passed, what was expected and how to fix it."""


class ConfigError(NervesegError):
    """An experiment config (YAML file or command-line override) is invalid."""


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message (its class name when it has none): what a one-line error quotes of a
    library's multi-line message."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def is_interruption(err: BaseException) -> bool:
    """True for Ctrl-C, also when a library re-raised it as another error.

    Keras can turn a ``KeyboardInterrupt`` raised inside a callback into ``SystemError`` ("error return
    without exception set" / "... KeyboardInterrupt"); the original then sits in the exception chain.
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        if isinstance(current, SystemError) and "KeyboardInterrupt" in str(current):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


__all__ = ["ConfigError", "NervesegError", "is_interruption"]
