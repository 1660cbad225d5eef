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


__all__ = ["ConfigError", "NervesegError"]
