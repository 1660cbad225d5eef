"""Where runs are tracked, checked before anything expensive starts, plus small MLflow helpers.

Settings come from ``mlflow.yml`` (MLFLOW_TRACKING_URI / MLFLOW_EXPERIMENT_NAME override it) and are
resolved to absolute locations once, so that a run started from another folder still lands in the
project's store. The tracking store is checked first, in seconds: MLflow's own client retries an
unreachable server for minutes, which would otherwise surface only after data preparation.
"""

from __future__ import annotations

import os
import shlex
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from nerveseg.config import load_yaml_file
from nerveseg.errors import NervesegError, first_line
from nerveseg.paths import MLFLOW_CONFIG, PROJ_ROOT
from nerveseg.uris import redact_uri, sqlite_path, sqlite_schema_lock

HTTP_SCHEMES = ("http", "https")
SQL_SERVER_SCHEMES = ("postgresql", "postgres", "mysql", "mssql")


class TrackingError(NervesegError):
    """The tracking store is misconfigured or unreachable; the message says which and what to do."""


@dataclass(frozen=True)
class MlflowSettings:
    """Resolved tracking settings: absolute sqlite paths, artifact location as a URI or ``None``."""

    tracking_uri: str
    experiment_name: str
    artifact_location: str | None  # used only when the experiment is created; None lets MLflow/the server decide
    source: str = "mlflow.yml"  # where tracking_uri came from, for error messages


# ----------------------------------------------------------------------------------------- settings


def load_mlflow_settings(path: Path | str = MLFLOW_CONFIG, *, root: Path = PROJ_ROOT) -> MlflowSettings:
    """Read ``mlflow.yml`` and apply the environment overrides.

    Relative sqlite paths in the file are resolved against ``root`` (the project root); a relative
    sqlite path in MLFLOW_TRACKING_URI keeps MLflow's meaning (the current folder). A relative
    ``artifact_location`` is resolved beside the SQLite database (so a test's temporary store keeps its
    artifacts beside it too), against ``root`` for other databases, and dropped for an http(s) server,
    which decides itself.
    """
    path = Path(path)
    values: dict[str, Any] = {}
    if path.is_file():
        loaded = load_yaml_file(path, "MLflow settings file", TrackingError) or {}
        if not isinstance(loaded, dict):
            raise TrackingError(f"MLflow settings file {path} must hold a mapping, got {type(loaded).__name__}")
        unknown = set(loaded) - {"tracking_uri", "experiment_name", "artifact_location"}
        if unknown:
            raise TrackingError(
                f"MLflow settings file {path} has unknown keys {sorted(unknown)}; "
                "expected tracking_uri, experiment_name, artifact_location"
            )
        values = loaded
    elif "MLFLOW_TRACKING_URI" not in os.environ:
        raise TrackingError(
            f"MLflow settings file {path} does not exist and MLFLOW_TRACKING_URI is not set; "
            "restore mlflow.yml from git or set MLFLOW_TRACKING_URI (e.g. sqlite:///mlflow.db)"
        )

    env_uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env_uri:
        uri, source = _resolve_sqlite(env_uri, Path.cwd()), "MLFLOW_TRACKING_URI"
    else:
        uri, source = _resolve_sqlite(str(values.get("tracking_uri") or "sqlite:///mlflow.db"), root), str(path)
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "").strip() or str(values.get("experiment_name") or "nerveseg")
    artifact = values.get("artifact_location")
    return MlflowSettings(
        tracking_uri=uri,
        experiment_name=name,
        artifact_location=_resolve_artifact_location(None if artifact is None else str(artifact), uri, root),
        source=source,
    )


def _resolve_sqlite(uri: str, base: Path) -> str:
    """Make the path of a sqlite URI absolute against ``base``; other URIs are returned unchanged."""
    db = sqlite_path(uri)
    if db is None or db.is_absolute():
        return uri
    scheme, _, rest = uri.partition("://")
    query = "?" + rest.split("?", 1)[1] if "?" in rest else ""
    return f"{scheme}:///{(base / db).resolve().as_posix()}{query}"  # an absolute path gives four slashes


def _resolve_artifact_location(location: str | None, tracking_uri: str, root: Path) -> str | None:
    if not location:
        return None
    if "://" in location or location.startswith("mlflow-artifacts:"):
        return location
    if Path(location).is_absolute():
        return Path(location).as_uri()
    if _scheme(tracking_uri) in HTTP_SCHEMES:
        return None  # the server's --artifacts-destination decides
    db = sqlite_path(tracking_uri)
    base = db.parent if db is not None else root
    return (base / location).resolve().as_uri()


def _scheme(uri: str) -> str:
    return urllib.parse.urlsplit(uri).scheme.split("+")[0].lower()


# ------------------------------------------------------------------------------------------- checks


