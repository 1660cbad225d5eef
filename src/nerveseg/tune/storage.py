"""The Optuna storage that every worker of a study shares: reaching it, locking it, and running
exactly N trials in it.

Optuna's ``MaxTrialsCallback`` only stops a worker *after* a trial ends, so with W workers a study
can overshoot by up to W-1 trials. Here each worker checks the count and creates its next trial
while holding a lock shared by all workers of the study (a PostgreSQL/MySQL advisory lock, or a
file lock beside a SQLite file), so the study ends with exactly N trials (see :func:`optimize_exactly`).
"""

from __future__ import annotations

import hashlib
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nerveseg.config import shown
from nerveseg.errors import NervesegError, first_line
from nerveseg.uris import redact_uri, sqlite_path, sqlite_schema_lock

# Heartbeats let a live worker mark a dead worker's RUNNING trial as FAIL (it still counts towards N).
HEARTBEAT_INTERVAL_S = 60
HEARTBEAT_GRACE_S = 300
INTERRUPTED_ATTR = "interrupted"  # trial user attr: FAILED by Ctrl-C, so not counted against --trials


def with_installed_driver(url: str) -> str:
    """``postgresql://...`` with the driver that requirements.txt installs (psycopg2).

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, which is not installed, so the usual
    URL would fail with an import error deep inside SQLAlchemy; an explicit driver is kept as given.
    """
    scheme, sep, rest = url.partition("://")
    return f"postgresql+psycopg2://{rest}" if sep and scheme in {"postgresql", "postgres"} else url


def _engine(url: str) -> Any:
    """A SQLAlchemy engine for ``url``, not connected yet; ``NervesegError`` for a URL that cannot name a
    database (bad form, unknown scheme, missing driver)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    try:
        backend = make_url(url).get_backend_name()
    except Exception as err:
        raise NervesegError(
            f"--storage {redact_uri(url)!r} is not a database URL ({err}); e.g. sqlite:///experiments/optuna.db "
            "or postgresql://user:password@host:5432/optuna"
        ) from None
    connect_args = {"connect_timeout": 10} if backend in {"postgresql", "mysql"} else {}
    try:
        return create_engine(url, connect_args=connect_args)
    except Exception as err:  # an unknown scheme (NoSuchModuleError), a missing driver (ImportError)...
        raise NervesegError(
            f"--storage {redact_uri(url)} cannot be used ({type(err).__name__}: {shown(str(err), 120)}); "
            "e.g. sqlite:///experiments/optuna.db or postgresql://user:password@host:5432/optuna"
        ) from None


def check_storage_url(url: str) -> None:
    """Only the URL's form, scheme and driver, in one line: no connection is made and no file is created."""
    _engine(url).dispose()


def check_storage(url: str) -> None:
    """Fail fast, in one line, when the Optuna storage cannot be reached (before any trial runs)."""
    from sqlalchemy import text

    engine = _engine(url)
    database = sqlite_path(url)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as err:
        raise NervesegError(
            f"cannot reach Optuna storage {redact_uri(url)}: {first_line(err)}; start the database or fix --storage"
        ) from None
    finally:
        engine.dispose()


