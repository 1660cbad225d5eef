"""Tuning: search-space validation, pruning/reporting, exact-N trial counts, and a tiny tracked study.

The study test runs three trials of a tiny config through the real ``experiment.run_cv`` path
with a SQLite Optuna storage and an embedded SQLite MLflow store in a temporary folder: one trial
completes, one is pruned (a pruner that prunes trial 1), one fails with a diverged loss (a fault
injected into ``training.train_fold`` for one learning rate). Re-running adds trials up to the
new total, and the exported best config runs through ``cv_train.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from helpers import exact_n_worker  # noqa: E402
from nerveseg.config import TrainConfig  # noqa: E402
from nerveseg.track.schema import PARENT_TAG, RUN_TYPE_TAG  # noqa: E402
from nerveseg.tune.search_space import load_search_space, parse_search_space  # noqa: E402
from nerveseg.tune.study import PruningListener, describe_failure  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FAIL_LR = 1.0e-2  # trials with exactly this learning rate get a diverged loss injected


# ------------------------------------------------------------------------------------- search space


def test_the_shipped_search_space_is_valid_for_the_default_config() -> None:
    space = load_search_space(ROOT / "experiments" / "search_space.yaml")
    expected = {
        "learning_rate",
        "batch_size",
        "base_filters",
        "depth",
        "dropout",
        "batch_norm",
        "loss",
        "augment_strength",
        "presence_head",
        "epochs",
    }
    assert set(space.names) == expected
    space.check_against(TrainConfig())
    lr = next(p for p in space.params if p.name == "learning_rate")
    assert lr.kind == "float" and lr.log and lr.low == pytest.approx(1e-5)


def test_parsed_space_samples_typed_values() -> None:
    space = parse_search_space(
        {
            "learning_rate": {"type": "float", "low": "1e-4", "high": 1.0e-2, "log": True},  # "1e-4": YAML string
            "depth": {"type": "int", "low": 2, "high": 3},
            "epochs": {"type": "int", "low": 2, "high": 10, "step": 4},
            "batch_norm": {"type": "categorical", "choices": [True, False]},
            "loss": {"type": "categorical", "choices": ["dice", "bce_dice"]},
        },
        source="inline",
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        params = space.suggest(study.ask())
        assert 1e-4 <= params["learning_rate"] <= 1e-2 and isinstance(params["learning_rate"], float)
        assert params["depth"] in (2, 3) and params["epochs"] in (2, 6, 10)
        assert isinstance(params["batch_norm"], bool) and params["loss"] in ("dice", "bce_dice")
        TrainConfig(height=32, width=40, depth=2).replace(**params)  # every sample is a valid config


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"learning_rat": {"type": "float", "low": 1e-4, "high": 1e-2}}, "unknown key 'learning_rat'"),
        ({"name": {"type": "categorical", "choices": ["a"]}}, "unknown key 'name'"),
        ({"learning_rate": 0.001}, "must map to"),
        ({"learning_rate": {"type": "uniform", "low": 0, "high": 1}}, "has type 'uniform'"),
        ({"learning_rate": {"type": "float", "low": 1e-4, "hi": 1e-2}}, "unknown fields ['hi']"),
        ({"learning_rate": {"type": "float", "low": 1e-4}}, "needs 'high'"),
        ({"learning_rate": {"type": "float", "low": 1e-2, "high": 1e-4}}, "greater than high"),
        ({"learning_rate": {"type": "float", "low": 0.0, "high": 1e-2, "log": True}}, "log scale needs low > 0"),
        ({"dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.1, "log": True}}, "cannot be combined"),
        ({"dropout": {"type": "float", "low": "abc", "high": 0.5}}, "low must be a number"),
        ({"depth": {"type": "int", "low": 2.5, "high": 4}}, "must be an integer"),
        ({"depth": {"type": "float", "low": 2, "high": 4}}, "is a int config field"),
        ({"batch_norm": {"type": "int", "low": 0, "high": 1}}, "use type: categorical"),
        ({"loss": {"type": "categorical", "choices": []}}, "non-empty list"),
        ({"loss": {"type": "categorical", "choices": ["dice", "dice"]}}, "duplicates"),
        ({"loss": {"type": "categorical", "choices": [["dice"]]}}, "must be a scalar"),
        ({"epochs": {"type": "int", "low": 1, "high": 5, "log": "yes"}}, "log must be true or false"),
    ],
)
def test_malformed_entries_are_rejected_naming_file_and_key(tmp_path: Path, entry: dict, message: str) -> None:
    import yaml

    path = tmp_path / "bad_space.yaml"
    path.write_text(yaml.safe_dump(entry))
    with pytest.raises(ValueError, match=r"bad_space\.yaml") as caught:
        load_search_space(path)
    assert message in str(caught.value)


def test_space_file_problems_and_base_config_conflicts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_search_space(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- learning_rate\n")
    with pytest.raises(ValueError, match=r"list\.yaml must be a non-empty mapping"):
        load_search_space(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("learning_rate: {type: float\n")
    with pytest.raises(ValueError, match=r"broken\.yaml is not valid YAML"):
        load_search_space(tmp_path / "broken.yaml")

    (tmp_path / "space.yaml").write_text(
        "depth: {type: int, low: 2, high: 5}\nloss: {type: categorical, choices: [dice, focal]}\n"
    )
    space = load_search_space(tmp_path / "space.yaml")
    tiny = TrainConfig(name="tiny", height=32, width=40, depth=2)
    with pytest.raises(ValueError, match=r"space.yaml: key 'depth' value 5 is not valid with base config 'tiny'"):
        space.check_against(tiny)  # 40 is not divisible by 2**4
    with pytest.raises(ValueError, match=r"key 'loss' value 'focal'"):
        load_search_space(tmp_path / "space.yaml").check_against(TrainConfig())


# ------------------------------------------------------------------------------------ pruning hooks


class _PruneAlways(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


@pytest.mark.parametrize(("mode", "expected"), [("running_mean", [0.2, 0.4, 0.6]), ("per_fold", [0.2, 0.6, 1.0])])
def test_listener_reports_per_fold_and_never_prunes_after_the_last_fold(mode: str, expected: list[float]) -> None:
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    listener = PruningListener(trial, n_folds=3, mode=mode)  # type: ignore[arg-type]
    for fold, score in enumerate([0.2, 0.6, 1.0]):
        listener.on_epoch_end(fold, 0, {"val_dice": 0.5})  # no epoch-level reports
        listener.on_fold_end(fold, score)
    reported = study.get_trials()[0].intermediate_values
    assert list(reported) == [0, 1, 2]
    assert list(reported.values()) == pytest.approx(expected)

    pruned_study = optuna.create_study(direction="maximize", pruner=_PruneAlways())
    listener = PruningListener(pruned_study.ask(), n_folds=2)
    with pytest.raises(optuna.TrialPruned, match="after fold 0"):
        listener.on_fold_end(0, 0.5)
    last = PruningListener(pruned_study.ask(), n_folds=1)
    last.on_fold_end(0, 0.5)  # the only fold: the trial is complete, nothing to save by pruning


def test_failure_reasons_name_the_kind() -> None:
    from nerveseg.train.fold import TrainingDivergedError

    assert describe_failure(TrainingDivergedError("fold 0: loss became nan")).startswith("non-finite loss:")
    assert describe_failure(MemoryError("boom")).startswith("out of memory: MemoryError")
    assert describe_failure(ValueError("x\ny")) == "error: ValueError: x y"
    assert describe_failure(KeyboardInterrupt()).startswith("interrupted: KeyboardInterrupt")
    wrapped = SystemError("returned a result with an exception set")
    wrapped.__cause__ = KeyboardInterrupt()
    assert describe_failure(wrapped).startswith("interrupted: SystemError")


# ------------------------------------------------------------------------------------------ exact N

# Trials are ~instant, so the workers race for trial creation all the time.
SQLITE_WORKER = exact_n_worker(
    """
    def objective(trial):
        time.sleep(random.uniform(0.0, 0.02))
        if trial.number % 4 == 1:
            raise RuntimeError("deliberate failure")
        return trial.suggest_float("x", 0.0, 1.0)
    """
)


def test_two_processes_on_sqlite_stop_at_exactly_n(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", SQLITE_WORKER, url, "exact", "12"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=300) for w in workers]
    assert all(w.returncode == 0 for w in workers), [err[-2000:] for _, err in outputs]
    trials = optuna.load_study(study_name="exact", storage=url).get_trials()
    assert len(trials) == 12 and sorted(t.number for t in trials) == list(range(12))
    assert {t.state.name for t in trials} == {"COMPLETE", "FAIL"}  # nothing RUNNING/WAITING left behind
    assert sum(int(out.split()[-1]) for out, _ in outputs) == 12


# -------------------------------------------------------------------------------------- fail fast


def test_unreachable_storage_and_tracking_fail_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import time

    import tune

    (tmp_path / "base.yaml").write_text("height: 32\nwidth: 40\ndepth: 2\n")
    (tmp_path / "space.yaml").write_text("learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n")
    common = ["--study", "s", "--trials", "1", "--config", str(tmp_path / "base.yaml")]
    common += ["--space", str(tmp_path / "space.yaml"), "--experiments-dir", str(tmp_path)]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")

    started = time.monotonic()
    assert tune.main([*common, "--storage", "postgresql+psycopg2://nobody:secret@127.0.0.1:9/optuna"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach Optuna storage postgresql+psycopg2://nobody:***@127.0.0.1:9/optuna" in err
    assert "secret" not in err and len(err.strip().splitlines()) == 1

    # The usual URL without a driver gets the installed one (psycopg2), not an import error for psycopg 3.
    assert tune.main([*common, "--storage", "postgresql://nobody:secret@127.0.0.1:9/optuna"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach Optuna storage postgresql+psycopg2://nobody:***@127.0.0.1:9/optuna" in err
    assert len(err.strip().splitlines()) == 1

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    assert tune.main([*common, "--storage", f"sqlite:///{tmp_path / 'optuna.db'}"]) == 2
    err = capsys.readouterr().err
    assert "MLflow tracking server http://127.0.0.1:9 is not reachable" in err
    assert time.monotonic() - started < 30
    assert not (tmp_path / "optuna.db").exists()  # no study, not even an empty database

    (tmp_path / "deep.yaml").write_text("depth: {type: int, low: 2, high: 6}\n")
    assert tune.main([*common[:-4], "--space", str(tmp_path / "deep.yaml"), "--storage", "sqlite://"]) == 2
    assert "deep.yaml: key 'depth' value 6" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@h:5432/db", "postgresql+psycopg2://u:p@h:5432/db"),
        ("postgres://u@h/db", "postgresql+psycopg2://u@h/db"),
        ("postgresql+psycopg2://u@h/db", "postgresql+psycopg2://u@h/db"),
        ("sqlite:///experiments/optuna.db", "sqlite:///experiments/optuna.db"),
        ("mysql://u@h/db", "mysql://u@h/db"),
    ],
)
def test_postgres_urls_get_the_installed_driver(url: str, expected: str) -> None:
    from nerveseg.tune.storage import with_installed_driver

    assert with_installed_driver(url) == expected


# ------------------------------------------------------------------------------------ a whole study


class _PruneTrials(optuna.pruners.BasePruner):
    """Prunes the given trial numbers at their first report: a deterministic stand-in for a pruner."""

    def __init__(self, numbers: set[int]) -> None:
        self.numbers = numbers

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number in self.numbers


@pytest.mark.slow
def test_tiny_study_prunes_fails_resumes_and_exports_a_runnable_config(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    from nerveseg.config import load_config
    from nerveseg.train import fold as training
    from nerveseg.tune.study import STUDY_RUN_ATTR, TuneSettings, run_study

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "tune-test")
    real_train_fold = training.train_fold

    def train_fold_with_fault(config, *args, **kwargs):  # a diverging loss, on demand
        if config.learning_rate == FAIL_LR:
            raise training.TrainingDivergedError("fold 0: training diverged (loss became nan at epoch 1, batch 1)")
        return real_train_fold(config, *args, **kwargs)

    monkeypatch.setattr(training, "train_fold", train_fold_with_fault)

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    base = TrainConfig(
        name="tiny", height=32, width=40, depth=2, base_filters=4, learning_rate=1e-3, batch_size=8, epochs=1, folds=2,
        seed=1,
    )  # fmt: skip
    space = parse_search_space(
        {
            "learning_rate": {"type": "float", "low": 1.0e-4, "high": FAIL_LR, "log": True},
            "base_filters": {"type": "categorical", "choices": [4, 8]},
        },
        source="test-space",
    )
    # Fix the first three trials' params: complete, pruned (by the pruner), failed (by the fault).
    seeded = optuna.create_study(study_name="tiny-study", storage=storage, direction="maximize")
    for lr in (3e-3, 1e-3, FAIL_LR):
        seeded.enqueue_trial({"learning_rate": lr, "base_filters": 4})

    def settings(n_trials: int) -> TuneSettings:
        return TuneSettings(
            study_name="tiny-study",
            n_trials=n_trials,
            base_config=base,
            space=space,
            storage=storage,
            raw_dir=synthetic_root / "raw",
            cache_dir=tmp_path / "cache",
            folds_dir=tmp_path / "folds",
            pruner=_PruneTrials({1}),
            seed=0,
            experiments_dir=tmp_path / "experiments",
            progress=False,
        )

    lines: list[str] = []
    first = run_study(settings(3), out=lines.append)
    assert first.n_trials_total == 3 and first.ran_here == 3
    assert first.states == {"COMPLETE": 1, "PRUNED": 1, "FAIL": 1}
    study = optuna.load_study(study_name="tiny-study", storage=storage)
    t0, t1, t2 = study.get_trials()
    assert (t0.state.name, t1.state.name, t2.state.name) == ("COMPLETE", "PRUNED", "FAIL")
    assert t2.user_attrs["fail_reason"].startswith("non-finite loss: TrainingDivergedError")
    assert list(t1.intermediate_values) == [0]  # pruned after its first fold
    assert 0.0 <= t0.value <= 1.0
    trial_lines = [line for line in lines if line.startswith("trial")]
    assert len(trial_lines) == 3 and "PRUNED" in trial_lines[1] and "non-finite loss" in trial_lines[2]
    assert f"best {t0.value:.4f} (trial 0)" in trial_lines[2]

    # MLflow: one study run; each trial a CV parent run nested under it, with its state.
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("tune-test")
    (study_run,) = client.search_runs([experiment.experiment_id], f"tags.`{RUN_TYPE_TAG}` = 'study'")
    assert study_run.info.run_name == "tiny-study" and study_run.info.status == "FINISHED"
    assert study.user_attrs[STUDY_RUN_ATTR] == study_run.info.run_id == first.study_run_id
    trial_runs = {
        int(run.data.tags["optuna.trial_number"]): run
        for run in client.search_runs([experiment.experiment_id], f"tags.`{PARENT_TAG}` = '{study_run.info.run_id}'")
    }
    assert sorted(trial_runs) == [0, 1, 2]
    expected = {0: ("FINISHED", "complete"), 1: ("KILLED", "pruned"), 2: ("FAILED", "failed")}
    for number, (status, state) in expected.items():
        run = trial_runs[number]
        assert (run.info.status, run.data.tags["optuna.state"]) == (status, state), number
        assert run.data.tags[RUN_TYPE_TAG] == "cv" and run.data.params["learning_rate"] == str(
            study.get_trials()[number].params["learning_rate"]
        )
        assert study.get_trials()[number].user_attrs[STUDY_RUN_ATTR] == run.info.run_id
    assert trial_runs[1].data.tags["nerveseg.stopped"] == "TrialPruned"
    assert trial_runs[2].data.tags["optuna.fail_reason"].startswith("non-finite loss")
    assert trial_runs[0].data.metrics["cv_score_mean"] == pytest.approx(t0.value)
    folds_of_t0 = client.search_runs([experiment.experiment_id], f"tags.`{PARENT_TAG}` = '{trial_runs[0].info.run_id}'")
    assert sorted(r.data.tags["fold"] for r in folds_of_t0) == ["0", "1"]  # a trial looks like any CV run
    study_run = client.get_run(study_run.info.run_id)
    assert study_run.data.tags["best.trial_number"] == "0"
    assert study_run.data.tags["best.learning_rate"] == str(t0.params["learning_rate"])
    assert study_run.data.metrics["best_value"] == pytest.approx(t0.value)
    artifacts = {a.path for a in client.list_artifacts(study_run.info.run_id)}
    artifacts |= {a.path for a in client.list_artifacts(study_run.info.run_id, "plots")}
    assert {"best_params.json", "trials.csv", "base_config.yaml", "plots/optimization_history.png"} <= artifacts

    # Re-running with a higher total continues the same study and the same study run.
    second = run_study(settings(4), out=lines.append)
    assert second.n_trials_total == 4 and second.ran_here == 1 and second.study_run_id == first.study_run_id
    assert run_study(settings(4), out=lines.append).ran_here == 0  # already complete: nothing to do
    assert len(client.search_runs([experiment.experiment_id], f"tags.`{RUN_TYPE_TAG}` = 'study'")) == 1
    assert len(optuna.load_study(study_name="tiny-study", storage=storage).get_trials()) == 4

    # The exported best config is what cv_train.py runs.
    best_path = tmp_path / "experiments" / "tiny-study-best.yaml"
    assert second.best_config_path == best_path
    best = load_config(best_path)
    assert best.name == "tiny-study-best" and best.learning_rate == pytest.approx(second.best_params["learning_rate"])
    assert best.replace(name="tiny", **{k: getattr(base, k) for k in ("learning_rate", "base_filters")}) == base

    import cv_train

    code = cv_train.main(
        [
            "--config",
            str(best_path),
            "--raw-dir",
            str(synthetic_root / "raw"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--folds-dir",
            str(tmp_path / "folds"),
            "--quiet",
        ]
    )
    assert code == 0
    runs = client.search_runs([experiment.experiment_id], "attributes.run_name = 'tiny-study-best'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED" and "cv_score_mean" in runs[0].data.metrics
