"""nerveseg.track.store: settings resolution, fast failures for unreachable stores, experiment setup, helpers."""

from __future__ import annotations

import http.server
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from helpers import free_port
from nerveseg import names, provenance
from nerveseg.paths import PROJ_ROOT
from nerveseg.track import schema
from nerveseg.track import store as tracking
from nerveseg.track.store import TrackingError, check_tracking_server, load_mlflow_settings


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start without environment overrides; each sets the ones it tests."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)


def write_yml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------ settings


DEFAULT_YML = "tracking_uri: sqlite:///mlflow.db\nexperiment_name: nerveseg\nartifact_location: mlartifacts\n"


def test_default_settings_point_into_the_project_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped defaults (written here, so the test does not depend on the checked-in mlflow.yml)."""
    yml = write_yml(tmp_path / "mlflow.yml", DEFAULT_YML)
    monkeypatch.chdir(PROJ_ROOT)  # another folder than the root: resolution must not use it
    settings = load_mlflow_settings(yml, root=tmp_path)
    assert settings.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert settings.tracking_uri.startswith("sqlite:////")  # absolute: independent of the current folder
    assert settings.experiment_name == "nerveseg"
    assert settings.artifact_location == (tmp_path / "mlartifacts").as_uri()
    assert settings.source == str(yml)


def test_relative_paths_resolve_against_root_not_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    yml = write_yml(
        tmp_path / "m.yml", "tracking_uri: sqlite:///db/runs.db\nexperiment_name: x\nartifact_location: art\n"
    )
    monkeypatch.chdir(PROJ_ROOT)
    settings = load_mlflow_settings(yml, root=tmp_path)
    assert settings.tracking_uri == f"sqlite:///{tmp_path / 'db' / 'runs.db'}"
    assert settings.artifact_location == (tmp_path / "db" / "art").as_uri()  # beside the database
    assert settings.experiment_name == "x"


def test_environment_overrides_uri_and_experiment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/other.db")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "mine")
    settings = load_mlflow_settings(write_yml(tmp_path / "mlflow.yml", DEFAULT_YML), root=PROJ_ROOT)
    assert settings.tracking_uri == f"sqlite:///{tmp_path}/other.db"
    assert settings.experiment_name == "mine"
    assert settings.artifact_location == (tmp_path / "mlartifacts").as_uri()
    assert settings.source == "MLFLOW_TRACKING_URI"


def test_relative_sqlite_in_environment_means_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///here.db")
    yml = write_yml(tmp_path / "mlflow.yml", DEFAULT_YML)
    assert load_mlflow_settings(yml).tracking_uri == f"sqlite:///{tmp_path / 'here.db'}"


def test_server_decides_artifacts_unless_a_uri_is_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert load_mlflow_settings(write_yml(tmp_path / "m.yml", DEFAULT_YML)).artifact_location is None
    yml = write_yml(tmp_path / "m.yml", "artifact_location: s3://bucket/nerveseg\n")
    assert load_mlflow_settings(yml).artifact_location == "s3://bucket/nerveseg"
    yml = write_yml(tmp_path / "m.yml", f"artifact_location: {tmp_path / 'abs'}\n")
    assert load_mlflow_settings(yml).artifact_location == (tmp_path / "abs").as_uri()


def test_bad_settings_file_names_the_file(tmp_path: Path) -> None:
    yml = write_yml(tmp_path / "m.yml", "tracking_url: sqlite:///x.db\n")
    with pytest.raises(ValueError, match=r"m\.yml has unknown keys \['tracking_url'\]"):
        load_mlflow_settings(yml)
    with pytest.raises(ValueError, match="does not exist"):
        load_mlflow_settings(tmp_path / "missing.yml")


# -------------------------------------------------------------------------------------------- checks


def test_unreachable_server_fails_fast_with_one_clear_line() -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(TrackingError, match="not reachable") as caught:
        check_tracking_server(uri)
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert uri in message and "mlflow server" in message and "\n" not in message


@pytest.fixture()
def not_mlflow() -> Iterator[str]:
    """An HTTP server that is not MLflow (answers 404 everywhere)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_server_that_is_not_mlflow_is_refused(not_mlflow: str) -> None:
    with pytest.raises(TrackingError, match="answered HTTP 501 on /health"):
        check_tracking_server(not_mlflow)


