"""Cross-validation tracked in MLflow, on the tiny synthetic set with an embedded SQLite store
(the plain end-to-end run and its artifacts: test_cv_train_e2e.py).

Covers resuming an interrupted run (and killing stale fold runs), spreading folds over calls
(``--fold k --parent-run-id``), refusing finished runs, and failing fast on an unreachable tracking
server before any training.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import cv_train
from helpers import free_port
from nerveseg.config import TrainConfig, config_to_yaml
from nerveseg.errors import NervesegError
from nerveseg.names import fold_score_metric
from nerveseg.paths import EXPERIMENTS_DIR
from nerveseg.run.cross_validate import cross_validate
from nerveseg.run.store import CVObserver, CVPaths
from nerveseg.tasks.base import CVFinal
from nerveseg.tasks.nerve import fold as training
from nerveseg.track.mlflow_store import MlflowStore
from nerveseg.track.schema import PARENT_TAG, RUN_TYPE_TAG
from nerveseg.track.store import MlflowSettings, download_artifacts, get_client
from nerveseg.train.fold import TrainingDivergedError

HISTORY_KEYS = ("loss", "val_loss", "dice", "val_dice", "learning_rate")


@pytest.fixture()
def dirs(synthetic_root: Path, tmp_path: Path) -> dict[str, Path]:
    return {"raw_dir": synthetic_root / "raw", "cache_dir": tmp_path / "cache", "folds_dir": tmp_path / "folds"}


@pytest.fixture()
def train_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records the fold of every ``train_fold`` call (training still happens)."""
    calls: list[int] = []
    real = training.train_fold

    def counting(config: TrainConfig, data: Any, folds: np.ndarray, fold: int, *args: Any, **kwargs: Any) -> Any:
        calls.append(fold)
        return real(config, data, folds, fold, *args, **kwargs)

    monkeypatch.setattr(training, "train_fold", counting)
    return calls


def artifact_paths(run_id: str, path: str | None = None) -> set[str]:
    client = get_client()
    found: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifact_paths(run_id, item.path) if item.is_dir else {item.path}
    return found


def children(parent_id: str) -> list[Any]:
    client = get_client()
    parent = client.get_run(parent_id)
    return client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'",
        order_by=["attributes.start_time ASC"],
    )


def fold_scores(final: CVFinal) -> set[int]:
    """The folds whose score the summary holds."""
    return {k for k in range(10) if fold_score_metric(k) in final.metrics}


# ------------------------------------------------------------------------------------------ end to end


class StopAt(CVObserver):
    """An observer that raises ``error`` at the end of epoch ``epoch`` of fold ``fold``."""

    def __init__(self, fold: int, epoch: int, error: BaseException) -> None:
        super().__init__()
        self.fold, self.epoch, self.error = fold, epoch, error
        self.fold_scores: dict[int, float] = {}

    def on_epoch_end(self, fold: int, epoch: int, logs: dict[str, float]) -> None:
        assert set(HISTORY_KEYS) <= set(logs)
        if (fold, epoch) == (self.fold, self.epoch):
            raise self.error

    def on_fold_end(self, fold: int, score: float) -> None:
        self.fold_scores[fold] = score


