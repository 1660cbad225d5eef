"""Small file helpers. Every file the project writes goes through one of these, so that an
interrupted run never leaves a half-written cache, fold file, config or submission behind."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np


@contextlib.contextmanager
def _atomic_open(path: Path | str, *, overwrite: bool = True) -> Iterator[BinaryIO]:
    """A binary handle on a temporary file beside ``path``, flushed to disk and renamed into place when
    the block ends; if it raises, the temporary file is removed and ``path`` is left as it was.

    With ``overwrite=False`` the file is hard-linked into place instead, which fails atomically with
    ``FileExistsError`` when ``path`` already exists (so two writers can never replace each other's file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600 files; give them the usual permissions
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def current_umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place."""
    with _atomic_open(path) as handle:
        handle.write(data)


def atomic_create_bytes(path: Path | str, data: bytes) -> None:
    """Atomically write ``data`` to a NEW file; ``FileExistsError`` if ``path`` exists."""
    with _atomic_open(path, overwrite=False) as handle:
        handle.write(data)


def atomic_create_text(path: Path | str, text: str) -> None:
    """Atomically write ``text`` (UTF-8) to a NEW file; ``FileExistsError`` if ``path`` exists."""
    with _atomic_open(path, overwrite=False) as handle:
        handle.write(text.encode("utf-8"))


def atomic_write_text(path: Path | str, text: str) -> None:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_npz(path: Path | str, **arrays: np.ndarray) -> None:
    """Atomically save an uncompressed ``.npz`` (uncompressed loads fastest; caches are big but local)."""
    with _atomic_open(path) as handle:
        np.savez(handle, **arrays)


def sha256_file(path: Path | str, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks so large files do not fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def check_writable_dir(folder: Path | str, what: str) -> Path:
    """Prove that files can be written in ``folder`` BEFORE any expensive work starts; creates nothing.

    An existing folder must take a (temporary) file; a missing one must have a writable nearest
    existing parent folder (it is created later, when something is written). Raises ``NervesegError``
    naming ``what`` (e.g. "--out-dir") and the path, so a long prediction or training never ends in a
    PermissionError, and a file passed where a folder belongs is named as such.
    """
    from nerveseg.errors import NervesegError

    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == folder else f"lies under {existing}, which is a file"
        raise NervesegError(f"{what} {folder} {where}, not a folder; pass a folder path")
    try:
        if existing == folder:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
                pass
        elif not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied", str(existing))
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise NervesegError(
            f"{what} {folder} is not writable ({reason} in {existing}); fix its permissions or pass another folder"
        ) from err
    return folder
