"""``make demo`` keeps to the demo's own folder and MLflow experiment, apart from the real data (issue 29).

In a copy of the project whose ``data/raw`` already holds a Kaggle-layout set, a tiny ``make demo-data`` (the
data step of ``make demo``: generate, validate, cache, split) writes only under ``data/demo`` and leaves
``data/raw`` byte for byte and mtime for mtime as it was; the commands ``make demo`` and ``make demo-isbi`` go on
to run (``make -n``) name only the demo's folders and track into the demo's experiment, never ``data/raw``.
``make clean-demo`` removes the demo's folder and deletes its experiment, and nothing of the real runs or data.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT, snapshot, tree_digest, write_set

pytestmark = pytest.mark.slow  # runs make, and the generator and prepare_data.py in subprocesses

VENV = Path(sys.executable).parent.parent  # the venv running the tests stands in for the project's .venv
TINY = {"DEMO_SUBJECTS": "3", "DEMO_IMAGES": "2", "DEMO_TEST": "2", "DEMO_FOLDS": "2"}


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """The commands and the Makefile in a folder of their own (the repo's own data is never touched), with a
    Kaggle-layout set in ``data/raw`` as a competitor would have it."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    root = tmp_path / "project"
    shutil.copytree(ROOT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "scripts", root / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("Makefile", "mlflow.yml", "requirements.txt"):
        shutil.copy2(ROOT / name, root / name)
    write_set(root / "data" / "raw", subjects=(1, 2), images=(1, 2, 3))
    return root


def _make(root: Path, *targets: str, dry_run: bool = False) -> subprocess.CompletedProcess[str]:
    """``make TARGETS`` in ``root`` with this venv and the tiny sizes; ``-o`` keeps make from (re)installing it."""
    stamp = VENV / ".installed"
    command = ["make", "-C", str(root), "-o", str(stamp), *(["-n"] if dry_run else []), *targets, f"VENV={VENV}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return subprocess.run(
        [*command, *(f"{k}={v}" for k, v in TINY.items())],
        capture_output=True, text=True, timeout=600, env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip


def test_the_demo_data_step_leaves_kaggle_data_in_data_raw_untouched(project: Path) -> None:
    raw = project / "data" / "raw"
    files, digest = snapshot(raw), tree_digest(raw)
    done = _make(project, "demo-data")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert snapshot(raw) == files and tree_digest(raw) == digest  # same names, sizes, mtimes and bytes
    demo = project / "data" / "demo"
    assert len(list((demo / "raw" / "train").glob("*_mask.tif"))) == 3 * 2
    assert len(list((demo / "raw" / "test").glob("*.tif"))) == 2 == len(list((demo / "test_masks").glob("*.tif")))
    assert list((demo / "processed").glob("train_*.npz")) and list((demo / "folds").glob("folds_*_k2_*.json"))
    assert sorted(p.name for p in (project / "data").iterdir()) == ["demo", "raw"]  # no data/processed
    assert not (project / "experiments").exists() and not (project / "mlflow.db").exists()

    again = _make(project, "demo-data")  # the demo set is kept, the real one still untouched
    assert again.returncode == 0 and "using the existing demo set in data/demo/raw" in again.stdout
    assert snapshot(raw) == files and tree_digest(raw) == digest


def test_make_demo_trains_submits_and_scores_in_the_demos_folder_and_experiment(project: Path) -> None:
    for target in ("demo", "demo-isbi"):
        done = _make(project, target, dry_run=True)
        assert done.returncode == 0, done.stderr
        commands = done.stdout.replace("\\\n", " ")
        assert "data/raw" not in commands and "data/demo/" in commands
        tracked = [line for line in commands.splitlines() if re.search(r"src/(cv_train|submit)\.py", line)]
        assert len(tracked) == 2 and all(line.startswith("MLFLOW_EXPERIMENT_NAME=nerveseg-demo ") for line in tracked)
        assert all("--out-dir data/demo/submissions" in line for line in tracked if "submit.py" in line)


def test_clean_demo_removes_the_demos_folder_and_experiment_and_nothing_else(project: Path, empty_db: Path) -> None:
    from mlflow.tracking import MlflowClient

    shutil.copy(empty_db, project / "mlflow.db")  # the project's default store (mlflow.yml)
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = {}
    for name in ("nerveseg", "nerveseg-demo"):
        experiment = client.create_experiment(name, artifact_location=(project / "mlartifacts").as_uri())
        runs[name] = client.create_run(experiment).info.run_id
        client.set_terminated(runs[name])
    (project / "data" / "demo" / "raw").mkdir(parents=True)
    raw = project / "data" / "raw"
    digest = tree_digest(raw)

    refused = _make(project, "clean-demo", "DEMO_EXPERIMENT=nerveseg")  # mlflow.yml's: the real runs'
    assert refused.returncode != 0 and "where the real runs go" in refused.stderr
    assert client.get_experiment_by_name("nerveseg").lifecycle_stage == "active"
    assert (project / "data" / "demo" / "raw").is_dir()  # refused before anything was removed

    done = _make(project, "clean-demo")
    assert done.returncode == 0, done.stderr
    assert "deleted MLflow experiment 'nerveseg-demo'" in done.stdout
    assert not (project / "data" / "demo").exists() and tree_digest(raw) == digest
    assert client.get_experiment_by_name("nerveseg-demo") is None  # the name is free for the next make demo
    assert client.get_run(runs["nerveseg-demo"]).info.lifecycle_stage == "deleted"  # hidden, never chosen
    real = client.get_run(runs["nerveseg"])
    assert real.info.lifecycle_stage == "active" and real.info.status == "FINISHED"
    assert "no MLflow experiment 'nerveseg-demo' to delete" in _make(project, "clean-demo").stdout