@pytest.mark.slow
def test_interrupted_run_resumes_only_the_missing_folds(
    tiny_config: TrainConfig,
    store: MlflowSettings,
    dirs: dict[str, Path],
    train_calls: list[int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tiny_config.replace(epochs=1)
    listener = StopAt(fold=1, epoch=0, error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        cross_validate(config, CVPaths(**dirs), MlflowStore(progress=False), [listener], progress=False)
    assert train_calls == [0, 1] and set(listener.fold_scores) == {0}
    client = get_client()
    parent_id = children_parent_id(store)
    first = children(parent_id)
    assert client.get_run(parent_id).info.status == "KILLED"
    assert [(r.info.run_name, r.info.status) for r in first] == [("fold_0", "FINISHED"), ("fold_1", "KILLED")]
    assert first[1].data.tags["nerveseg.stopped"] == "KeyboardInterrupt"

    # newer decoys that --resume must not pick: other params, and a FINISHED run with the same params
    experiment_id = client.get_run(parent_id).info.experiment_id
    other = client.create_run(experiment_id, run_name="tiny", tags={RUN_TYPE_TAG: "cv"}).info.run_id
    client.log_param(other, "epochs", "7")
    client.set_terminated(other, "KILLED")
    done = client.create_run(experiment_id, run_name="tiny", tags={RUN_TYPE_TAG: "cv"}).info.run_id
    for key, value in config.to_params().items():
        client.log_param(done, key, str(value))
    client.set_terminated(done, "FINISHED")
    # a fold run whose process was killed with kill -9: nobody marked it, it stays RUNNING
    stale_tags = {PARENT_TAG: parent_id, RUN_TYPE_TAG: "fold", "fold": "2"}
    stale = client.create_run(experiment_id, run_name="fold_2", tags=stale_tags).info.run_id
    capsys.readouterr()

    train_calls.clear()
    result = cross_validate(config, CVPaths(**dirs), MlflowStore(resume=True), progress=True)
    err = capsys.readouterr().err
    assert f"resuming parent run {parent_id} (tiny, status KILLED" in err
    assert "fold 1 (1/2) done in" in err and "fold 2 (2/2) done in" in err  # the ETA counts only what is left
    assert "2 folds trained in" in err
    assert f"marked stale fold run {stale}" in err
    assert result.parent_id == parent_id and result.trained_folds == [1, 2]
    assert train_calls == [1, 2]
    assert result.final is not None and fold_scores(result.final) == {0, 1, 2}
    assert result.final.decision is not None
    assert client.get_run(parent_id).info.status == "FINISHED"
    after = [(r.info.run_name, r.info.status) for r in children(parent_id)]
    assert after == [
        ("fold_0", "FINISHED"),
        ("fold_1", "KILLED"),
        ("fold_2", "KILLED"),  # the stale one, marked by --resume
        ("fold_1", "FINISHED"),
        ("fold_2", "FINISHED"),
    ]
    assert client.get_run(stale).data.tags["nerveseg.stopped"] == "stale"
    assert result.final.metrics[fold_score_metric(0)] == pytest.approx(
        listener.fold_scores[0]
    )  # fold 0 came from its run
    assert "plots/progress.png" in artifact_paths(parent_id)  # with fold 0's curves, read from its run


def children_parent_id(settings: MlflowSettings) -> str:
    """The only cv run of the store's experiment (for tests that do not get the id back)."""
    client = get_client()
    experiment = client.get_experiment_by_name(settings.experiment_name)
    (run,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{RUN_TYPE_TAG}` = 'cv'")
    return run.info.run_id


@pytest.mark.slow
def test_folds_spread_over_calls_join_one_parent(
    tiny_config: TrainConfig,
    store: MlflowSettings,
    dirs: dict[str, Path],
    train_calls: list[int],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    config = tiny_config.replace(folds=2, epochs=1)
    first = cross_validate(config, CVPaths(**dirs), MlflowStore(progress=False), fold=0, progress=False)
    parent_id = first.parent_id
    assert first.final is None and first.trained_folds == [0]
    assert f"--fold <k> --parent-run-id {parent_id}" in capsys.readouterr().err
    client = get_client()
    assert client.get_run(parent_id).info.status == "RUNNING"

    with pytest.raises(ValueError, match=r"fold\(s\) \[0\] of parent run .* already FINISHED"):
        cross_validate(config, CVPaths(**dirs), MlflowStore(parent_run_id=parent_id), fold=0, progress=False)
    with pytest.raises(ValueError, match=r"started with other settings .*epochs: run '1' vs config '2'"):
        cross_validate(config.replace(epochs=2), CVPaths(**dirs), MlflowStore(parent_run_id=parent_id), fold=1)
    assert train_calls == [0]

    second = cross_validate(config, CVPaths(**dirs), MlflowStore(parent_run_id=parent_id), fold=1, progress=False)
    assert second.parent_id == parent_id and second.final is not None
    assert train_calls == [0, 1]
    assert client.get_run(parent_id).info.status == "FINISHED"
    fold0 = children(parent_id)[0].info.run_id
    with (
        np.load(download_artifacts(fold0, "oof/oof_fold_0.npz", tmp_path / "f0")) as part,
        np.load(download_artifacts(parent_id, "oof/oof_probs.npz", tmp_path / "all")) as whole,
    ):
        index = np.isin(whole["ids"], part["ids"])
        np.testing.assert_array_equal(whole["probs"][index], part["probs"])


# --------------------------------------------------------------------------------- failures, quickly


def forbid(name: str) -> Callable[..., Any]:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"{name} must not be called")

    return fail


def test_unreachable_tracking_server_fails_before_any_work(
    tiny_config: TrainConfig,
    dirs: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setattr("nerveseg.data.cache.prepare_train", forbid("prepare_train"))  # what the nerve task calls
    monkeypatch.setattr(training, "train_fold", forbid("train_fold"))
    started = time.monotonic()
    with pytest.raises(ValueError, match=f"MLflow tracking server {uri} is not reachable"):
        cross_validate(tiny_config, CVPaths(**dirs), MlflowStore())
    yaml_path = tmp_path / "tiny.yaml"
    yaml_path.write_text(config_to_yaml(tiny_config))
    assert cv_train.main(["--config", str(yaml_path), "--raw-dir", str(dirs["raw_dir"])]) == 2
    assert time.monotonic() - started < 10
    err = capsys.readouterr().err
    assert err.startswith(f"error: MLflow tracking server {uri} is not reachable") and err.count("\n") == 1


def test_cli_rejects_bad_input_in_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cv_train.main(["--config", str(tmp_path / "nope.yaml")]) == 2
    assert (
        capsys.readouterr().err
        == f"error: config file {tmp_path / 'nope.yaml'} does not exist; pass an existing experiments/<name>.yaml\n"
    )
    assert cv_train.main(["--config", str(EXPERIMENTS_DIR / "demo.yaml"), "--fold", "5"]) == 2
    assert "error: fold=5 is out of range; this config has folds 0..4" in capsys.readouterr().err


def test_registry_options_that_would_do_nothing_are_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """``--model-name``/``--alias`` only say how ``--register`` registers (issue 29: they were accepted and ignored);
    ``register.py --out`` writes a folder, which has neither."""
    import register

    for option in ("--model-name", "--alias"):
        assert cv_train.main([option, "x"]) == 2
        assert capsys.readouterr().err == (
            "error: --model-name and --alias say how --register registers it: add --register or drop them\n"
        )
    assert register.main(["--out", str(tmp_path / "model"), "--model-name", "x"]) == 2
    assert "drop --model-name and --alias" in capsys.readouterr().err and not (tmp_path / "model").exists()


class Pruned(Exception):
    """Stands for optuna.TrialPruned."""


def fake_train_fold(error: BaseException | None) -> Callable[..., Any]:
    """A train_fold that reports one epoch to the callbacks, then raises ``error``."""

    def train(config: TrainConfig, data: Any, folds: np.ndarray, fold: int, workdir: Path, **kwargs: Any) -> Any:
        logs = {"loss": 0.9, "val_loss": 0.95, "dice": 0.1, "val_dice": 0.2, "learning_rate": 1e-3}
        for callback in kwargs["callbacks"]:
            callback.on_epoch_begin(0, logs)
            callback.on_epoch_end(0, logs)
        if error is not None:
            raise error
        raise AssertionError("the listener should have stopped the fold")

    return train


@pytest.mark.parametrize(
    ("train_error", "status", "tag"),
    [
        (None, "KILLED", ("nerveseg.stopped", "Pruned")),  # the listener raises Pruned
        (
            TrainingDivergedError("loss became nan"),
            "FAILED",
            ("nerveseg.error", "TrainingDivergedError: loss"),
        ),
    ],
)
def test_failures_mark_the_runs(
    train_error: BaseException | None,
    status: str,
    tag: tuple[str, str],
    tiny_config: TrainConfig,
    store: MlflowSettings,
    dirs: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(training, "train_fold", fake_train_fold(train_error))
    listener = StopAt(fold=0, epoch=0, error=Pruned()) if train_error is None else None
    with pytest.raises(type(train_error) if train_error else Pruned):
        cross_validate(
            tiny_config, CVPaths(**dirs), MlflowStore(progress=False), [listener] if listener else [], progress=False
        )
    parent_id = children_parent_id(store)
    (child,) = children(parent_id)
    client = get_client()
    for run in (client.get_run(parent_id), child):
        assert run.info.status == status
        assert run.data.tags[tag[0]].startswith(tag[1])
    assert [m.value for m in client.get_metric_history(child.info.run_id, "val_dice")] == [0.2]


def test_nested_parent_and_extra_tags(
    tiny_config: TrainConfig, store: MlflowSettings, dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """tune's case: the CV parent is a child of the study run and carries the trial number."""
    from nerveseg.track.store import setup_mlflow

    study = get_client().create_run(setup_mlflow(store), run_name="study").info.run_id
    monkeypatch.setattr(training, "train_fold", fake_train_fold(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        store = MlflowStore(nested_under=study, parent_tags={"optuna.trial_number": "3"}, progress=False)
        cross_validate(tiny_config, CVPaths(**dirs), store, progress=False)
    (trial,) = children(study)
    assert trial.data.tags[RUN_TYPE_TAG] == "cv" and trial.data.tags["optuna.trial_number"] == "3"
    assert trial.info.status == "KILLED"
    assert get_client().get_run(study).info.status == "RUNNING"  # the study run is tune's to end
    with pytest.raises(ValueError, match="nested_under='nope' is not a run"):
        cross_validate(tiny_config, CVPaths(**dirs), MlflowStore(nested_under="nope"))


# ----------------------------------------------------------------------------------------------- plots


def test_plots(tmp_path: Path) -> None:
    from nerveseg.report.plots import plot_learning_curves
    from nerveseg.tasks.nerve.gallery import pick_best_worst, plot_gallery

    history = {key: [0.5, 0.4, 0.45] for key in HISTORY_KEYS}
    path = plot_learning_curves(history, tmp_path / "curves.png", best_epoch=2, title="fold 0")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    scores = np.array([1.0, 0.2, 0.9, 0.0, 0.0, 0.7])
    nerve = np.array([False, True, True, True, False, True])
    best, worst = pick_best_worst(scores, nerve, count=2)
    assert best.tolist() == [2, 5]  # the empty image scoring 1.0 is not "best"
    assert worst.tolist() == [4, 3]  # lowest scores, listed from better to worse

    images = np.zeros((2, 42, 58), np.uint8)
    masks = np.zeros((2, 42, 58), np.uint8)
    masks[:, 10:20, 10:30] = 1
    gallery = plot_gallery(images, masks, masks[::-1] * 0, ["a", "b"], tmp_path / "g.png")
    assert gallery.stat().st_size > 1000
    with pytest.raises(ValueError, match="as many truths, predictions and titles as images"):
        plot_gallery(images, masks, masks, ["a"], tmp_path / "g.png")


def test_predict_subjects_comes_from_the_option_else_the_test_masks_subjects(tmp_path: Path) -> None:
    masks = tmp_path / "masks"
    masks.mkdir()
    (masks / "subjects.csv").write_text("id,subject\n1,17\n2,17\n3,18\n4,19\n")
    assert cv_train.predict_subjects(cv_train.parse_args(["--test-masks", str(masks)])) == 3
    assert cv_train.predict_subjects(cv_train.parse_args(["--test-masks", str(masks), "--predict-subjects", "9"])) == 9
    assert cv_train.predict_subjects(cv_train.parse_args([])) is None  # the config's value (0: one fold's worth)
    with pytest.raises(NervesegError, match=r"subjects\.csv"):
        cv_train.predict_subjects(cv_train.parse_args(["--test-masks", str(tmp_path)]))