class StudyLock:
    """A lock shared by every worker of one study, used around "count trials, then create one".

    PostgreSQL and MySQL get a server-side advisory lock (released by the server if a worker
    dies), SQLite a ``flock`` on ``<db>.lock`` beside the database file (SQLite is single-host
    anyway), anything else a process-local lock (exact N then holds only within one process).
    """

    def __init__(self, storage_url: str, study_name: str) -> None:
        from sqlalchemy.engine import make_url

        self.storage_url = storage_url
        self.study_name = study_name
        self._backend = make_url(storage_url).get_backend_name()
        self._key = int.from_bytes(
            hashlib.sha256(f"nerveseg-tune:{study_name}".encode()).digest()[:8], "big", signed=True
        )
        self._engine: Any = None
        self._conn: Any = None
        self._file: Any = None
        self._thread_lock = threading.Lock()
        self.held = False

    def acquire(self) -> None:
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        self._thread_lock.acquire()
        try:
            if self._backend in {"postgresql", "mysql"}:
                if self._engine is None:
                    self._engine = create_engine(self.storage_url, poolclass=NullPool)
                if self._conn is None:
                    self._conn = self._engine.connect()
                if self._backend == "postgresql":
                    self._conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": self._key})
                else:
                    self._conn.execute(text("SELECT GET_LOCK(:name, -1)"), {"name": f"nerveseg-{self._key}"})
                self._conn.commit()
            else:
                database = sqlite_path(self.storage_url)
                if database is not None:
                    import fcntl

                    lock_path = database.with_name(database.name + ".lock")
                    self._file = open(lock_path, "a+")  # noqa: SIM115 - held across calls, closed in release()
                    fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise
        self.held = True

    def release(self) -> None:
        if not self.held:
            return
        from sqlalchemy import text

        try:
            if self._conn is not None:
                if self._backend == "postgresql":
                    self._conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self._key})
                else:
                    self._conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": f"nerveseg-{self._key}"})
                self._conn.commit()
            if self._file is not None:
                import fcntl

                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
                self._file.close()
                self._file = None
        finally:
            self.held = False
            self._thread_lock.release()

    def __enter__(self) -> StudyLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def close(self) -> None:
        """Drop the lock's database connection (the server frees any lock still held with it)."""
        self.release()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def make_storage(url: str) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats (a dead worker's RUNNING trial becomes FAIL) and pre-ping
    (a connection idle through an hour-long trial may have been dropped by the server); opened under the
    schema lock so that workers starting together on a new SQLite file do not race to create its tables."""
    with warnings.catch_warnings(), sqlite_schema_lock(url):  # a new SQLite file: one worker creates the tables
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs={"pool_pre_ping": True},
            heartbeat_interval=HEARTBEAT_INTERVAL_S,
            grace_period=HEARTBEAT_GRACE_S,
        )


def is_counted(trial: FrozenTrial) -> bool:
    """Whether a trial counts towards ``--trials``: every trial but WAITING ones (RUNNING included) and
    those FAILED because the user interrupted them (Ctrl-C is not a result).

    A WAITING (enqueued) trial is popped by ``ask`` instead of creating a new one, so running it
    does not change this count.
    """
    return trial.state != TrialState.WAITING and not (
        trial.state == TrialState.FAIL and trial.user_attrs.get(INTERRUPTED_ATTR)
    )


def count_counted_trials(study: optuna.Study) -> int:
    """The study's trials that count towards ``--trials`` (``is_counted``)."""
    return sum(map(is_counted, study.get_trials(deepcopy=False)))


def optimize_exactly(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    n_trials: int,
    lock: StudyLock,
    *,
    timeout: float | None = None,
    catch: tuple[type[Exception], ...] = (Exception,),
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
    should_stop: Callable[[], bool] | None = None,
) -> int:
    """Run trials until the study holds exactly ``n_trials`` (all workers together); returns how many ran here.

    Each iteration takes ``lock``, counts the study's trials (RUNNING ones included), and if
    fewer than ``n_trials`` calls ``study.optimize(n_trials=1)``; the wrapped objective releases
    the lock as its first action, i.e. right after ``study.ask()`` has created the trial. So
    "count, then create" is atomic across workers while trials themselves run concurrently.
    ``study.optimize`` is kept (rather than ask/tell) for its heartbeats, stale-trial handling,
    ``catch`` semantics and callbacks.
    """
    started = time.monotonic()
    ran = 0

    def wrapped(trial: optuna.Trial) -> float:
        lock.release()
        return objective(trial)

    while True:
        if timeout is not None and time.monotonic() - started >= timeout:
            break
        if should_stop is not None and should_stop():
            break
        lock.acquire()
        try:
            if count_counted_trials(study) >= n_trials:
                break
            study.optimize(wrapped, n_trials=1, catch=catch, callbacks=list(callbacks))
            ran += 1
        finally:
            lock.release()  # no-op when the objective already released it
    return ran
