"""The best CV run into MLflow's model registry: a new version of ``nerveseg`` and the ``champion`` alias.

``register_run`` logs the run's pyfunc model if it has none (``track.model_package``), registers a new
version whose description is the run's CV table with its honest (cross-fitted, post-processed) estimate
and interval (``run.package.version_description``), and whose tags hold the data fingerprint and git commit, then
moves the alias to it. ``register_best`` without a run id takes the best finished CV run by the task's estimate,
as ``submit.py`` ranks them (``run.choice``).
``run_of_model`` goes the other way, from ``models:/name@alias`` (or ``/version``, or ``models:/<model
id>``) to the CV run that produced it, which is how ``submit.py --model`` reuses the run-based path, and
``load_model`` loads a registered model, or a model folder, for ``predict.py``.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient

from nerveseg import names
from nerveseg.config import DEFAULT_TASK
from nerveseg.errors import NervesegError, first_line
from nerveseg.paths import PROCESSED_DIR, RAW_DIR
from nerveseg.run.choice import chosen_runs
from nerveseg.run.package import version_description
from nerveseg.run.resolved_run import Sources
from nerveseg.track import schema
from nerveseg.track.model_package import log_cv_model
from nerveseg.track.run_reader import MlflowRuns, run_name
from nerveseg.track.store import TrackingError, check_store_to_read, load_mlflow_settings
from nerveseg.uris import redact_uri

TRACKED_MODEL_SCHEMES = ("models:", "runs:", "mlflow-artifacts:")  # URIs MLflow resolves through its tracking store
MODEL_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))?/?")
MODEL_HINT = (  # what makes a model, from either store
    "register an MLflow CV run with src/register.py [--run-id ID], or write a model folder from a LocalStore "
    "folder with src/register.py --run-dir DIR --out MODEL_DIR and pass --model MODEL_DIR"
)
REGISTERED_DESCRIPTION = (
    "Fold ensembles of nerveseg cross-validation runs (pyfunc: fold weights, config.yaml, postprocessing.json). "
    "Each version's description holds its run's CV table; `register.py` moves the alias to the newest."
)


@dataclass(frozen=True)
class Registered:
    """What ``register_run`` did: the version it made and where it came from."""

    name: str
    version: str
    alias: str
    run_id: str
    run_name: str
    model_id: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{self.alias}"

    def describe(self) -> str:
        return (
            f"registered {self.name} version {self.version} from CV run {self.run_name} ({self.run_id}); "
            f"{self.uri} -> version {self.version} (logged model {self.model_id})"
        )


def version_tags(run: Run) -> dict[str, str]:
    tags = {
        names.DATA_FINGERPRINT: run.data.tags.get(names.DATA_FINGERPRINT, ""),
        names.GIT_COMMIT_TAG: run.data.tags.get(names.GIT_COMMIT_TAG, ""),
        schema.MODEL_VERSION_RUN_TAG: run_name(run),
        names.TASK_CONFIG: run.data.params.get(names.TASK_PARAM, DEFAULT_TASK),
    }
    return {k: v for k, v in tags.items() if v}


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.create_registered_model(name, description=REGISTERED_DESCRIPTION)
    except MlflowException as err:
        if err.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise


def register_run(
    runs: MlflowRuns,
    run_id: str,
    *,
    name: str = names.REGISTERED_MODEL,
    alias: str = names.CHAMPION_ALIAS,
    tta: bool = True,
    raw_dir: Path = RAW_DIR,
    cache_dir: Path = PROCESSED_DIR,
    progress: bool = True,
) -> Registered:
    """Log the run's model if missing, register a new version of ``name`` from it, point ``alias`` at it."""
    client, uri = runs.client, runs.tracking_uri
    reader = runs.reader(run_id)  # a FINISHED CV parent run, or one line saying what the run is instead
    run = reader.run
    with tempfile.TemporaryDirectory(prefix="nerveseg-register-") as tmp:
        sources = Sources(Path(tmp), Path(raw_dir), Path(cache_dir), progress)
        model = log_cv_model(client, reader, sources, tracking_uri=uri, tta=tta)
    try:
        _ensure_registered_model(client, name)
        version = client.create_model_version(
            name,
            source=f"models:/{model.model_id}",
            run_id=run_id,
            tags=version_tags(run),
            description=version_description(reader, run.data.tags.get(schema.DESCRIPTION_TAG, "")),
            model_id=model.model_id,
        )
        client.set_registered_model_alias(name, alias, version.version)
    except MlflowException as err:
        raise TrackingError(f"MLflow registry at {redact_uri(uri)}: {err.message.splitlines()[0]}") from err
    return Registered(name, str(version.version), alias, run_id, reader.name, model.model_id)