def test_sqlite_folder_must_exist(tmp_path: Path) -> None:
    with pytest.raises(TrackingError, match=f"folder {tmp_path / 'missing'} does not exist"):
        check_tracking_server(f"sqlite:///{tmp_path}/missing/mlflow.db")
    check_tracking_server(f"sqlite:///{tmp_path}/mlflow.db")  # the file itself is created by MLflow


def test_file_store_is_refused() -> None:
    with pytest.raises(TrackingError, match="maintenance mode"):
        check_tracking_server("file:./mlruns")


def test_unreachable_postgres_fails_fast_and_hides_the_password() -> None:
    started = time.monotonic()
    with pytest.raises(TrackingError, match="not reachable") as caught:
        check_tracking_server(f"postgresql+psycopg2://user:s3cret@127.0.0.1:{free_port()}/mlflow", timeout=3)
    assert time.monotonic() - started < 5
    assert "s3cret" not in str(caught.value) and "user:***@" in str(caught.value)


# --------------------------------------------------------------------------------------------- setup


def test_setup_creates_the_experiment_once_with_its_artifact_location(store: tracking.MlflowSettings) -> None:
    import mlflow

    experiment_id = tracking.setup_mlflow(store)
    assert tracking.setup_mlflow(store) == experiment_id
    experiment = tracking.get_client().get_experiment(experiment_id)
    assert experiment.name == "nerveseg"
    assert experiment.artifact_location == store.artifact_location
    assert mlflow.get_tracking_uri() == store.tracking_uri


def test_setup_refuses_a_deleted_experiment(store: tracking.MlflowSettings) -> None:
    experiment_id = tracking.setup_mlflow(store)
    tracking.get_client().delete_experiment(experiment_id)
    with pytest.raises(TrackingError, match="is deleted; restore it"):
        tracking.setup_mlflow(store)


def test_a_broken_database_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mlflow.db").write_text("not a database")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(TrackingError, match=f"MLflow tracking store sqlite:///{tmp_path}/mlflow.db: .*not a database"):
        tracking.setup_mlflow()


def test_candidates_and_download_artifacts(store: tracking.MlflowSettings, tmp_path: Path) -> None:
    """Only FINISHED CV parent runs are candidates (not a running one, not a fold's run); artifacts download."""
    from nerveseg.track.run_reader import MlflowRuns

    experiment_id = tracking.setup_mlflow(store)
    client = tracking.get_client()
    finished = client.create_run(experiment_id, run_name="a", tags={schema.RUN_TYPE_TAG: schema.CV_RUN}).info.run_id
    client.log_text(finished, "hello", "sub/note.txt")
    client.set_terminated(finished)
    client.create_run(experiment_id, run_name="b", tags={schema.RUN_TYPE_TAG: schema.CV_RUN})  # still RUNNING
    client.set_terminated(client.create_run(experiment_id, tags={schema.RUN_TYPE_TAG: schema.FOLD_RUN}).info.run_id)

    runs = MlflowRuns(client, store.tracking_uri, store.experiment_name)
    assert [run.run_id for run in runs.candidates()] == [finished]

    local = tracking.download_artifacts(finished, "sub/note.txt", tmp_path / "dl")
    assert local.read_text() == "hello" and local.is_relative_to(tmp_path / "dl")
    with pytest.raises(ValueError, match=f"'nothing.txt' of MLflow run {finished}"):
        tracking.download_artifacts(finished, "nothing.txt", tmp_path / "dl")
    with pytest.raises(TrackingError, match="experiment 'nope' does not exist"):
        MlflowRuns(client, store.tracking_uri, "nope").candidates()


