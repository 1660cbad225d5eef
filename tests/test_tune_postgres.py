"""Distributed tuning against a REAL PostgreSQL server: several workers stop at exactly N trials.

The server is started from a temporary data directory (initdb + pg_ctl) on 127.0.0.1 and a free
port, with trust authentication, and stopped in teardown. PostgreSQL refuses to run as root, so
when the tests run as root the server's commands run as the ``postgres`` user (or ``nobody``) via
``subprocess``'s ``user=``/``group=`` arguments (no sudo/runuser needed) and the data directory is
chowned to that user. The binaries are looked up on PATH, then in /usr/lib/postgresql/*/bin; the
tests skip, saying so, only when they are absent.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import exact_n_worker, free_port
from nerveseg.track.schema import PARENT_TAG, RUN_TYPE_TAG

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


def _find_pg_bin() -> Path | None:
    """The folder holding initdb and pg_ctl: PATH first, then Debian's versioned folders (newest first)."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name.split(".")[0]), reverse=True
    )
    for folder in [*candidates, "/usr/local/pgsql/bin"]:
        if (Path(folder) / "pg_ctl").is_file() and (Path(folder) / "initdb").is_file():
            return Path(folder)
    return None


class PostgresServer:
    """A throw-away PostgreSQL cluster: ``start()``, ``create_database(name)``, ``url(db)``, ``stop()``."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.base = Path(tempfile.mkdtemp(prefix="nerveseg-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self.port = 0
        self._run_as: dict[str, object] = {}
        if os.geteuid() == 0:  # postgres: "root execution of the PostgreSQL server is not permitted"
            for name in ("postgres", "nobody"):
                try:
                    entry = pwd.getpwnam(name)
                except KeyError:
                    continue
                self._run_as = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
                os.chown(self.base, entry.pw_uid, entry.pw_gid)
                break
            else:
                raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.base,
            **self._run_as,  # type: ignore[arg-type]
        )

    def start(self) -> None:
        done = self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.strip()}")
        for _attempt in range(3):  # the free port may be taken between probing and binding
            self.port = free_port()
            options = (
                f"-h 127.0.0.1 -p {self.port} -k {self.base} -c fsync=off -c synchronous_commit=off "
                "-c full_page_writes=off -c max_connections=100"
            )
            done = self._run(
                "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", options, "start"
            )
            if done.returncode == 0:
                return
        raise RuntimeError(f"pg_ctl start failed: {done.stdout.strip()} {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
        shutil.rmtree(self.base, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url(name)


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    bin_dir = _find_pg_bin()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin; "
            "install them (apt-get install postgresql) to run the distributed tuning tests"
        )
    server = PostgresServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


# A worker with a trivial objective: trials are ~instant, so workers contend for trial creation
# constantly, which is where a "check the count, then create a trial" race would overshoot.
TRIVIAL_WORKER = exact_n_worker(
    """
    def objective(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        time.sleep(random.uniform(0.0, 0.03))
        if trial.number % 7 == 3:
            raise RuntimeError("deliberate failure")
        if trial.number % 5 == 4:
            raise optuna.TrialPruned()
        return x
    """
)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _final_states(url: str, study_name: str) -> dict[str, int]:
    import optuna

    study = optuna.load_study(study_name=study_name, storage=url)
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(len(trials))), "trial numbers must be 0..n-1, unique"
    states: dict[str, int] = {}
    for trial in trials:
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
    return states


def test_three_workers_with_a_trivial_objective_stop_at_exactly_n(postgres: PostgresServer) -> None:
    url = postgres.create_database("optuna_trivial")
    n_trials = 40
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", TRIVIAL_WORKER, url, "race", str(n_trials)],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [w.communicate(timeout=300) for w in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-3000:]
    ran = [int(out.split()[-1]) for out, _ in outputs]
    states = _final_states(url, "race")
    assert sum(states.values()) == n_trials, states
    assert set(states) <= {"COMPLETE", "PRUNED", "FAIL"}, states  # nothing RUNNING or WAITING left behind
    assert states["FAIL"] > 0 and states["PRUNED"] > 0
    assert sum(ran) == n_trials and min(ran) > 0, ran  # every worker took part


# ------------------------------------------------------------------------------- real tune.py workers


@contextlib.contextmanager
def mlflow_server(backend_uri: str, artifacts: Path) -> Iterator[str]:
    """``mlflow server`` on a free port (one worker, no job execution: starts in ~12 s), stopped after."""
    port = free_port()
    env = _env() | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(artifacts.parent / "mlflow-server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            backend_uri,
            "--artifacts-destination",
            str(artifacts),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so teardown stops the server's children too
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited: {(artifacts.parent / 'mlflow-server.log').read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(uri + "/health", timeout=2) as response:
                    if response.read().strip() == b"OK":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not answer /health within 120 s")
            time.sleep(0.5)
        yield uri
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()


TINY_BASE = """\
height: 32
width: 40
depth: 2
base_filters: 4
epochs: 1
batch_size: 8
learning_rate: 1.0e-3
folds: 2
seed: 1
"""

TINY_SPACE = """\
learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
base_filters: {type: categorical, choices: [4, 8]}
"""


def test_two_tune_workers_share_a_postgres_study(
    postgres: PostgresServer, synthetic_root: Path, tmp_path: Path
) -> None:
    import mlflow

    storage = postgres.create_database("optuna_cv")
    tracking_db = postgres.create_database("mlflow")
    (tmp_path / "tiny.yaml").write_text(TINY_BASE)
    (tmp_path / "space.yaml").write_text(TINY_SPACE)
    n_trials = 4
    command = [
        sys.executable,
        str(ROOT / "src" / "tune.py"),
        "--study",
        "pg-study",
        "--trials",
        str(n_trials),
        "--storage",
        storage,
        "--config",
        str(tmp_path / "tiny.yaml"),
        "--space",
        str(tmp_path / "space.yaml"),
        "--pruner",
        "none",
        "--raw-dir",
        str(synthetic_root / "raw"),
        "--folds-dir",
        str(tmp_path / "folds"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--experiments-dir",
        str(tmp_path / "experiments"),
        "--no-progress",
    ]
    with mlflow_server(tracking_db, tmp_path / "artifacts") as uri:
        env = _env() | {"MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": "tune-postgres-test"}
        workers = [
            subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        outputs = [w.communicate(timeout=900) for w in workers]
        for worker, (out, err) in zip(workers, outputs, strict=True):
            assert worker.returncode == 0, f"stdout:\n{out[-3000:]}\nstderr:\n{err[-5000:]}"

        states = _final_states(storage, "pg-study")
        assert sum(states.values()) == n_trials, states
        assert set(states) <= {"COMPLETE", "PRUNED", "FAIL"}, states
        assert states.get("COMPLETE", 0) >= 1, (states, outputs)

        # One study run (both workers joined it), one nested CV run per trial.
        client = mlflow.MlflowClient(uri)
        experiment = client.get_experiment_by_name("tune-postgres-test")
        study_runs = client.search_runs([experiment.experiment_id], f"tags.`{RUN_TYPE_TAG}` = 'study'")
        assert len(study_runs) == 1
        study_run = study_runs[0]
        trial_runs = client.search_runs([experiment.experiment_id], f"tags.`{PARENT_TAG}` = '{study_run.info.run_id}'")
        assert sorted(int(r.data.tags["optuna.trial_number"]) for r in trial_runs) == list(range(n_trials))
        assert all(r.data.tags[RUN_TYPE_TAG] == "cv" for r in trial_runs)
        assert "best_value" in study_run.data.metrics
    assert (tmp_path / "experiments" / "pg-study-best.yaml").is_file()