def register_best(run_id: str | None = None, *, task: str | None = None, **options: object) -> Registered:
    """``register_run`` on ``run_id``, or on the best finished CV run of ``task`` (None: the newest run's
    task) by its estimate, ranked as ``submit.py`` ranks (``run.choice.chosen_runs``), any data."""
    runs = MlflowRuns.open()
    (chosen,) = chosen_runs(runs, run_id, None, task)
    return register_run(runs, chosen, **options)  # type: ignore[arg-type]


def model_version(client: MlflowClient, uri: str) -> ModelVersion:
    """The registered version ``models:/name@alias`` or ``models:/name/version`` names (latest for bare name)."""
    match = MODEL_URI.fullmatch(uri.strip())
    if match is None:
        raise NervesegError(f"--model {uri!r} is not a registry URI; expected models:/<name>@<alias> or /<version>")
    name, alias, number = match["name"], match["alias"], match["version"]
    try:
        if alias:
            return client.get_model_version_by_alias(name, alias)
        if number:
            return client.get_model_version(name, number)
        versions = client.search_model_versions(f"name = '{name}'", order_by=["version_number DESC"], max_results=1)
    except MlflowException as err:
        raise NervesegError(f"--model {uri}: {err.message.splitlines()[0]}; {MODEL_HINT}") from err
    if not versions:
        raise NervesegError(f"--model {uri}: registered model {name!r} has no versions; {MODEL_HINT}")
    return versions[0]


def run_of_model(client: MlflowClient, uri: str) -> str:
    """The CV run id behind a registered model URI (``models:/m-...`` logged-model ids work too)."""
    if uri.startswith("models:/m-"):
        try:
            run_id = client.get_logged_model(uri.removeprefix("models:/").strip("/")).source_run_id
        except MlflowException as err:
            raise NervesegError(f"--model {uri}: {err.message.splitlines()[0]}") from err
    else:
        run_id = model_version(client, uri).run_id
    if not run_id:
        raise NervesegError(
            f"--model {uri} names no source run; register a CV run with src/register.py --run-id ID, or submit "
            "from a LocalStore folder with --run-dir DIR"
        )
    return run_id


def load_model(uri: str) -> mlflow.pyfunc.PyFuncModel:
    """``mlflow.pyfunc.load_model(uri)`` (``models:/nerveseg@champion``, ``models:/<model id>``, ``runs:/...``, or a
    model folder written by ``register.py --out``, which needs no tracking store) with a one-line error naming it.

    A URI resolved through the tracking store (``models:/``, ``runs:/``) first checks that store as every
    command does: a server that does not answer within seconds, or a SQLite store that does not exist, is one
    line, not minutes of MLflow's retries or a new empty ``mlflow.db``.
    """
    if uri.startswith(TRACKED_MODEL_SCHEMES):
        settings = load_mlflow_settings()
        check_store_to_read(settings.tracking_uri)
        mlflow.set_tracking_uri(settings.tracking_uri)
    try:
        return mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError) as err:
        raise NervesegError(f"--model {uri}: {first_line(err)[:300]}; {MODEL_HINT}") from err
    except NervesegError as err:  # the package's own check of its files (a truncated weights artifact, say)
        raise NervesegError(f"--model {uri}: {err}") from err
