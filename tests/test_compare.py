"""``compare.py`` and ``run.comparison`` on hand-made finished runs: LocalStore folders and MLflow runs that hold
per-image scores, so every check, every refusal and the comparison run are tested without training."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import fake_local_run
from nerveseg import names
from nerveseg.errors import NervesegError
from nerveseg.evaluate.paired import ImageScores
from nerveseg.run.comparison import compare_runs
from nerveseg.run.local_store import LocalRunReader

ROOT = Path(__file__).resolve().parents[1]


def load_compare():
    spec = importlib.util.spec_from_file_location("compare_command", ROOT / "src" / "compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def scores(seed: int = 0, *, shift: float = 0.0, folds: int = 3, metric: str = names.OOF_SCORE_POSTPROCESSED):
    """12 subjects x 6 images, subject-level difficulty, fold = subject mod ``folds``."""
    rng = np.random.default_rng(seed)
    subject = np.repeat(np.arange(1, 13), 6)
    values = rng.uniform(0.4, 0.9, 12)[subject - 1] + rng.normal(0, 0.1, len(subject)) + shift
    ids = np.array([f"{s}_{k}" for k, s in enumerate(subject)])
    return ImageScores(ids, subject.astype(str), subject % folds, values, metric)


def test_runs_on_other_folds_are_refused_in_one_line_unless_allowed(tmp_path: Path) -> None:
    a = LocalRunReader(fake_local_run(tmp_path / "a", scores(0), name="seed1"))
    b = LocalRunReader(fake_local_run(tmp_path / "b", scores(1, folds=4), name="seed2"))
    with pytest.raises(NervesegError, match="different fold splits") as refused:
        compare_runs([a, b])
    assert "--allow-different-folds" in str(refused.value) and "\n" not in str(refused.value)
    warnings: list[str] = []
    comparison = compare_runs([a, b], allow_different_folds=True, warn=warnings.append)
    assert comparison.differences[0].pairing == "subject" and "subject means only" in warnings[0]
    same = compare_runs([a, LocalRunReader(fake_local_run(tmp_path / "c", scores(2)))], allow_different_folds=True)
    assert same.differences[0].pairing == "image"  # the flag allows, it does not force


def test_runs_on_other_data_or_of_another_task_are_always_refused(tmp_path: Path) -> None:
    a = LocalRunReader(fake_local_run(tmp_path / "a", scores(0)))
    other_data = LocalRunReader(fake_local_run(tmp_path / "b", scores(1), fingerprint="cd" * 32))
    with pytest.raises(NervesegError, match="other data"):
        compare_runs([a, other_data], allow_different_folds=True)
    other_task = LocalRunReader(fake_local_run(tmp_path / "c", scores(1), task="isbi2012"))
    with pytest.raises(NervesegError, match="compare runs of one task"):
        compare_runs([a, other_task])
    other_metric = LocalRunReader(fake_local_run(tmp_path / "d", scores(1, metric="oof_rand_error")))
    with pytest.raises(NervesegError, match="score different things"):
        compare_runs([a, other_metric])
    with pytest.raises(NervesegError, match="at least two runs"):
        compare_runs([a])


def test_a_folder_must_be_a_finished_local_run_with_scores(tmp_path: Path) -> None:
    with pytest.raises(NervesegError, match="is not a LocalStore cross-validation folder"):
        LocalRunReader(tmp_path)
    with pytest.raises(NervesegError, match="unfinished cross-validation"):
        LocalRunReader(fake_local_run(tmp_path / "running", scores(), status="RUNNING"))
    old = fake_local_run(tmp_path / "old", scores())
    (old / names.IMAGE_SCORES_ARTIFACT).unlink()
    with pytest.raises(NervesegError, match="finished before per-image scores were kept"):
        LocalRunReader(old).image_scores()


@pytest.mark.parametrize(("task", "verdict"), [("nerve", "better"), ("isbi2012", "worse")])
def test_compare_prints_the_table_and_a_verdict_that_follows_the_task(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], task: str, verdict: str
) -> None:
    metric = names.OOF_SCORE_POSTPROCESSED if task == "nerve" else "oof_v_rand_error"
    a = fake_local_run(tmp_path / "a", scores(0, metric=metric), name="base", task=task)
    b = fake_local_run(tmp_path / "b", scores(0, shift=0.05, metric=metric), name="shifted", task=task)
    plot = tmp_path / "diff.png"
    assert load_compare().main([str(a), str(b), "--no-track", "--plot", str(plot), "--per-subject"]) == 0
    out = capsys.readouterr().out
    assert f"B vs A: {verdict}: +0.0500 (95 % CI +0.0500 to +0.0500, 12 subjects paired by image)" in out
    assert "12/0/0" in out or "0/12/0" in out
    assert f"A = {a}" in out and "subject  A base  B shifted" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert load_compare().main([str(a), str(b), "--no-track", "--plot", str(plot)]) == 2
    assert "must be a new .png file" in capsys.readouterr().err


def test_compare_refuses_other_folds_with_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    a = fake_local_run(tmp_path / "a", scores(0))
    b = fake_local_run(tmp_path / "b", scores(1, folds=4))
    assert load_compare().main([str(a), str(b), "--no-track"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "--allow-different-folds" in err[0]
    assert load_compare().main([str(a), str(b), "--no-track", "--allow-different-folds"]) == 0
    captured = capsys.readouterr()
    assert "paired by subject" in captured.out and "warning:" in captured.err
    assert load_compare().main([str(a), "not-a-run", "--no-track"]) == 2
    assert "neither a LocalStore folder nor an MLflow run id" in capsys.readouterr().err


def fake_mlflow_run(client, experiment_id: str, run_scores: ImageScores, tmp: Path, name: str) -> str:
    """A FINISHED CV parent run holding what a comparison reads."""
    from nerveseg.run.fold_files import save_image_scores
    from nerveseg.track import schema

    run_id = client.create_run(
        experiment_id, run_name=name, tags={schema.RUN_TYPE_TAG: schema.CV_RUN, names.DATA_FINGERPRINT: "ab" * 32}
    ).info.run_id
    client.log_param(run_id, names.TASK_PARAM, "nerve")
    client.log_metric(run_id, run_scores.metric, float(run_scores.scores.mean()))
    path = save_image_scores(tmp / names.IMAGE_SCORES_FILE, run_scores)
    client.log_artifact(run_id, str(path), names.OOF_DIR)
    client.set_terminated(run_id, "FINISHED")
    return run_id


def test_an_mlflow_run_and_a_folder_are_compared_and_the_comparison_is_logged(
    tmp_path: Path, store, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow.tracking import MlflowClient

    from nerveseg.track import schema
    from nerveseg.track.store import setup_mlflow

    client = MlflowClient(store.tracking_uri)
    experiment_id = setup_mlflow(store)
    run_a = fake_mlflow_run(client, experiment_id, scores(0), tmp_path, "tracked")
    folder = fake_local_run(tmp_path / "b", scores(0, shift=-0.01), name="local")
    assert load_compare().main([run_a, str(folder), "--resamples", "2000"]) == 0
    out = capsys.readouterr().out
    assert "B vs A: worse: -0.0100" in out
    compared = [r for r in client.search_runs([experiment_id]) if r.data.tags.get(schema.RUN_TYPE_TAG) == "comparison"]
    assert len(compared) == 1 and f"comparison run: {compared[0].info.run_id}" in out
    run = compared[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags[schema.COMPARED_RUNS_TAG] == f"{run_a},{folder}"
    assert run.data.tags[schema.COMPARISON_BASELINE_TAG] == run_a
    assert run.data.tags[schema.comparison_key(schema.VERDICT_TAG, 1)] == "worse"
    assert run.data.tags[schema.comparison_key(schema.COMPARISON_PAIRING_TAG, 1)] == "image"
    assert run.data.metrics[schema.comparison_key(schema.PAIRED_DIFFERENCE, 1)] == pytest.approx(-0.01)
    assert run_a in run.data.tags[schema.DESCRIPTION_TAG] and "#/experiments/" in run.data.tags[schema.DESCRIPTION_TAG]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)} | {
        a.path for a in client.list_artifacts(run.info.run_id, names.PLOTS_DIR)
    }
    expected = {schema.COMPARISON_TABLE_ARTIFACT, schema.SUBJECT_TABLE_ARTIFACT, schema.COMPARISON_PLOT_ARTIFACT}
    assert expected <= artifacts
    assert client.get_run(run_a).info.status == "FINISHED"  # the runs compared are never written to


def test_mlflow_runs_that_cannot_be_compared_are_refused_in_one_line(tmp_path: Path, store) -> None:
    from mlflow.tracking import MlflowClient

    from nerveseg.track import schema
    from nerveseg.track.run_reader import open_run
    from nerveseg.track.store import setup_mlflow

    client = MlflowClient(store.tracking_uri)
    experiment_id = setup_mlflow(store)
    with pytest.raises(NervesegError, match="unknown MLflow run id"):
        open_run("0" * 32, store.tracking_uri)
    fold = client.create_run(experiment_id, tags={schema.RUN_TYPE_TAG: schema.FOLD_RUN, schema.PARENT_TAG: "p"})
    with pytest.raises(NervesegError, match="one fold's run"):
        open_run(fold.info.run_id, store.tracking_uri)
    running = client.create_run(experiment_id, tags={schema.RUN_TYPE_TAG: schema.CV_RUN})
    with pytest.raises(NervesegError, match="is RUNNING; pass a finished run"):
        open_run(running.info.run_id, store.tracking_uri)
    client.set_terminated(running.info.run_id, "FINISHED")
    with pytest.raises(NervesegError, match="finished before per-image scores were kept"):
        open_run(running.info.run_id, store.tracking_uri).image_scores()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