def check_tracking_server(uri: str, *, timeout: float = 5.0) -> None:
    """Raise ``TrackingError`` within about ``timeout`` seconds when runs could not be stored at ``uri``.

    http(s): GET ``<uri>/health`` once (no retries). sqlite: the database's folder must exist (SQLite
    creates the file, never its folder). PostgreSQL/MySQL: one connection with a connect timeout.
    ``file:`` stores: refused, MLflow 3 keeps them in maintenance mode.
    """
    scheme = _scheme(uri)
    shown = redact_uri(uri)
    if scheme in HTTP_SCHEMES:
        _check_http(uri, shown, timeout)
    elif scheme == "sqlite":
        db = sqlite_path(uri)
        if db is not None and not db.parent.is_dir():
            raise TrackingError(
                f"MLflow tracking URI {shown}: folder {db.parent} does not exist; create it or point "
                "MLFLOW_TRACKING_URI / mlflow.yml at an existing folder"
            )
        if db is not None and db.is_dir():
            raise TrackingError(f"MLflow tracking URI {shown}: {db} is a folder, expected a database file path")
    elif scheme in SQL_SERVER_SCHEMES:
        _check_sql_server(uri, shown, timeout)
    elif scheme in ("file", "") and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() != "true":
        raise TrackingError(
            f"MLflow tracking URI {shown!r} is a file store, which MLflow 3 keeps in maintenance mode; "
            "use sqlite:///mlflow.db (the default in mlflow.yml) or an http(s) server"
        )


def check_store_to_read(uri: str) -> None:
    """For commands that only read runs and models (``submit.py``, ``register.py``, ``predict.py``): the store
    answers within seconds (:func:`check_tracking_server`) and, when it is SQLite, its database exists. MLflow's
    client would otherwise create an empty ``mlflow.db`` as a side effect, only to find nothing in it."""
    check_tracking_server(uri)
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        raise TrackingError(
            f"MLflow tracking store {redact_uri(uri)} does not exist yet, so it holds no runs or models; train "
            "first (python src/cv_train.py) or point MLFLOW_TRACKING_URI / mlflow.yml at the store that has them"
        )


def _check_http(uri: str, shown: str, timeout: float) -> None:
    url = uri.rstrip("/") + "/health"
    hint = (
        "start it (e.g. `mlflow server --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///mlflow.db`) "
        "or unset MLFLOW_TRACKING_URI to use the local SQLite store"
    )
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read(64).decode("utf-8", "replace").strip()
    except urllib.error.HTTPError as err:
        raise TrackingError(
            f"MLflow tracking server {shown} answered HTTP {err.code} on /health; is it an MLflow server? {hint}"
        ) from err
    except OSError as err:  # URLError, refused connections and timeouts are all OSErrors
        reason = getattr(err, "reason", err)
        raise TrackingError(f"MLflow tracking server {shown} is not reachable ({reason}); {hint}") from err
    if body != "OK":
        raise TrackingError(f"MLflow tracking server {shown} answered {body!r} on /health, expected 'OK'; {hint}")


def _check_sql_server(uri: str, shown: str, timeout: float) -> None:
    import sqlalchemy

    connect_args = {"connect_timeout": max(1, round(timeout))} if _scheme(uri) != "mssql" else {}
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=connect_args, poolclass=sqlalchemy.pool.NullPool)
        with engine.connect():
            pass
        engine.dispose()
    except ModuleNotFoundError as err:
        hint = " or write postgresql+psycopg2:// to use the installed psycopg2" if err.name == "psycopg" else ""
        raise TrackingError(
            f"MLflow tracking URI {shown} needs the database driver {err.name!r}; install it{hint}"
        ) from err
    except Exception as err:  # the driver's own error types differ; all mean "cannot store runs there"
        raise TrackingError(
            f"MLflow tracking database {shown} is not reachable ({first_line(err)}); start it, check the URI, "
            "or unset MLFLOW_TRACKING_URI to use the local SQLite store"
        ) from err


# -------------------------------------------------------------------------------------------- setup


def setup_mlflow(settings: MlflowSettings | None = None) -> str:
    """Check the store, make it MLflow's current one and return the experiment's id (created if missing).

    Errors of the store itself (an outdated database schema, a server refusing the request) become
    ``TrackingError`` with MLflow's message, so commands can print them as one line.
    """
    from sqlalchemy.exc import SQLAlchemyError

    settings = settings or load_mlflow_settings()
    check_tracking_server(settings.tracking_uri)
    mlflow.set_tracking_uri(settings.tracking_uri)
    try:
        with sqlite_schema_lock(settings.tracking_uri):  # a new SQLite store: one process creates its tables
            experiment_id = _get_or_create_experiment(MlflowClient(settings.tracking_uri), settings)
            mlflow.set_experiment(experiment_id=experiment_id)
    except (MlflowException, SQLAlchemyError) as err:
        raise _store_error(settings.tracking_uri, err) from err
    return experiment_id


