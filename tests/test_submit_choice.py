"""``submit.py`` with no run id, on a real SQLite MLflow store: it considers only the runs trained on the data under
``--raw-dir`` (their data fingerprint), ranks them by the cross-fitted estimate, lists them with ``--list``, and
stops in one line (exit 2) when none was trained on it (issue 29).

The runs are made with MLflow's API, carrying what the choice reads (the CV run-type tag, the data fingerprint, the
task param, the metrics); predicting from a chosen run is tested on a trained one in ``test_submit_e2e.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import submit
from helpers import snapshot, write_set
from nerveseg import names
from nerveseg.data.cache import prepare_train, train_fingerprint
from nerveseg.track import schema
from nerveseg.track.store import MlflowSettings, get_client


def _cv_run(name: str, fingerprint: str, metrics: dict[str, float], task: str = "nerve") -> str:
    """A FINISHED CV parent-like run with the tags, params and metrics the choice reads."""
    client = get_client()
    experiment = client.get_experiment_by_name("nerveseg")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("nerveseg")
    tags = {schema.RUN_TYPE_TAG: schema.CV_RUN, names.DATA_FINGERPRINT: fingerprint}
    run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
    client.log_param(run_id, names.TASK_PARAM, task)
    client.log_param(run_id, names.CONFIG_NAME_PARAM, name)
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    client.set_terminated(run_id, "FINISHED")
    return run_id


@pytest.fixture()
def runs(store: MlflowSettings, tmp_path: Path) -> dict:
    """Kaggle-layout data, and in the store: the demo's run on other data scoring highest, two runs on this data
    (the higher fold mean, then the higher cross-fitted estimate), and an ISBI run; newest last."""
    raw = write_set(tmp_path / "raw")
    here = train_fingerprint(raw, tmp_path / "no_cache", progress=False)
    estimate, mean = names.OOF_SCORE_POSTPROCESSED, names.CV_SCORE_MEAN
    interval = {
        names.OOF_SCORE_POSTPROCESSED_PI_LOW: 0.55, names.OOF_SCORE_POSTPROCESSED_PI_HIGH: 0.79, names.PI_SUBJECTS: 9,
    }  # fmt: skip
    ids = {
        "demo": _cv_run("demo", "d" * 64, {estimate: 0.95, mean: 0.90}),
        "raw_best": _cv_run("raw_best", here, {estimate: 0.64, mean: 0.70}),
        "strong": _cv_run("strong", here, {estimate: 0.68, mean: 0.58, **interval}),
        "em": _cv_run("em", "e" * 64, {"cv_v_rand_error_mean": 0.1}, task="isbi2012"),
    }
    return {"raw": raw, "here": here, "ids": ids, "out": tmp_path / "subs", "cache": tmp_path / "cache"}


def test_the_fingerprint_of_raw_dir_is_the_one_training_records(tmp_path: Path) -> None:
    raw = write_set(tmp_path / "raw")
    hashed = train_fingerprint(raw, tmp_path / "cache", progress=False)  # no cache yet: every file hashed
    trained = prepare_train(raw, tmp_path / "cache", 32, 40, progress=False).fingerprint
    assert hashed == trained == train_fingerprint(raw, tmp_path / "cache", progress=False)  # read from the cache
    (raw / "train" / "1_1.tif").write_bytes((raw / "train" / "1_2.tif").read_bytes())  # other data
    assert train_fingerprint(raw, tmp_path / "cache", progress=False) != trained


def test_the_default_choice_takes_the_best_estimate_among_runs_trained_on_this_data(runs: dict) -> None:
    from nerveseg.run.choice import DataToMatch, chosen_runs
    from nerveseg.track.run_reader import MlflowRuns

    tracked = MlflowRuns.open()
    data = DataToMatch(runs["raw"], runs["cache"], progress=False)
    assert chosen_runs(tracked, None, None, None, data) == [runs["ids"]["strong"]]
    assert chosen_runs(tracked, None, None, "nerve", None) == [runs["ids"]["demo"]]  # data not compared


def test_submit_says_which_run_it_chose_and_why_and_what_it_skipped(
    runs: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--raw-dir", str(runs["raw"]), "--cache-dir", str(runs["cache"]), "--out-dir", str(runs["out"])]
    assert submit.main([*argv, "--no-progress"]) == 2  # the chosen fake run has no weights to predict with
    out, err = capsys.readouterr()
    assert "skipped 2 runs: 1 of task isbi2012, 1 trained on other data (fingerprint dddddddddddd)" in out
    assert (
        f"chose strong ({runs['ids']['strong']}): oof_score_postprocessed 0.6800 (95 % PI 0.5500-0.7900 for 9 new "
        f"subjects), the best of 2 finished nerve runs trained on this data (fingerprint {runs['here'][:12]})"
    ) in out
    assert err.startswith("error: ") and err.count("\n") == 1 and runs["ids"]["demo"] not in err


def test_list_shows_the_candidates_and_predicts_nothing(runs: dict, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(runs["raw"])
    argv = ["--list", "--raw-dir", str(runs["raw"]), "--cache-dir", str(runs["cache"]), "--out-dir", str(runs["out"])]
    assert submit.main([*argv, "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        f"finished CV runs in MLflow experiment 'nerveseg'; task nerve, data in {runs['raw']}: "
        f"fingerprint {runs['here'][:12]}"
    )
    table = {line.split()[1] if line.startswith("*") else line.split()[0]: line for line in lines[2:6]}
    assert set(table) == {"strong", "raw_best", "demo", "em"} and lines[1].split()[:3] == ["name", "config", "task"]
    assert table["strong"].split()[:4] == ["*", "strong", "strong", "nerve"]
    assert "oof_score_postprocessed 0.6800 (95 % PI 0.5500-0.7900 for 9 new subjects)" in table["strong"]
    assert f"{runs['here'][:12]} this data" in table["raw_best"] and "dddddddddddd other data" in table["demo"]
    assert table["em"].split()[2] == "isbi2012" and runs["ids"]["em"] in table["em"]
    assert lines[6].startswith(f"submit.py takes the run marked *: chose strong ({runs['ids']['strong']})")
    assert lines[7] == "skipped 2 runs: 1 of task isbi2012, 1 trained on other data (fingerprint dddddddddddd)"
    assert len(lines) == 8
    assert not runs["out"].exists() and not runs["cache"].exists() and snapshot(runs["raw"]) == before


def test_no_run_trained_on_this_data_is_one_line_and_exit_2(
    runs: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = write_set(tmp_path / "other", subjects=(3,))
    fingerprint = train_fingerprint(other, tmp_path / "none", progress=False)
    argv = ["--raw-dir", str(other), "--cache-dir", str(runs["cache"]), "--out-dir", str(runs["out"]), "--no-progress"]
    assert submit.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        "error: no finished cross-validation run of task nerve in MLflow experiment 'nerveseg' was trained on the "
        f"data in {other} (fingerprint {fingerprint[:12]}); its finished CV runs: 2 on data {runs['here'][:12]} "
        "(strong, raw_best); 1 on data dddddddddddd (demo); 1 of task isbi2012."
    )
    assert not runs["out"].exists()


def test_a_raw_dir_without_training_data_says_so_in_one_line(
    runs: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    test_only = tmp_path / "test_only"
    (test_only / "test").mkdir(parents=True)
    (runs["raw"] / "test" / "1.tif").rename(test_only / "test" / "1.tif")
    argv = ["--raw-dir", str(test_only), "--out-dir", str(runs["out"]), "--task", "nerve", "--no-progress"]
    assert submit.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot tell which runs were trained on the data in --raw-dir {test_only}")
    assert err.count("\n") == 1 and "--run-id" in err
