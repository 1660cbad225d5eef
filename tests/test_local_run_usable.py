"""A run kept in a LocalStore folder is usable end to end without an MLflow tracking store (issue 24).

``cv_train.py --run-dir`` trains a tiny nerve CV (depth 2, 32x40, 2 folds x 1 epoch) into a folder,
``submit.py --run-dir`` writes the submission and its JSON record, ``register.py --run-dir --out`` writes an
MLflow model folder, ``predict.py --model`` segments two images with it, and a real ``mlflow models serve`` on
that folder answers as predict.py did. Every command runs as a subprocess in a scratch folder with no
``MLFLOW_*`` variable, from a copy of the project of its own (its ``mlflow.yml`` names ``sqlite:///mlflow.db`` in
that copy, whatever the user's checkout holds after a ``make demo``); no tracking store may appear (no
``mlflow.db``, no ``mlruns``), in the scratch folder or in that project. The training and submission commands must
not even import MLflow.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from helpers import free_port, stop_server
from nerveseg import names
from nerveseg.io_utils import sha256_file

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STARTUP_SECONDS = 180
CONFIG = """height: 32
width: 40
depth: 2
base_filters: 4
presence_head: true
learning_rate: 0.001
batch_size: 8
epochs: 1
folds: 2
seed: 1
"""
# runs a command's main() and reports its exit code and whether any mlflow module was imported
WRAPPER = """
import json, runpy, sys
script, *argv = sys.argv[1:]
sys.argv = [script, *argv]
try:
    runpy.run_path(script, run_name="__main__")
    code = 0
except SystemExit as stop:
    code = stop.code
