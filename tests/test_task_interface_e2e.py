"""The task interface end to end: ``cv_train.py`` and ``submit.py`` run the ISBI 2012 task unchanged.

Once per module: a tiny tracked ISBI CV (six 64x64 synthetic EM slices, 2 block folds, 1 epoch, a tiny
U-Net) into an embedded SQLite MLflow store, then ``submit.py`` writes the TIFF stack. Focused tests check
the parent run (task param, Rand-error metrics, description), the block folds file, the submission run,
and that ranking follows the task (its metric and direction; runs of the other task are never picked, and without
``--task`` the task is that of the newest run trained on ``--raw-dir``'s data).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import cv_train
import submit
from helpers import quiet_main
from nerveseg import names
from nerveseg.config import TrainConfig, config_to_yaml
from nerveseg.errors import NervesegError
from nerveseg.names import VAL_V_RAND_ERROR
from nerveseg.tasks import get_task
from nerveseg.track import run_reader, schema
from nerveseg.track.store import get_client

pytestmark = pytest.mark.slow

SIZE = 64
CONFIG = TrainConfig(name="tiny_isbi", task="isbi2012", height=SIZE, width=SIZE, depth=3, base_filters=4,
                     crop_size=32, batch_size=4, epochs=1, steps_per_epoch=2, folds=2, seed=1,
                     epoch_rand_error=True)  # fmt: skip


def test_get_task_knows_both_tasks_and_refuses_others_in_one_line() -> None:
    nerve, isbi = get_task("nerve"), get_task("isbi2012")
    assert (nerve.name, nerve.ranking_metric, nerve.higher_is_better) == ("nerve", "cv_score_mean", True)
    assert (isbi.name, isbi.ranking_metric, isbi.higher_is_better) == ("isbi2012", "cv_v_rand_error_mean", False)
    with pytest.raises(NervesegError) as caught:
        get_task("isbi2013")
    assert "\n" not in str(caught.value) and "nerve, isbi2012" in str(caught.value)


@dataclass
class Tracked:
    parent_id: str
    out: str
    err: str
    root: Path
    raw_dir: Path
    folds_dir: Path


@pytest.fixture(scope="module")
def tracked(empty_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tracked]:
    from nerveseg.tasks.isbi2012.synthetic import generate_em

    root = tmp_path_factory.mktemp("task_e2e")
    shutil.copy(empty_db, root / "mlflow.db")
    raw_dir = root / "raw"
    generate_em(raw_dir / "isbi2012", n_train=6, n_test=2, size=SIZE, seed=3, progress=False)
    (root / "tiny_isbi.yaml").write_text(config_to_yaml(CONFIG))
    dirs = {"raw_dir": raw_dir, "cache_dir": root / "cache", "folds_dir": root / "folds"}
    argv = ["--config", str(root / "tiny_isbi.yaml")]  # with progress: the ETA lines are checked
    argv += [f"--{k.replace('_', '-')}={v}" for k, v in dirs.items()]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        patch.setenv("MLFLOW_EXPERIMENT_NAME", "nerveseg")
        err = io.StringIO()
        out = quiet_main(cv_train.main, argv, err)
        parent_id = out.split("parent run: ")[1].split()[0]
        yield Tracked(parent_id, out, err.getvalue(), root, raw_dir, root / "folds")


def test_cv_train_runs_the_isbi_task_and_ranks_by_v_rand_error(tracked: Tracked) -> None:
    run = get_client().get_run(tracked.parent_id)
    assert run.info.status == "FINISHED" and run.data.params["task"] == "isbi2012"
    metrics = run.data.metrics
    for name in ("cv_v_rand_error_mean", "cv_pixel_error_mean", "cv_v_info_error_mean", "cv_adapted_rand_error_mean"):
        assert np.isfinite(metrics[name]), name
    assert np.isfinite(metrics["oof_v_rand_error"])
    assert metrics["cv_v_rand_error_mean"] == pytest.approx(
        np.mean([metrics["fold_0_v_rand_error"], metrics["fold_1_v_rand_error"]])
    )
    assert "cv_score_mean" not in metrics  # the nerve task's metric is not faked
    assert "v_rand_error" in tracked.out and "cv_v_rand_error_mean" in run.data.tags[schema.DESCRIPTION_TAG]


def test_the_isbi_trainer_shows_each_folds_time_and_the_eta(tracked: Tracked) -> None:
    assert re.search(r"^fold 0 \(1/2\) done in .+; CV \d+ % done, about .+ left$", tracked.err, re.M), tracked.err
    assert re.search(r"^fold 1 \(2/2\) done in .+; 2 folds trained in ", tracked.err, re.M)


def test_the_isbi_run_keeps_each_slices_rand_error_for_compare(tracked: Tracked) -> None:
    from nerveseg.run.comparison import compare_runs
    from nerveseg.track.run_reader import open_run

    reader = open_run(tracked.parent_id, get_client().tracking_uri)
    scores = reader.image_scores()
    assert scores.metric == "oof_v_rand_error" and scores.ids.tolist() == scores.subjects.tolist()  # a slice each
    assert scores.scores.mean() == pytest.approx(reader.metrics()["oof_v_rand_error"], abs=1e-12)
    comparison = compare_runs([reader, reader])
    assert not comparison.higher_is_better and comparison.differences[0].difference == 0.0


def test_fold_runs_hold_contiguous_blocks_and_the_folds_file_is_written_once(tracked: Tracked) -> None:
    client = get_client()
    folds = run_reader.newest_finished_fold_runs(client, client.get_run(tracked.parent_id))
    assert sorted(folds) == [0, 1]
    assert [folds[k].data.params["val_slices"] for k in (0, 1)] == ["0-2", "3-5"]
    for k in (0, 1):  # epoch_rand_error: the held-out V_rand error per epoch, the last one the fold's score
        (last,) = client.get_metric_history(folds[k].info.run_id, VAL_V_RAND_ERROR)
        assert last.step == 1 and last.value == pytest.approx(
            client.get_run(tracked.parent_id).data.metrics[f"fold_{k}_v_rand_error"]
        )
    files = list(tracked.folds_dir.glob("*.json"))
    assert len(files) == 1
    saved = json.loads(files[0].read_text())
    assert saved["folds"] == {str(k): int(k >= 3) for k in range(6)}
    before = files[0].stat().st_mtime_ns
    task = get_task("isbi2012")
    data = task.load_train(CONFIG, tracked.raw_dir, tracked.root / "cache", progress=False)
    again, path = task.make_folds(data, CONFIG, tracked.folds_dir)
    assert path == files[0] and path.stat().st_mtime_ns == before and again.tolist() == [0, 0, 0, 1, 1, 1]


def _fake_cv_run(task: str, metrics: dict[str, float], fingerprint: str = "") -> str:
    """A FINISHED parent-like CV run with only what ranking reads (task param, ranking metric, data fingerprint)."""
    client = get_client()
    experiment = client.get_experiment_by_name("nerveseg").experiment_id
    tags = {schema.RUN_TYPE_TAG: schema.CV_RUN, **({names.DATA_FINGERPRINT: fingerprint} if fingerprint else {})}
    run_id = client.create_run(experiment, run_name=f"fake_{task}", tags=tags).info.run_id
    client.log_param(run_id, "task", task)
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    client.set_terminated(run_id, "FINISHED")
    return run_id


def test_submit_writes_the_isbi_stack_from_the_isbi_run_not_a_newer_nerve_one(tracked: Tracked) -> None:
    from nerveseg.run.choice import DataToMatch, choose_cv_run
    from nerveseg.tasks.isbi2012.submission import read_probability_stack
    from nerveseg.track.run_reader import MlflowRuns

    client = get_client()
    fingerprint = client.get_run(tracked.parent_id).data.tags[names.DATA_FINGERPRINT]
    worse = _fake_cv_run("isbi2012", {"cv_v_rand_error_mean": 2.0}, fingerprint)  # higher V_rand error: never best
    nerve = _fake_cv_run("nerve", {"cv_score_mean": 0.99})  # newest, and the "best" score of all
    uri, data = client.tracking_uri, DataToMatch(tracked.raw_dir, tracked.root / "cache", progress=False)

    def best(task: str | None, data: DataToMatch | None) -> str:
        choice = choose_cv_run(MlflowRuns(client, uri, "nerveseg"), task, data)[1]
        assert choice.best is not None
        return choice.best.run.run_id

    assert best(None, None) == nerve  # no task and no data given: the newest run's task
    assert best(None, data) == best("isbi2012", data) == tracked.parent_id != worse  # the newest run on this data
    out_dir = tracked.root / "subs"
    argv = ["--task", "isbi2012", "--raw-dir", str(tracked.raw_dir), "--out-dir", str(out_dir), "--no-progress"]
    out = quiet_main(submit.main, argv)
    (path,) = out_dir.glob("*.tif")
    assert path.name.endswith("_tiny_isbi.tif") and f"wrote {path}" in out
    pngs = path.with_suffix("")  # beside the stack: each slice's thresholded membrane map
    assert sorted(out_dir.iterdir()) == sorted([path, pngs]) and sorted(p.name for p in pngs.iterdir()) == [
        "0.png",
        "1.png",
    ]
    probs = read_probability_stack(path, shape=(SIZE, SIZE))
    assert probs.dtype == np.float32 and probs.shape == (2, SIZE, SIZE) and 0.0 < probs.mean() < 1.0
    (child,) = [
        r
        for r in client.search_runs([client.get_run(tracked.parent_id).info.experiment_id])
        if r.data.tags.get(schema.RUN_TYPE_TAG) == schema.SUBMISSION_RUN
    ]
    assert child.data.tags[schema.PARENT_TAG] == tracked.parent_id and child.info.status == "FINISHED"
    assert child.data.params["task"] == "isbi2012" and child.data.tags["submission_file"] == path.name
    assert {"threshold", "min_cell_area"} <= child.data.params.keys()
    assert [a.path for a in client.list_artifacts(child.info.run_id, names.SUBMISSION_DIR)] == [
        f"{names.SUBMISSION_DIR}/{path.name}"
    ]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):  # no config: one line, no file
        assert submit.main(["--run-id", nerve, "--raw-dir", str(tracked.raw_dir), "--out-dir", str(out_dir)]) == 2
    assert err.getvalue().startswith("error: ") and err.getvalue().count("\n") == 1
    assert sorted(out_dir.iterdir()) == sorted([path, pngs])


def test_tune_minimises_the_isbi_v_rand_error(tracked: Tracked, monkeypatch: pytest.MonkeyPatch) -> None:
    optuna = pytest.importorskip("optuna")
    from nerveseg.tune.search_space import parse_search_space
    from nerveseg.tune.study import TuneSettings, run_study

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tracked.root / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "isbi-tune")
    monkeypatch.chdir(tracked.root)
    space = parse_search_space({"learning_rate": {"type": "float", "low": 1e-3, "high": 3e-3, "log": True}}, source="t")
    storage = f"sqlite:///{tracked.root / 'optuna.db'}"
    settings = TuneSettings(
        study_name="isbi-study", n_trials=2, base_config=CONFIG, space=space, storage=storage,
        raw_dir=tracked.raw_dir, cache_dir=tracked.root / "cache", folds_dir=tracked.folds_dir,
        pruner=optuna.pruners.NopPruner(), seed=0, experiments_dir=tracked.root / "experiments", progress=False,
    )  # fmt: skip
    run_study(settings, out=lambda line: None)
    study = optuna.load_study(study_name="isbi-study", storage=storage)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE and study.metric_names == ["cv_v_rand_error_mean"]
    client = get_client()
    values = []
    for trial in study.get_trials():
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert trial.value == pytest.approx(run.data.metrics["cv_v_rand_error_mean"])  # the task's ranking metric
        values.append(trial.value)
    assert study.best_value == min(values)
