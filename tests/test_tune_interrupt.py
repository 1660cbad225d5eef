"""tune.py as a user runs it: Ctrl-C stops the worker at once and is not counted, --no-progress is quiet,
and a failed tracking check leaves no Optuna database behind."""

from __future__ import annotations

from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from nerveseg.track.schema import PARENT_TAG, RUN_TYPE_TAG  # noqa: E402

pytestmark = pytest.mark.slow

BASE = "height: 32\nwidth: 40\ndepth: 2\nbase_filters: 4\nbatch_size: 8\nepochs: 1\nfolds: 2\nseed: 1\n"
SPACE = "learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n"


def _args(synthetic_root: Path, tmp_path: Path, trials: int) -> list[str]:
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "space.yaml").write_text(SPACE)
    return [
        "--study", "s", "--trials", str(trials), "--config", str(tmp_path / "base.yaml"),
        "--space", str(tmp_path / "space.yaml"), "--storage", f"sqlite:///{tmp_path / 'optuna.db'}",
        "--raw-dir", str(synthetic_root / "raw"), "--cache-dir", str(tmp_path / "cache"),
        "--folds-dir", str(tmp_path / "folds"), "--experiments-dir", str(tmp_path / "experiments"), "--no-progress",
    ]  # fmt: skip


def _keyboard_interrupt() -> BaseException:
    return KeyboardInterrupt()


def _swallowed_by_keras() -> BaseException:
    """What Keras sometimes raises instead: CPython's SystemError chained to the KeyboardInterrupt (cause
    and context, as ``_PyErr_FormatFromCause`` sets them; Keras's traceback filter then drops the cause)."""
    interrupt = KeyboardInterrupt()
    error = SystemError("<built-in function> returned a result with an exception set")
    error.__cause__ = error.__context__ = interrupt
    return error


@pytest.mark.parametrize("make_error", [_keyboard_interrupt, _swallowed_by_keras], ids=["plain", "systemerror"])
def test_ctrl_c_stops_the_worker_marks_the_trial_interrupted_and_kills_the_runs(
    make_error, synthetic_root: Path, tmp_path: Path, store, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from mlflow.tracking import MlflowClient

    import tune
    from nerveseg.tune.objective import PruningListener
    from nerveseg.tune.storage import INTERRUPTED_ATTR, count_counted_trials

    def interrupt(self, fold, epoch, logs):  # Ctrl-C arriving inside a Keras callback, during the first epoch
        raise make_error()

    monkeypatch.setattr(PruningListener, "on_epoch_end", interrupt)
    assert tune.main(_args(synthetic_root, tmp_path, trials=3)) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("interrupted:") and "run the same command again" in err[-1]
    assert not any("Traceback" in line for line in err)

    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    (trial,) = study.get_trials()  # the worker stopped at once: no second trial
    assert trial.state.name == "FAIL" and trial.user_attrs[INTERRUPTED_ATTR] is True
    assert trial.user_attrs["fail_reason"].startswith("interrupted:")
    assert count_counted_trials(study) == 0  # does not count against --trials

    client = MlflowClient(store.tracking_uri)
    experiment = client.get_experiment_by_name(store.experiment_name)
    runs = client.search_runs([experiment.experiment_id])
    by_type = {}
    for run in runs:
        by_type.setdefault(run.data.tags[RUN_TYPE_TAG], []).append(run)
    assert {r.info.status for r in by_type["study"]} == {"KILLED"}
    (trial_run,) = by_type["cv"]
    (fold_run,) = by_type["fold"]
    assert trial_run.info.status == fold_run.info.status == "KILLED"
    assert fold_run.data.tags[PARENT_TAG] == trial_run.info.run_id
    assert fold_run.data.tags["nerveseg.stopped"] == "KeyboardInterrupt"


def test_no_progress_prints_no_per_fold_lines(
    synthetic_root: Path, tmp_path: Path, store, capsys: pytest.CaptureFixture[str]
) -> None:
    import tune

    assert tune.main(_args(synthetic_root, tmp_path, trials=1)) == 0
    captured = capsys.readouterr()
    assert "trial 0" in captured.out or "#0" in captured.out or "complete" in captured.out
    folds = [line for line in (captured.out + captured.err).splitlines() if line.startswith("fold ")]
    assert folds == []
    assert "MLflow parent run" not in captured.err


def test_a_failed_tracking_check_leaves_no_optuna_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import tune

    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "space.yaml").write_text(SPACE)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    args = ["--study", "s", "--trials", "1", "--config", str(tmp_path / "base.yaml"), "--space"]
    args += [str(tmp_path / "space.yaml"), "--storage", f"sqlite:///{tmp_path / 'db' / 'optuna.db'}"]
    assert tune.main(args) == 2
    assert "is not reachable" in capsys.readouterr().err
    assert not (tmp_path / "db").exists()
