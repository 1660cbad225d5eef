"""``cv_train.py`` end to end, once per module: a tiny 3-fold CV on the synthetic set into an embedded
SQLite MLflow store, then one focused test per promise (console, parent run, fold runs, logged files,
reloadable weights, finished runs left alone). Names come from the run schema, as the readers use them."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

import cv_train
from nerveseg import names
from nerveseg.config import TrainConfig, config_to_yaml
from nerveseg.run import fold_files
from nerveseg.run.cross_validate import cross_validate
from nerveseg.run.store import CVPaths
from nerveseg.tasks.nerve import fold as training
from nerveseg.track import run_reader, schema
from nerveseg.track.mlflow_store import MlflowStore
from nerveseg.track.schema import RUN_TYPE_TAG
from nerveseg.track.store import download_artifacts, get_client

pytestmark = pytest.mark.slow

EPOCH_METRICS = ("train_loss", "val_loss", "train_dice", "val_dice", "lr", "epoch_seconds")  # as a user reads them
PARENT_TAGS = ("git_commit", "git_dirty", "data_fingerprint", "folds_file_sha256", "tensorflow_version",
               "keras_version", "device")  # fmt: skip
CONFIG = TrainConfig(name="tiny", height=32, width=40, depth=3, base_filters=4, learning_rate=1e-3, batch_size=8,
                     epochs=2, folds=3, seed=1)  # fmt: skip


@dataclass
class Trained:
    """What the one ``cv_train.py`` call left behind."""

    parent_id: str
    out: str
    err: str
    argv: list[str]
    dirs: dict[str, Path]
    downloads: Path
    train_calls: list[int] = field(default_factory=list)


@pytest.fixture(scope="module")
def trained(synthetic_root: Path, empty_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    root = tmp_path_factory.mktemp("cv_e2e")
    shutil.copy(empty_db, root / "mlflow.db")
    dirs = {"raw_dir": synthetic_root / "raw", "cache_dir": root / "cache", "folds_dir": root / "folds"}
    (root / "tiny.yaml").write_text(config_to_yaml(CONFIG))
    argv = ["--config", str(root / "tiny.yaml")] + [f"--{k.replace('_', '-')}={v}" for k, v in dirs.items()]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        patch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
        calls: list[int] = []
        real = training.train_fold
        patch.setattr(
            training, "train_fold", lambda c, d, f, k, *a, **kw: calls.append(k) or real(c, d, f, k, *a, **kw)
        )
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            assert cv_train.main(argv) == 0
        parent_id = out.getvalue().split("parent run: ")[1].split()[0]
        yield Trained(parent_id, out.getvalue(), err.getvalue(), argv, dirs, root / "downloads", calls)


def artifact_paths(run_id: str, path: str | None = None) -> set[str]:
    found: set[str] = set()
    for item in get_client().list_artifacts(run_id, path):
        found |= artifact_paths(run_id, item.path) if item.is_dir else {item.path}
    return found


def fold_runs(parent_id: str) -> list:
    client = get_client()
    parent = client.get_run(parent_id)
    runs = run_reader.newest_finished_fold_runs(client, parent)
    return [runs[k] for k in sorted(runs)]


def test_the_console_shows_the_table_the_parent_run_and_how_to_open_it(trained: Trained) -> None:
    assert trained.train_calls == [0, 1, 2]
    for line in ("fold        score", "mean ± std", "OOF ", "all-empty", "mlflow ui --backend-store-uri"):
        assert line in trained.out
    assert "fold 2 (3/3; 3 folds in all)" in trained.err and "Epoch 2/2" in trained.out + trained.err


def test_the_console_shows_each_epochs_time_the_eta_and_each_folds_time(trained: Trained) -> None:
    lines = trained.err.splitlines()
    # the first epoch's time and the whole CV's ETA as the second epoch begins, then each fold's time
    assert any(re.match(r"fold 0 \(1/3\) epoch 1/2 took \d+ s; CV \d+ % done, about .+ left$", x) for x in lines)
    assert any(re.match(r"fold 1 \(2/3\) done in .+; CV \d+ % done, about .+ left$", x) for x in lines)
    assert any(re.match(r"fold 2 \(3/3\) done in .+; 3 folds trained in ", x) for x in lines), trained.err[-2000:]


def test_the_parent_run_holds_params_tags_metrics_and_artifacts(trained: Trained) -> None:
    parent = get_client().get_run(trained.parent_id)
    assert parent.info.run_name == "tiny" and parent.info.status == "FINISHED"
    assert parent.data.params == {key: str(value) for key, value in CONFIG.to_params().items()}
    assert parent.data.tags[RUN_TYPE_TAG] == schema.CV_RUN and parent.data.params["seed"] == "1"
    assert "seed" not in parent.data.tags  # a param, not also a tag
    assert set(PARENT_TAGS) <= set(parent.data.tags)
    plain = {names.CV_SCORE_MEAN, names.CV_SCORE_STD, names.OOF_SCORE, names.EMPTY_BASELINE_SCORE}
    honest = {names.OOF_SCORE_POSTPROCESSED, names.OOF_SCORE_POSTPROCESSED_INSAMPLE}
    honest |= {names.CV_SCORE_CI_LOW, names.CV_SCORE_CI_HIGH}
    metrics = parent.data.metrics
    assert plain | honest <= set(metrics)
    assert metrics[names.CV_SCORE_CI_LOW] <= metrics[names.OOF_SCORE] <= metrics[names.CV_SCORE_CI_HIGH]
    assert parent.data.tags[names.CHECKPOINT_TAG] == CONFIG.checkpoint
    assert parent.data.tags[names.OPTIMISTIC_TAG] == "false"
    folds_name = next(iter(artifact_paths(trained.parent_id, names.FOLDS_DIR)))
    assert artifact_paths(trained.parent_id) == {
        names.CONFIG_ARTIFACT,
        folds_name,
        names.OOF_PROBS_ARTIFACT,
        names.IMAGE_SCORES_ARTIFACT,
        names.SUMMARY_ARTIFACT,
        names.POSTPROCESSING_ARTIFACT,
        "plots/gallery.png",
        "plots/progress.png",
        "plots/subject_scores.png",
    }
    assert folds_name.startswith("folds/folds_") and folds_name.endswith("_k3_s1.json")


def test_each_fold_run_holds_its_history_score_and_artifacts(trained: Trained) -> None:
    client = get_client()
    metrics = client.get_run(trained.parent_id).data.metrics
    runs = fold_runs(trained.parent_id)
    assert [run.info.run_name for run in runs] == ["fold_0", "fold_1", "fold_2"]
    for k, run in enumerate(runs):
        assert run.data.tags[RUN_TYPE_TAG] == schema.FOLD_RUN and run.data.tags[schema.FOLD_TAG] == str(k)
        for key in EPOCH_METRICS:
            assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2], key
        # the parent's fold score is recomputed from the OOF predictions: it must equal the fold's own
        assert metrics[names.fold_score_metric(k)] == pytest.approx(run.data.metrics[names.VAL_SCORE], abs=1e-9)
        assert artifact_paths(run.info.run_id) == {
            names.weights_artifact(k),
            names.MODEL_SUMMARY_ARTIFACT,
            names.oof_fold_artifact(k),
            names.fold_facts_artifact(k),
            "plots/learning_curve.png",
        }
    mean = np.mean([metrics[names.fold_score_metric(k)] for k in range(3)])
    assert mean == pytest.approx(metrics[names.CV_SCORE_MEAN])


def test_the_parent_description_holds_the_cv_table(trained: Trained) -> None:
    run = get_client().get_run(trained.parent_id)
    text, metrics = run.data.tags[schema.DESCRIPTION_TAG], run.data.metrics
    facts = {k: json.loads(download_artifacts(r.info.run_id, names.fold_facts_artifact(k), trained.downloads)
                           .read_text()) for k, r in enumerate(fold_runs(trained.parent_id))}  # fmt: skip
    assert text.startswith("### tiny: 3-fold cross-validation")
    (mean_row,) = [line for line in text.splitlines() if line.startswith("mean over folds")]
    assert mean_row.split()[3:5] == [f"{metrics[names.CV_SCORE_MEAN]:.4f}", "±"]
    assert f"{metrics[names.OOF_SCORE]:.4f}" in text and f"{metrics[names.OOF_SCORE_POSTPROCESSED]:.4f}" in text
    assert "fold  score   kept epoch" in text
    for k in range(3):  # one row per fold: its score (rounded for reading) and its kept epoch
        row = f"{k}     {metrics[names.fold_score_metric(k)]:.4f}  {facts[k]['kept_epoch']}"
        assert row in text.splitlines(), row
    assert "missed nerves (FN)" in text and "false alarms (FP)" in text
    low, high = metrics[names.CV_SCORE_CI_LOW], metrics[names.CV_SCORE_CI_HIGH]
    (interval_row,) = [line for line in text.splitlines() if line.startswith("95 % interval of the mean")]
    assert interval_row.split()[-3:] == [f"{low:.4f}", "–", f"{high:.4f}"]
    assert "- checkpoint rule: last\n" in text and "cross-fitted" in text


def test_fold_runs_are_self_contained(trained: Trained) -> None:
    """Params side by side with the parent's, and the kept epoch's values under their own names."""
    client = get_client()
    parent_params = client.get_run(trained.parent_id).data.params
    sizes = []
    for k, run in enumerate(fold_runs(trained.parent_id)):
        params, metrics = run.data.params, run.data.metrics
        assert {key: params[key] for key in parent_params} == parent_params
        assert (params["fold"], params["fold_seed"]) == (str(k), str(CONFIG.seed + k))
        facts = json.loads(download_artifacts(run.info.run_id, names.fold_facts_artifact(k), trained.downloads)
                           .read_text())  # fmt: skip
        subjects = sorted({i.split("_")[0] for i in facts["val_ids"]}, key=int)
        assert params["val_subjects"] == ",".join(subjects) and params["n_val"] == str(len(facts["val_ids"]))
        sizes.append(int(params["n_train"]) + int(params["n_val"]))
        kept = facts["kept_epoch"]
        assert metrics["kept_epoch"] == kept
        assert metrics["val_dice_kept"] == facts["history"]["val_dice"][kept - 1]
        assert metrics["val_loss_kept"] == facts["history"]["val_loss"][kept - 1]
        assert metrics["train_loss_kept"] == facts["history"]["loss"][kept - 1]
        curve = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_dice")}
        assert curve[kept] == metrics["val_dice_kept"]  # the kept epoch, not the last one logged
    assert len(set(sizes)) == 1  # every fold splits the same images


def test_no_metric_shares_a_param_name(trained: Trained) -> None:
    client = get_client()
    runs = [client.get_run(trained.parent_id), *fold_runs(trained.parent_id)]
    for run in runs:
        assert run.data.params and run.data.metrics
        assert not set(run.data.params) & set(run.data.metrics), run.info.run_name
        # a fold run's "fold" is a tag (what readers filter on) and a param (for the table), with one value
        assert set(run.data.params) & set(run.data.tags) <= {schema.FOLD_TAG}, run.info.run_name
        assert run.data.params.get(schema.FOLD_TAG) == run.data.tags.get(schema.FOLD_TAG)
        assert "learning_rate" in run.data.params and "loss" in run.data.params


def test_logged_config_summary_and_postprocessing_agree_with_the_metrics(trained: Trained) -> None:
    from nerveseg.evaluate.postprocess_settings import PostprocessDecision

    parent_id, downloads = trained.parent_id, trained.downloads
    metrics = get_client().get_run(parent_id).data.metrics
    assert download_artifacts(parent_id, names.CONFIG_ARTIFACT, downloads).read_text() == config_to_yaml(CONFIG)
    summary = json.loads(download_artifacts(parent_id, names.SUMMARY_ARTIFACT, downloads).read_text())
    assert summary["oof_score"] == pytest.approx(metrics[names.OOF_SCORE])
    post = json.loads(download_artifacts(parent_id, names.POSTPROCESSING_ARTIFACT, downloads).read_text())
    assert {"threshold", "min_area", "largest_component", "presence_threshold", "steps"} <= set(post)
    decision = PostprocessDecision.from_json(post)
    assert decision.oof_score_raw == pytest.approx(metrics[names.OOF_SCORE])
    assert decision.oof_score == pytest.approx(metrics[names.OOF_SCORE_POSTPROCESSED_INSAMPLE])


def test_a_folds_weights_reproduce_its_out_of_fold_probabilities(trained: Trained) -> None:
    from nerveseg.data.cache import prepare_train
    from nerveseg.inference.ensemble import predict_ensemble
    from nerveseg.model.unet import build_model_from_config

    downloads = trained.downloads
    data = prepare_train(
        trained.dirs["raw_dir"], trained.dirs["cache_dir"], CONFIG.height, CONFIG.width, progress=False
    )
    oof = fold_files.load_oof(download_artifacts(trained.parent_id, names.OOF_PROBS_ARTIFACT, downloads))
    assert oof.ids.tolist() == data.ids.tolist()
    assert oof.probs.shape == (len(data), CONFIG.height, CONFIG.width) and np.isfinite(oof.probs).all()
    fold_run = fold_runs(trained.parent_id)[1].info.run_id
    weights = download_artifacts(fold_run, names.weights_artifact(1), downloads)
    facts = json.loads(download_artifacts(fold_run, names.fold_facts_artifact(1), downloads).read_text())
    position = {image_id: i for i, image_id in enumerate(data.ids)}
    val_index = np.array([position[i] for i in facts["val_ids"]])
    model = build_model_from_config(CONFIG)
    model.load_weights(weights)
    probs, _ = predict_ensemble([model], data.images[val_index], tta=CONFIG.tta, progress=False)
    np.testing.assert_allclose(probs, oof.probs[val_index], atol=1e-5)


def test_a_finished_parent_is_never_touched_again(trained: Trained, capsys: pytest.CaptureFixture[str]) -> None:
    parent_id, dirs = trained.parent_id, trained.dirs
    client = get_client()
    ended = client.get_run(parent_id).info.end_time
    calls_before = list(trained.train_calls)
    paths = CVPaths(**dirs)
    stores = {None: MlflowStore(parent_run_id=parent_id, resume=True), 0: MlflowStore(parent_run_id=parent_id)}
    for fold, store in stores.items():
        with pytest.raises(ValueError, match=f"parent run {parent_id} .* is FINISHED"):
            cross_validate(CONFIG, paths, store, fold=fold, progress=False)
    with pytest.raises(ValueError, match="found no unfinished parent run named 'tiny'"):
        cross_validate(CONFIG, paths, MlflowStore(resume=True, progress=False), progress=False)
    capsys.readouterr()
    assert cv_train.main([*trained.argv, "--resume", "--parent-run-id", parent_id]) == 2
    assert capsys.readouterr().err.startswith(f"error: parent run {parent_id} (tiny) is FINISHED")
    assert trained.train_calls == calls_before  # nothing was trained
    assert client.get_run(parent_id).info.end_time == ended
