"""Pure helpers for database and server URIs, shared by tracking (MLflow) and tuning (Optuna storage).

No mlflow, optuna or SQLAlchemy import: ``track/`` and ``tune/`` both use these, and neither should
carry its own copy of "where is the SQLite file" or "hide the password".
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from nerveseg.io_utils import file_lock


def redact_uri(uri: str) -> str:
    """The URI with any password replaced by ``***`` (safe for messages, logs and run tags)."""
    try:
        parts = urllib.parse.urlsplit(uri)
        password = parts.password
    except ValueError:  # e.g. a malformed port: nothing we can parse, nothing we can hide reliably
        return uri
    if password is None:
        return uri
    netloc = parts.netloc.replace(f":{password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative or absolute), or None for in-memory and
    non-SQLite URIs. ``sqlite:///relative.db`` -> ``relative.db``; ``sqlite:////abs.db`` -> ``/abs.db``."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme.split("+")[0] != "sqlite":
        return None
    rest = rest.split("?", 1)[0]
    if not rest.startswith("/") or rest in ("/", "/:memory:"):
        return None
    return Path(rest[1:])


@contextlib.contextmanager
def sqlite_schema_lock(uri: str) -> Iterator[None]:
    """For a SQLite ``uri``, hold ``<db>.schema.lock`` beside the database during the block; else do nothing.

    MLflow and Optuna create their tables (and run migrations) when a store is first opened, and two
    processes doing that at once on a new file fail ("index ... already exists", "duplicate column name").
    Opening the store inside this lock makes the first one create the schema and the others find it. The
    lock file differs from tune's study lock (``<db>.lock``), which is held around opening the Optuna store.
    """
    database = sqlite_path(uri)
    if database is None:
        yield
        return
    with file_lock(database.with_name(database.name + ".schema.lock")):
        yield


__all__ = ["redact_uri", "sqlite_path", "sqlite_schema_lock"]