def test_ui_hint_links_the_runs_table_and_the_run_in_the_machine_learning_view() -> None:
    local = tracking.MlflowSettings("sqlite:////x/mlflow.db", "e", None)
    assert tracking.ui_hint(local, "3", "abc").splitlines() == [
        "start the MLflow UI: mlflow ui --backend-store-uri sqlite:////x/mlflow.db --port 5000",
        "runs table:      http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning",
        "parent run page: http://127.0.0.1:5000/#/experiments/3/runs/abc?workflowType=machine_learning",
    ]
    spaced = tracking.MlflowSettings("sqlite:////my runs/mlflow.db", "e", None)
    assert "--backend-store-uri 'sqlite:////my runs/mlflow.db' --port" in tracking.ui_hint(spaced, "3", "abc")
    server = tracking.MlflowSettings("http://host:5000/", "e", None)
    assert tracking.ui_hint(server, "3", "abc").splitlines() == [
        "runs table:      http://host:5000/#/experiments/3/runs?workflowType=machine_learning",
        "parent run page: http://host:5000/#/experiments/3/runs/abc?workflowType=machine_learning",
    ]


# ----------------------------------------------------------------------------------------- provenance


def test_git_state(tmp_path: Path) -> None:
    assert provenance.git_state(tmp_path) == ("unknown", "unknown")  # not a repository
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert provenance.git_state(tmp_path) == ("none", "false")  # no commit yet, nothing changed
    (tmp_path / "new.py").write_text("x = 1\n")
    assert provenance.git_state(tmp_path) == ("none", "true")
    commit, _ = provenance.git_state(PROJ_ROOT)
    assert commit == "none" or len(commit) == 40


def test_environment_tags_name_the_machine() -> None:
    tags = provenance.environment_tags()
    assert tags["device"].startswith(("CPU: ", "GPU x"))
    assert tags["tensorflow_version"].startswith("2.") and tags["keras_version"].startswith("3.")
    assert tags["git_dirty"] in {"true", "false", "unknown"}
    assert tags["mlflow_version"] == mlflow.__version__  # read from the metadata: the core never imports MLflow


# ------------------------------------------------------------------------------------------- run names


def test_epoch_metric_names_never_take_a_param_name() -> None:
    from nerveseg.config import TrainConfig
    from nerveseg.train.fold import HISTORY_KEYS

    epoch_metrics = [names.epoch_metric_name(key) for key in HISTORY_KEYS]
    assert sorted(epoch_metrics) == ["lr", "train_dice", "train_loss", "val_dice", "val_loss"]
    assert names.epoch_metric_name("presence_loss") == "train_presence_loss"  # a presence head's extra logs
    params = set(TrainConfig().to_params()) | {names.FOLD_PARAM, names.N_TRAIN_PARAM, names.N_VAL_PARAM,
                                                names.FOLD_SEED_PARAM, names.VAL_SUBJECTS_PARAM}  # fmt: skip
    kept = {names.kept_metric(key) for key in names.KEPT_HISTORY_KEYS}
    assert kept == {"val_dice_kept", "val_loss_kept", "train_loss_kept"}
    assert not (set(epoch_metrics) | kept | {names.KEPT_EPOCH, names.VAL_SCORE, names.EPOCH_SECONDS}) & params


def test_a_long_subject_list_is_cut_to_mlflows_param_limit_with_a_note() -> None:
    from nerveseg.names import truncated_list

    assert truncated_list(["1", "2", "3"]) == "1,2,3"
    values = [str(i) for i in range(3000)]
    text = truncated_list(values)
    assert len(text) <= 6000 and text.startswith("0,1,2,") and text.endswith(" more)")
    shown = text.split(",...")[0].split(",")
    assert text.endswith(f"... (+{3000 - len(shown)} more)") and shown == values[: len(shown)]
    assert truncated_list(values, limit=30) == "0,1,2,3,4,5,6,... (+2993 more)"
