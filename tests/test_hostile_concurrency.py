"""Two processes opening a NEW SQLite store at the same moment (issue 18): an MLflow tracking store (two
``cv_train.py`` starting together) and an Optuna storage (two tune workers). Both must succeed: the first
schema creation is serialised by a file lock beside the database.

Each test starts two real processes, lets both import everything, then releases them together through a
"go" file, so that both reach the store's creation in the same few milliseconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from helpers import ROOT

RACE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    {imports}
    go = Path(sys.argv[1])
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.002)
    {body}
    """
)


def race(tmp_path: Path, imports: str, body: str, env: dict[str, str]) -> list[subprocess.CompletedProcess]:
    """Run ``body`` in two processes released at the same moment; their results once both have ended."""
    source = RACE.format(imports=imports, body=body)
    go = tmp_path / "go"
    command = [sys.executable, "-c", source, str(go)]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **env}
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    procs = [subprocess.Popen(command, cwd=ROOT, env=full_env, **pipes) for _ in range(2)]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


@pytest.mark.slow  # creating MLflow's schema takes ~10 s, and the second process waits for the first
def test_two_processes_creating_a_new_mlflow_store_both_succeed(tmp_path: Path) -> None:
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    results = race(
        tmp_path,
        "from nerveseg.track.store import setup_mlflow",
        "print(setup_mlflow(), flush=True)",
        {"MLFLOW_TRACKING_URI": f"sqlite:///{db}", "MLFLOW_EXPERIMENT_NAME": "race"},
    )
    for done in results:
        assert done.returncode == 0, done.stderr
    ids = {done.stdout.split()[-1] for done in results}
    assert len(ids) == 1, f"both processes must use the one experiment, got {ids}"


@pytest.mark.slow  # runs the command in a subprocess
def test_two_tune_workers_on_a_new_optuna_storage_both_succeed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    started = time.monotonic()
    results = race(
        tmp_path,
        "import optuna\nfrom nerveseg.tune.storage import make_storage",
        f"study = optuna.create_study(study_name='s', storage=make_storage({url!r}), load_if_exists=True)\n"
        "print(study._study_id, flush=True)",
        {},
    )
    for done in results:
        assert done.returncode == 0, done.stderr
    assert len({done.stdout.split()[-1] for done in results}) == 1
    assert time.monotonic() - started < 200  # a deadlock would hang until communicate's timeout instead