def _store_error(uri: str, err: Exception) -> TrackingError:
    """An error of the store itself (MLflow's or the database's) as one line naming the store."""
    return TrackingError(f"MLflow tracking store {redact_uri(uri)}: {first_line(err)}")


def _get_or_create_experiment(client: MlflowClient, settings: MlflowSettings) -> str:
    experiment = client.get_experiment_by_name(settings.experiment_name)
    if experiment is None:
        try:
            return client.create_experiment(settings.experiment_name, artifact_location=settings.artifact_location)
        except MlflowException:  # another process created it between the two calls
            experiment = client.get_experiment_by_name(settings.experiment_name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        raise TrackingError(
            f"MLflow experiment {settings.experiment_name!r} (id {experiment.experiment_id}) is deleted; restore it "
            f"with `mlflow experiments restore --experiment-id {experiment.experiment_id}` or set "
            "MLFLOW_EXPERIMENT_NAME to another name"
        )
    return experiment.experiment_id


def retire_experiment(name: str, settings: MlflowSettings | None = None) -> tuple[str, str] | None:
    """Delete experiment ``name`` so that none of its runs is ever chosen again and ``name`` starts afresh
    (``make clean-demo``); (its new name, its id), or None when the store or the experiment does not exist.

    MLflow's public API only: the experiment is renamed ``<name> (deleted <UTC time>)`` (a deleted experiment keeps
    its name, which a new one could then not take) and deleted, so its runs leave the UI and every search. Their
    records and artifacts stay until ``mlflow gc`` is run for it: not run here, since without ``--logged-model-ids``
    it also hard-deletes every deleted logged model of the store, of any experiment.
    """
    settings = settings or load_mlflow_settings()
    db = sqlite_path(settings.tracking_uri)
    if db is not None and not db.exists():
        return None
    check_tracking_server(settings.tracking_uri)
    client = MlflowClient(settings.tracking_uri)
    try:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            return None
        retired = f"{name} (deleted {time.strftime('%Y-%m-%dT%H%M%SZ', time.gmtime())})"
        client.rename_experiment(experiment.experiment_id, retired)
        if experiment.lifecycle_stage != "deleted":
            client.delete_experiment(experiment.experiment_id)
    except MlflowException as err:
        raise _store_error(settings.tracking_uri, err) from err
    return retired, experiment.experiment_id


def get_client(tracking_uri: str | None = None) -> MlflowClient:
    """A client bound to ``tracking_uri`` (default: the one from mlflow.yml / MLFLOW_TRACKING_URI)."""
    return MlflowClient(tracking_uri or load_mlflow_settings().tracking_uri)


def log_metrics(client: MlflowClient, run_id: str, values: Mapping[str, float]) -> None:
    """Log ``values`` on ``run_id`` in one call, at step 0 with one timestamp (a summary's metrics, not a curve)."""
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(key, float(value), now, 0) for key, value in values.items()])


def download_artifacts(run_id: str, artifact_path: str, dst: Path | str, *, tracking_uri: str | None = None) -> Path:
    """Download one artifact file or folder of a run into ``dst`` (created) and return its local path."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id,
            artifact_path=artifact_path,
            dst_path=str(dst),
            tracking_uri=tracking_uri or load_mlflow_settings().tracking_uri,
        )
    except (MlflowException, OSError) as err:
        raise TrackingError(f"could not download artifact {artifact_path!r} of MLflow run {run_id}: {err}") from err
    return Path(local)


# MLflow 3.17 opens an experiment in its GenAI view (Traces, Detect Issues) unless the link asks for the classic
# one; no experiment tag changes that landing (``mlflow.experimentKind`` was tried), so every link carries it.
ML_VIEW_QUERY = "workflowType=machine_learning"
LOCAL_UI = "http://127.0.0.1:5000"


def ui_fragment(experiment_id: str, run_id: str | None = None) -> str:
    """The UI's address of the experiment's runs table, or of one run, in the machine-learning view."""
    path = f"#/experiments/{experiment_id}/runs" + (f"/{run_id}" if run_id else "")
    return f"{path}?{ML_VIEW_QUERY}"


def ui_hint(settings: MlflowSettings, experiment_id: str, run_id: str, what: str = "parent run page") -> str:
    """Where to look at a run, as lines: the runs table's and the run's (``what``) URLs, preceded for a local store
    by the ``mlflow ui`` command that serves them."""
    if _scheme(settings.tracking_uri) in HTTP_SCHEMES:
        base, start = settings.tracking_uri.rstrip("/"), []
    else:
        uri = shlex.quote(redact_uri(settings.tracking_uri))
        base, start = LOCAL_UI, [f"start the MLflow UI: mlflow ui --backend-store-uri {uri} --port 5000"]
    return "\n".join(
        [
            *start,
            f"runs table:      {base}/{ui_fragment(experiment_id)}",
            f"{what + ':':<16} {base}/{ui_fragment(experiment_id, run_id)}",
        ]
    )
