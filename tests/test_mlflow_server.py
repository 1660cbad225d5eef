"""Cross-validation against a REAL ``mlflow server`` (SQLite backend, proxied artifacts), as a team would run it.

The server is started on 127.0.0.1 with a free port, one worker and job execution off (2 processes,
~0.5 GB), and stopped with SIGTERM to its own PID; anything left in its process group is killed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import h5py
import pytest

from helpers import free_port, stop_server
from nerveseg.config import TrainConfig
from nerveseg.names import fold_score_metric
from nerveseg.run.cross_validate import cross_validate
from nerveseg.run.store import CVPaths
from nerveseg.track.mlflow_store import MlflowStore
from nerveseg.track.schema import PARENT_TAG, RUN_TYPE_TAG
from nerveseg.track.store import download_artifacts, get_client, load_mlflow_settings

pytestmark = pytest.mark.slow

STARTUP_SECONDS = 90  # ~12 s on an idle 2-core machine, plus creating the database schema


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.read().strip() == b"OK"
    except OSError:
        return False


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(url, artifacts folder) of a running server; stopped after the module's tests."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{root / 'server.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--workers",
        "1",
    ]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = (root / "server.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not _healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                stop_server(process)
                log.close()
                pytest.fail(f"mlflow server did not come up on {url}:\n{(root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, root / "artifacts"
    finally:
        stop_server(process)
        log.close()
    assert process.returncode is not None


def test_cv_against_a_tracking_server(
    mlflow_server: tuple[str, Path],
    tiny_config: TrainConfig,
    synthetic_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, artifacts = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "server-test")
    settings = load_mlflow_settings()
    assert settings.artifact_location is None  # the server decides where artifacts go

    config = tiny_config.replace(folds=2, epochs=1)
    paths = CVPaths(synthetic_root / "raw", tmp_path / "cache", tmp_path / "folds")
    result = cross_validate(config, paths, MlflowStore(progress=False), progress=False)
    assert result.final is not None and {fold_score_metric(0), fold_score_metric(1)} <= set(result.final.metrics)

    client = get_client()
    parent = client.get_run(result.parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags[RUN_TYPE_TAG] == "cv"
    assert parent.info.artifact_uri.startswith("mlflow-artifacts:")
    assert {"cv_score_mean", "oof_score", "fold_0_score", "fold_1_score"} <= set(parent.data.metrics)
    fold_runs = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{result.parent_id}'"
    )
    assert sorted(run.info.run_name for run in fold_runs) == ["fold_0", "fold_1"]
    assert all(run.info.status == "FINISHED" for run in fold_runs)

    fold1 = next(run for run in fold_runs if run.info.run_name == "fold_1")
    weights = download_artifacts(fold1.info.run_id, "weights/fold_1.weights.h5", tmp_path / "downloads")
    with h5py.File(weights, "r") as handle:
        assert len(handle.keys()) > 0
    stored = list(artifacts.rglob("fold_1.weights.h5"))
    assert len(stored) == 1 and stored[0].read_bytes() == weights.read_bytes()  # proxied to the server's folder