mlflow = sorted(m for m in sys.modules if m == "mlflow" or m.startswith("mlflow."))
print("RESULT " + json.dumps({"code": code, "mlflow": mlflow[:3]}))
"""


def _project(root: Path) -> Path:
    """The commands, ``mlflow.yml`` and ``requirements.txt`` (a model's pins) copied to ``root``: the project the
    commands run from (``paths.PROJ_ROOT``)."""
    shutil.copytree(ROOT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("mlflow.yml", "requirements.txt"):
        shutil.copy2(ROOT / name, root / name)
    return root


def _env(project: Path) -> dict[str, str]:
    """The environment without any MLflow setting: no tracking URI, no experiment, no registry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(PYTHONPATH=str(project / "src"), TF_CPP_MIN_LOG_LEVEL="2", PATH=f"{BIN}{os.pathsep}/usr/bin:/bin")
    return env


def _command(work: Path, script: str, *argv: str) -> dict:
    """``src/<script>`` of the project copy beside ``work``, run through the wrapper in ``work``; exit code 0."""
    project = work.parent / "project"
    done = subprocess.run(
        [sys.executable, "-c", WRAPPER, str(project / "src" / script), *argv],
        capture_output=True, text=True, cwd=work, env=_env(project), timeout=900,
    )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"{script} {argv}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    report = json.loads(lines[-1].removeprefix("RESULT "))
    assert report["code"] == 0, f"{script} {argv}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    report["stdout"] = done.stdout
    return report


def _no_tracking_store(work: Path) -> None:
    for folder in (work, work.parent / "project"):
        assert not (folder / "mlflow.db").exists() and not (folder / "mlruns").exists(), folder


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> Iterator[dict]:
    """The CV folder, its submission and its model folder, made by the commands alone."""
    base = tmp_path_factory.mktemp("local_run")
    _project(base / "project")
    work = base / "work"
    work.mkdir()
    (work / "tiny.yaml").write_text(CONFIG)
    raw = str(synthetic_root / "raw")
    common = ["--raw-dir", raw, "--cache-dir", str(work / "cache")]
    trained = _command(
        work, "cv_train.py", "--config", "tiny.yaml", "--run-dir", "cv", "--folds-dir", "folds", "--no-progress",
        *common,
    )  # fmt: skip
    submitted = _command(work, "submit.py", "--run-dir", "cv", "--out-dir", "subs", "--no-progress", *common)
    packaged = _command(work, "register.py", "--run-dir", "cv", "--out", "model", *common)
    yield {"work": work, "root": synthetic_root, "trained": trained, "submitted": submitted, "packaged": packaged}


def test_training_and_submitting_a_folder_import_no_mlflow_and_create_no_store(local: dict) -> None:
    work = local["work"]
    assert local["trained"]["mlflow"] == [] and local["submitted"]["mlflow"] == []
    assert json.loads((work / "cv" / "parent.json").read_text())["status"] == "FINISHED"
    (csv,) = (work / "subs").glob("*_tiny.csv")
    record = json.loads((work / "subs" / f"{csv.name}.json").read_text())
    assert record["tags"]["submission_sha256"] == sha256_file(csv)
    assert record["runs"] == [str((work / "cv").resolve())]
    assert record["params"]["n_models"] == 2 and record["metrics"]["n_test_images"] == 6
    stored = json.loads((work / "cv" / names.POSTPROCESSING_ARTIFACT).read_text())
    assert record[names.POSTPROCESSING_ARTIFACT] == stored and record["tags"]["postprocessing_source"] == "run"
    frame = pd.read_csv(csv, keep_default_na=False)
    assert len(frame) == 6 and list(frame.columns) == ["img", "pixels"]
    _no_tracking_store(work)


def test_the_model_folder_predicts_and_is_served_alike(local: dict) -> None:
    work, model = local["work"], local["work"] / "model"
    assert (model / "MLmodel").is_file()
    assert json.loads((model / "artifacts" / names.POSTPROCESSING_ARTIFACT).read_text()) == json.loads(
        (work / "cv" / names.POSTPROCESSING_ARTIFACT).read_text()
    )
    images = work / "frames"
    images.mkdir()
    for path in sorted((local["root"] / "raw" / "test").glob("*.tif"))[:2]:
        shutil.copy(path, images / path.name)
    _command(work, "predict.py", "frames", "--model", "model", "--out", "predicted", "--no-progress")
    expected = pd.read_csv(work / "predicted" / "predictions.csv", keep_default_na=False).set_index("file")
    assert len(expected) == 2

    files = sorted(images.glob("*.tif"))
    rows = [[base64.b64encode(p.read_bytes()).decode("ascii")] for p in files]
    body = {"dataframe_split": {"columns": ["image"], "data": rows}, "params": {"return_mask": True}}
    with _served(work, model) as url:
        request = urllib.request.Request(
            f"{url}/invocations", json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read())["predictions"]
    for path, row in zip(files, answer, strict=True):
        want = expected.loc[path.name]
        assert row["present"] == bool(want["present"]) and row["area"] == int(want["area"])
        assert row["probability"] == float(want["probability"]) and row["rle"] == want["rle"]
        assert base64.b64decode(row["mask_png"]) == (work / "predicted" / f"{path.stem}_mask.png").read_bytes()
    _no_tracking_store(work)


class _served:
    """``mlflow models serve -m MODEL_DIR --env-manager local`` on a free port, in ``work``, with no MLflow
    settings and the network pointed nowhere; its URL while in the ``with`` block."""

    def __init__(self, work: Path, model: Path) -> None:
        self.work, self.model, self.port = work, model, free_port()
        self.log = work / "serve.log"

    def __enter__(self) -> str:
        command = [
            str(BIN / "mlflow"), "models", "serve", "-m", str(self.model), "--env-manager", "local",
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        nowhere = "http://127.0.0.1:9"
        env = {**_env(self.work.parent / "project"), "PIP_NO_INDEX": "1", "NO_PROXY": "127.0.0.1"}
        env.update(HTTP_PROXY=nowhere, HTTPS_PROXY=nowhere)
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.work, start_new_session=True
            )
        url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + STARTUP_SECONDS
        while not _pings(url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                stop_server(self.process)
                pytest.fail(f"mlflow models serve did not come up on {url}:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.5)
        return url

    def __exit__(self, *exc: object) -> None:
        stop_server(self.process)


def _pings(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
