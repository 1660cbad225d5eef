"""Small file helpers. Every file the project writes goes through one of these, so that an
interrupted run never leaves a half-written cache, fold file, config or submission behind.

A write goes to a hidden temporary file ``.<name>.<pid>.<random>.tmp`` beside its target and is renamed into
place; a process killed mid-write leaves that file behind, and the next write in the same folder removes it
(see :func:`remove_stale_temp_files`). Errors while writing name the target file, so a full disk is one line.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from nerveseg.errors import NervesegError

# ``.<target name>.<writer pid>.<mkstemp's 8 random characters>.tmp``: only files of exactly this shape are ever
# removed as leftovers of a killed write (never a user's own hidden file)
TEMP_NAME_RE = re.compile(r"\.(?P<target>.+)\.(?P<pid>[1-9]\d*)\.[A-Za-z0-9_]{8}\.tmp")
STALE_TEMP_AGE_S = 3600.0  # a temporary file untouched for an hour is stale even if its PID was reused
FULL_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def _temp_prefix(name: str) -> str:
    return f".{name}.{os.getpid()}."


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (one we may not signal still runs)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def remove_stale_temp_files(folder: Path | str, *, max_age_s: float = STALE_TEMP_AGE_S) -> list[Path]:
    """Remove the temporary files that killed writes of this module left in ``folder``; return them.

    A file counts as a leftover only when its name has this module's exact temporary-name shape
    (``TEMP_NAME_RE``) and its writer's PID no longer runs, or it was not modified for ``max_age_s``
    (the PID may have been reused, or the folder is shared with another machine). Nothing else is touched.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed  # a missing or unreadable folder has nothing of ours to clean
    now = time.time()
    for entry in entries:
        match = TEMP_NAME_RE.fullmatch(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        try:
            old = now - entry.stat(follow_symlinks=False).st_mtime > max_age_s
            if old or not process_alive(int(match["pid"])):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue  # removed by someone else meanwhile, or not ours to remove
    return removed


def _with_path(err: OSError, path: Path) -> OSError | NervesegError:
    """``err`` raised while writing ``path``, as an error naming ``path`` (a full disk: a one-line NervesegError)."""
    if err.errno in FULL_DISK_ERRNOS:
        return NervesegError(f"{path}: {full_disk_hint(err)}")
    if err.filename is not None:
        return err
    return OSError(err.errno, err.strerror or str(err), str(path))


def full_disk_hint(err: OSError) -> str:
    """What to do about ENOSPC/EDQUOT, in a few words."""
    return f"{err.strerror or 'no space left'} while writing; free space on that disk or write to another folder"


@contextlib.contextmanager
def _atomic_open(path: Path | str, *, overwrite: bool = True) -> Iterator[BinaryIO]:
    """A binary handle on a temporary file beside ``path``, flushed to disk and renamed into place when
    the block ends; if it raises, the temporary file is removed and ``path`` is left as it was.

    With ``overwrite=False`` the file is hard-linked into place instead, which fails atomically with
    ``FileExistsError`` when ``path`` already exists (so two writers can never replace each other's file).
    An ``OSError`` without a file name (ENOSPC at flush, say) is re-raised naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path.name), suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600 files; give them the usual permissions
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
    except FileExistsError:
        raise
    except OSError as err:
        raise _with_path(err, path) from err
    finally:
        Path(tmp).unlink(missing_ok=True)


def _link_new(tmp: str, path: Path) -> None:
    """Hard-link ``tmp`` to ``path``; an existing ``path`` is a ``FileExistsError`` naming ``path`` itself (the
    kernel's names the temporary file, which is gone by the time anybody reads the message)."""
    try:
        os.link(tmp, path)
    except FileExistsError as err:
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from err


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


def _nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (where a folder to be created would live)."""
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def check_writable_dir(folder: Path | str, what: str) -> Path:
    """Prove that files can be written in ``folder`` BEFORE any expensive work starts; creates nothing.

    An existing folder must take a (temporary, one-byte) file; a missing one must have a writable nearest
    existing parent folder (it is created later, when something is written). Raises ``NervesegError``
    naming ``what`` (e.g. "--out-dir") and the path, so a long prediction or training never ends in a
    PermissionError, and a file passed where a folder belongs is named as such.
    """
    folder = Path(folder)
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        where = "is a file" if existing == folder else f"lies under {existing}, which is a file"
        raise NervesegError(f"{what} {folder} {where}, not a folder; pass a folder path")
    try:
        if existing == folder:
            remove_stale_temp_files(folder)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=_temp_prefix("write-check"), suffix=".tmp") as probe:
                probe.write(b"x")  # one byte: a full disk still creates empty files, it refuses data
                probe.flush()
        elif not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied", str(existing))
    except OSError as err:
        if err.errno in FULL_DISK_ERRNOS:
            raise NervesegError(f"{what} {folder}: {full_disk_hint(err)}") from err
        reason = err.strerror or type(err).__name__
        raise NervesegError(
            f"{what} {folder} is not writable ({reason} in {existing}); fix its permissions or pass another folder"
        ) from err
    return folder


def check_free_space(folder: Path | str, needed_bytes: int, what: str) -> None:
    """Refuse, before any work, to write about ``needed_bytes`` into ``folder`` when its disk has less free.

    ``what`` names the option (e.g. "--out-dir"). The estimate is the caller's; 1 MiB is added for the
    file system's own blocks and the temporary copy's metadata.
    """
    folder = Path(folder)
    free = shutil.disk_usage(_nearest_existing(folder)).free
    needed = int(needed_bytes) + (1 << 20)
    if free < needed:
        raise NervesegError(
            f"{what} {folder}: {_mb(free)} free, the output needs about {_mb(needed)}; "
            "free space on that disk or pass another folder"
        )


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def check_outside(
    folder: Path | str, protected: Path | str, what: str, protected_what: str = "the raw data folder"
) -> Path:
    """Refuse an output ``folder`` (or file) that is ``protected`` or lies inside it (the raw data, which is never
    written): ``what`` names the option. Symbolic links are resolved, so a link into the raw folder is caught too."""
    folder, protected = Path(folder), Path(protected)
    resolved, guarded = _resolved(folder), _resolved(protected)
    if resolved == guarded or guarded in resolved.parents:
        raise NervesegError(
            f"{what} {folder} lies inside {protected_what} {protected}, which is never written; "
            "pass a path outside it (e.g. data/processed or submissions/)"
        )
    return folder


def _resolved(path: Path) -> Path:
    """``path`` with links resolved; a link loop (RuntimeError before Python 3.13) keeps its absolute form."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(path))


@contextlib.contextmanager
def file_lock(path: Path | str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block: other processes wait.

    The kernel releases it when the process dies, so a killed holder never leaves it locked. Locks on the
    same file taken twice in one process do NOT nest (the second waits forever): use one per purpose.
    """
    import fcntl

    path = Path(path)
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def read_bounded(path: Path, max_bytes: int, too_large: str, error: type[Exception]) -> bytes:
    """A file's bytes; one larger than ``max_bytes`` is refused unread (``error``: "<path>: is N MB, <too_large>"),
    and an ``OSError`` becomes ``error`` naming the file, so a reader of user files never shows a traceback."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > max_bytes:
                raise error(f"{path}: is {size / 1e6:.1f} MB, {too_large}")
            return handle.read()
    except OSError as err:
        raise error(f"{path}: cannot be read ({err.strerror}); check the file and its permissions") from err
