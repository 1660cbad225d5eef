"""Tuning: search-space validation, pruning/reporting, exact-N trial counts, failing fast.

The tiny tracked study end to end is in test_tune_study_e2e.py; Ctrl-C and --no-progress in
test_tune_interrupt.py.
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
from nerveseg.tune.objective import PruningListener, describe_failure  # noqa: E402
from nerveseg.tune.search_space import load_search_space, parse_search_space  # noqa: E402

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


@pytest.mark.slow
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


def test_confirm_needs_a_study_with_a_complete_trial_and_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import tune

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert tune.main(["--study", "s"]) == 2
    assert "pass --trials N (the study's total), --confirm (a finished study), or both" in capsys.readouterr().err
    assert tune.main(["--study", "s", "--confirm", "--confirm-seed", "-1"]) == 2
    assert "--confirm-seed -1 is out of range" in capsys.readouterr().err
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    assert tune.main(["--study", "nope", "--confirm", "--storage", storage]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no study 'nope'" in err[0]
    optuna.create_study(study_name="empty", storage=storage)
    assert tune.main(["--study", "empty", "--confirm", "--storage", storage]) == 2
    assert "has no complete trial to confirm" in capsys.readouterr().err


def test_a_trial_trains_no_ensemble_gain_probe_unless_the_space_searches_it(tmp_path: Path) -> None:
    """The probe moves only the PI, not the ranking metric trials are judged by: trials skip it."""
    from nerveseg.run.store import CVPaths
    from nerveseg.tune.objective import CVObjective

    base = TrainConfig(name="base", ensemble_gain_probe=True)
    paths = CVPaths(tmp_path, tmp_path, tmp_path)
    for mapping, expected in (({"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-3}}, False),
                              ({"ensemble_gain_probe": {"type": "categorical", "choices": [True]}}, True)):  # fmt: skip
        objective = CVObjective(base, parse_search_space(mapping), "s", "run", paths)
        trial = optuna.create_study().ask()
        config = objective.trial_config(trial)
        assert config.ensemble_gain_probe is expected and config.name == "s-trial0000"


def test_each_trial_line_says_how_much_of_the_study_is_left() -> None:
    import datetime

    import optuna
    from optuna.trial import FrozenTrial, TrialState

    from nerveseg.tune.study_output import format_trial_line, study_outlook

    study = optuna.create_study(direction="maximize")
    start = datetime.datetime(2026, 1, 1)
    for number, (state, seconds) in enumerate([(TrialState.COMPLETE, 600), (TrialState.PRUNED, 120)]):
        study.add_trial(FrozenTrial(
            number=number, state=state, value=0.5 if state == TrialState.COMPLETE else None, datetime_start=start,
            datetime_complete=start + datetime.timedelta(seconds=seconds), params={}, distributions={},
            user_attrs={}, system_attrs={}, intermediate_values={}, trial_id=number,
        ))  # fmt: skip
    # 8 trials to go at the mean of the ended ones (6 min, the pruned one included), on this worker alone
    assert study_outlook(study, 10) == "2/10 trials, about 48 min left"
    line = format_trial_line(study, study.trials[0], 10)
    assert line.endswith("| best 0.5000 (trial 0) | 2/10 trials, about 48 min left")
    study.ask()  # another worker's trial is running: it counts, and the 7 left are shared by two workers
    assert study_outlook(study, 10) == "3/10 trials, about 21 min left"
    assert study_outlook(study, 3) == "3/3 trials"
