"""End to end: a tiny tracked CV run -> make_submission -> a valid CSV, a "submission" child run, a score."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from nerveseg.track.schema import PARENT_TAG, RUN_TYPE_TAG

pytestmark = pytest.mark.slow

mlflow = pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> Iterator[dict]:
    """One finished tiny CV run (tests' tiny_config with 2 folds x 1 epoch: a CV costs ~20 s a fold)
    in an embedded SQLite store of its own; the environment points MLflow there for the module."""
    from nerveseg.config import TrainConfig
    from nerveseg.run.cross_validate import cross_validate
    from nerveseg.run.store import CVPaths
    from nerveseg.track.mlflow_store import MlflowStore

    tmp = tmp_path_factory.mktemp("submit_e2e")
    config = TrainConfig(
        name="tiny", height=32, width=40, depth=3, base_filters=4, learning_rate=1e-3, batch_size=8, epochs=1, folds=2,
        seed=1,
    )  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")
        patch.setenv("MLFLOW_EXPERIMENT_NAME", "submit-e2e")
        paths = CVPaths(synthetic_root / "raw", tmp / "cache", tmp / "folds")
        result = cross_validate(config, paths, MlflowStore(progress=False), progress=False)
        yield {"tmp": tmp, "run_id": result.parent_id, "cache": tmp / "cache", "root": synthetic_root}


def _client():
    from nerveseg.track.store import get_client

    return get_client()


def _children(parent_id: str, run_type: str) -> list:
    run = _client().get_run(parent_id)
    return _client().search_runs(
        [run.info.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}' and tags.`{RUN_TYPE_TAG}` = '{run_type}'",
    )


def test_best_run_to_valid_scored_submission(tracked: dict, tmp_path: Path) -> None:
    from nerveseg.data.raw import index_test
    from nerveseg.run.submit import make_submission
    from nerveseg.submit.submission_file import score_submission, validate_submission
    from nerveseg.track.submission_run import MlflowSubmissions

    root = tracked["root"]
    result = make_submission(
        MlflowSubmissions.open,
        raw_dir=root / "raw",
        out_dir=tmp_path / "subs",
        cache_dir=tracked["cache"],
        batch_size=4,
        test_masks_dir=root / "test_masks",
        progress=False,
    )
    assert result.run_ids == [tracked["run_id"]]  # the only (hence best) finished CV run
    assert result.postprocessing_source == "run"  # the CV logged postprocessing.json
    assert result.csv_path.parent == tmp_path / "subs" and result.csv_path.name.endswith("_tiny.csv")
    ids = index_test(root / "raw")["id"].to_numpy()
    frame = validate_submission(result.csv_path, ids)
    assert frame["img"].tolist() == sorted(ids.tolist()) and result.n_images == len(ids)
    score, _ = score_submission(result.csv_path, root / "test_masks")
    assert result.test_score == pytest.approx(score) and 0.0 <= score <= 1.0

    (child,) = _children(tracked["run_id"], "submission")
    assert child.info.run_id == result.submission_run_id and child.info.status == "FINISHED"
    assert child.info.run_name == "submission"
    assert child.data.params["run_ids"] == tracked["run_id"] and child.data.params["tta"] == "True"
    assert child.data.params["threshold"] == str(result.postprocessing.settings.threshold)
    assert child.data.metrics["test_score"] == pytest.approx(score)
    # the synthetic set lists its test subjects, so the interval is by subject and logged with the score
    assert result.test_interval.unit == "subject" and result.test_interval.estimate == pytest.approx(score)
    assert child.data.metrics["test_score_ci_low"] <= score <= child.data.metrics["test_score_ci_high"]
    # the CV run's prediction interval came back from its metrics, and the submission says if it held
    assert result.cv_prediction is not None and result.cv_prediction.new_groups >= 1
    assert child.data.metrics["test_score_inside_pi"] == float(result.cv_prediction.contains(score))
    artifacts = {a.path for a in _client().list_artifacts(child.info.run_id, "submission")}
    assert artifacts == {f"submission/{result.csv_path.name}"}


def test_cli_decides_postprocessing_when_missing(
    tracked: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import submit

    run = _client().get_run(tracked["run_id"])
    artifact_dir = Path(unquote(urlparse(run.info.artifact_uri).path))
    (artifact_dir / "postprocessing.json").unlink()  # as for a run made before post-processing existed
    root = tracked["root"]
    argv = ["--run-id", tracked["run_id"], "--no-tta", "--raw-dir", str(root / "raw"), "--out-dir", str(tmp_path)]
    argv += ["--cache-dir", str(tracked["cache"]), "--batch-size", "5", "--no-progress"]
    assert submit.main([*argv, "--test-masks", str(root / "test_masks")]) == 0
    out = capsys.readouterr().out
    assert "post-processing (decided)" in out and "local test score" in out and "95 % CI" in out
    (csv,) = tmp_path.glob("*_tiny.csv")
    assert f"wrote {csv}" in out
    settings = json.loads((artifact_dir / "postprocessing.json").read_text())  # stored on the CV run
    assert {"threshold", "min_area", "largest_component", "presence_threshold", "steps"} <= set(settings)
    (child,) = [r for r in _children(tracked["run_id"], "submission") if r.data.params["tta"] == "False"]
    assert child.data.params["batch_size"] == "5" and child.data.tags["postprocessing_source"] == "decided"


def test_clear_errors(tracked: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import submit
    from nerveseg.run.submit import make_submission
    from nerveseg.track.submission_run import MlflowSubmissions

    root = tracked["root"]
    common = {"out_dir": tmp_path, "cache_dir": tracked["cache"], "progress": False}
    no_test = tmp_path / "raw_without_test"
    shutil.copytree(root / "raw" / "train", no_test / "train")
    with pytest.raises(ValueError, match=r"test folder .* does not exist"):
        make_submission(MlflowSubmissions.open, run_id=tracked["run_id"], raw_dir=no_test, **common)
    with pytest.raises(ValueError, match="unknown MLflow run id 'nope'"):
        make_submission(MlflowSubmissions.open, run_id="nope", raw_dir=root / "raw", **common)

    # a CV run whose folds never finished: no weights
    client = _client()
    parent = client.get_run(tracked["run_id"])
    empty = client.create_run(parent.info.experiment_id, run_name="broken", tags={RUN_TYPE_TAG: "cv"})
    client.log_text(empty.info.run_id, "folds: 3\nheight: 32\nwidth: 40\ndepth: 3\nbase_filters: 4\n", "config.yaml")
    client.set_terminated(empty.info.run_id, "FAILED")
    with pytest.raises(ValueError, match=r"no finished fold run .* no weights"):
        make_submission(MlflowSubmissions.open, run_id=empty.info.run_id, raw_dir=root / "raw", **common)

    # the CLI: one line on stderr, exit 2
    capsys.readouterr()
    assert submit.main(["--run-id", "nope", "--raw-dir", str(root / "raw"), "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown MLflow run id")
    assert submit.main(["--raw-dir", str(no_test), "--out-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: test folder")
    assert submit.main(["--runs", "a,a", "--raw-dir", str(root / "raw"), "--out-dir", str(tmp_path)]) == 2
    assert "twice" in capsys.readouterr().err


def test_no_finished_cv_run(tracked: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nerveseg.run.submit import make_submission
    from nerveseg.track.store import get_client
    from nerveseg.track.submission_run import MlflowSubmissions

    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "empty-experiment")
    get_client().create_experiment("empty-experiment")
    with pytest.raises(ValueError, match="no finished cross-validation run"):
        make_submission(
            MlflowSubmissions.open,
            raw_dir=tracked["root"] / "raw",
            out_dir=tmp_path,
            cache_dir=tracked["cache"],
            progress=False,
        )


def _clone_run(source_id: str, name: str, fingerprint: str) -> str:
    """A finished copy of the CV run (config, OOF, fold runs with weights) tagged with ``fingerprint``."""
    client = _client()
    source = client.get_run(source_id)
    tags = {k: v for k, v in source.data.tags.items() if not k.startswith("mlflow.")}
    clone = client.create_run(source.info.experiment_id, run_name=name, tags={**tags, "data_fingerprint": fingerprint})
    artifact_dir = Path(unquote(urlparse(source.info.artifact_uri).path))
    client.log_artifact(clone.info.run_id, str(artifact_dir / "config.yaml"))
    client.log_artifacts(clone.info.run_id, str(artifact_dir / "oof"), "oof")
    for fold_run in _children(source_id, "fold"):
        fold_tags = {
            PARENT_TAG: clone.info.run_id,
            RUN_TYPE_TAG: "fold",
            "fold": fold_run.data.tags["fold"],
        }
        copy = client.create_run(source.info.experiment_id, run_name=fold_run.info.run_name, tags=fold_tags)
        weights = Path(unquote(urlparse(fold_run.info.artifact_uri).path)) / "weights"
        client.log_artifacts(copy.info.run_id, str(weights), "weights")
        client.set_terminated(copy.info.run_id, "FINISHED")
    client.set_terminated(clone.info.run_id, "FINISHED")
    return clone.info.run_id


def test_ensemble_of_runs(tracked: dict, tmp_path: Path) -> None:
    """Ensembling a run with an identical copy gives exactly the single run's submission;
    runs trained on other data are refused (their OOF cannot share one post-processing decision)."""
    from nerveseg.run.submit import make_submission
    from nerveseg.track.submission_run import MlflowSubmissions

    source = _client().get_run(tracked["run_id"])
    common = {"raw_dir": tracked["root"] / "raw", "cache_dir": tracked["cache"], "progress": False}
    twin = _clone_run(tracked["run_id"], "twin", source.data.tags["data_fingerprint"])
    single = make_submission(MlflowSubmissions.open, run_id=tracked["run_id"], out_dir=tmp_path / "single", **common)
    both = make_submission(
        MlflowSubmissions.open, run_ids=[tracked["run_id"], twin], out_dir=tmp_path / "both", **common
    )
    assert both.postprocessing_source == "decided_ensemble"
    assert both.csv_path.name.endswith("_ensemble_tiny+twin.csv")
    assert both.postprocessing.settings == single.postprocessing.settings
    assert both.csv_path.read_text() == single.csv_path.read_text()
    (child,) = [r for r in _children(tracked["run_id"], "submission") if r.info.run_id == both.submission_run_id]
    assert child.data.params["run_ids"] == f"{tracked['run_id']},{twin}"

    other = _clone_run(tracked["run_id"], "other", "0" * 64)
    with pytest.raises(ValueError, match="different data"):
        make_submission(
            MlflowSubmissions.open, run_ids=[tracked["run_id"], other], out_dir=tmp_path / "refused", **common
        )
    assert not (tmp_path / "refused").exists()


def test_the_default_choice_never_takes_a_run_trained_on_other_data(
    tracked: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A usable copy of the run that says it was trained on other data and scores higher than any run: with no run
    id, submit.py still takes the run trained on the data it predicts, and says why (issue 29)."""
    import submit
    from nerveseg import names

    other = _clone_run(tracked["run_id"], "other_data", "0" * 64)
    for key in (names.OOF_SCORE_POSTPROCESSED, names.CV_SCORE_MEAN):
        _client().log_metric(other, key, 0.99)
    root = tracked["root"]
    argv = ["--raw-dir", str(root / "raw"), "--out-dir", str(tmp_path), "--cache-dir", str(tracked["cache"])]
    assert submit.main([*argv, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"chose tiny ({tracked['run_id']}): oof_score_postprocessed " in out
    assert "trained on other data (fingerprint 000000000000)" in out
    (child,) = [r for r in _children(tracked["run_id"], "submission") if r.data.tags["submission_file"] in out]
    assert child.data.params["run_ids"] == tracked["run_id"] and not _children(other, "submission")
