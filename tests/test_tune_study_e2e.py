"""A tiny tracked study, run once per module, then one focused test per promise.

Three trials of a tiny config go through the real ``cross_validate`` path with a SQLite Optuna storage and
an embedded SQLite MLflow store: trial 0 completes, trial 1 is pruned (a pruner that prunes it), trial
2 fails with a diverged loss (a fault injected into ``train_fold`` for one learning rate). Re-running
adds trials up to the new total, and the exported best config runs through ``cv_train.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

optuna = pytest.importorskip("optuna")

from nerveseg import names  # noqa: E402
from nerveseg.config import TrainConfig  # noqa: E402
from nerveseg.track import schema  # noqa: E402
from nerveseg.track.schema import RUN_TYPE_TAG  # noqa: E402
from nerveseg.tune.search_space import parse_search_space  # noqa: E402

pytestmark = pytest.mark.slow

FAIL_LR = 1.0e-2  # trials with exactly this learning rate get a diverged loss injected
BASE = TrainConfig(name="tiny", height=32, width=40, depth=2, base_filters=4, learning_rate=1e-3, batch_size=8,
                   epochs=1, folds=2, seed=1)  # fmt: skip


class _PruneTrials(optuna.pruners.BasePruner):
    """Prunes the given trial numbers at their first report: a deterministic stand-in for a pruner."""

    def __init__(self, numbers: set[int]) -> None:
        self.numbers = numbers

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number in self.numbers


@dataclass
class Tuned:
    """The study after its first three trials, and how to run more."""

    root: Path
    storage: str
    first: Any  # StudyResult
    lines: list[str]
    run_more: Any  # n_trials -> StudyResult
    raw_dir: Path
    client: Any = None
    experiment_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name="tiny-study", storage=self.storage)

    def runs(self, query: str) -> list:
        return self.client.search_runs([self.experiment_id], query)


@pytest.fixture(scope="module")
def tuned(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuned]:
    import mlflow

    from nerveseg.tasks.nerve import fold as training
    from nerveseg.train.fold import TrainingDivergedError
    from nerveseg.tune.study import TuneSettings, run_study

    root = tmp_path_factory.mktemp("tune_e2e")
    storage = f"sqlite:///{root / 'optuna.db'}"
    space = parse_search_space(
        {
            "learning_rate": {"type": "float", "low": 1.0e-4, "high": FAIL_LR, "log": True},
            "base_filters": {"type": "categorical", "choices": [4, 8]},
        },
        source="test-space",
    )
    seeded = optuna.create_study(study_name="tiny-study", storage=storage, direction="maximize")
    for lr in (3e-3, 1e-3, FAIL_LR):  # the first three trials' params: complete, pruned, failed
        seeded.enqueue_trial({"learning_rate": lr, "base_filters": 4})
    lines: list[str] = []

    def run_more(n_trials: int) -> Any:
        settings = TuneSettings(
            study_name="tiny-study", n_trials=n_trials, base_config=BASE, space=space, storage=storage,
            raw_dir=synthetic_root / "raw", cache_dir=root / "cache", folds_dir=root / "folds",
            pruner=_PruneTrials({1}), seed=0, experiments_dir=root / "experiments", progress=False,
        )  # fmt: skip
        return run_study(settings, out=lines.append)

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        patch.setenv("MLFLOW_EXPERIMENT_NAME", "tune-test")
        real_train_fold = training.train_fold

        def train_fold_with_fault(config: TrainConfig, *args: Any, **kwargs: Any) -> Any:
            if config.learning_rate == FAIL_LR:
                raise TrainingDivergedError("fold 0: training diverged (loss became nan at epoch 1, batch 1)")
            return real_train_fold(config, *args, **kwargs)

        patch.setattr(training, "train_fold", train_fold_with_fault)
        first = run_more(3)
        client = mlflow.MlflowClient()
        experiment_id = client.get_experiment_by_name("tune-test").experiment_id
        yield Tuned(root, storage, first, lines, run_more, synthetic_root / "raw", client, experiment_id)


def test_trials_complete_prune_and_fail_with_a_reason(tuned: Tuned) -> None:
    assert tuned.first.n_trials_total == 3 and tuned.first.ran_here == 3
    assert tuned.first.states == {"COMPLETE": 1, "PRUNED": 1, "FAIL": 1}
    t0, t1, t2 = tuned.study().get_trials()[:3]
    assert (t0.state.name, t1.state.name, t2.state.name) == ("COMPLETE", "PRUNED", "FAIL")
    assert t2.user_attrs["fail_reason"].startswith("non-finite loss: TrainingDivergedError")
    assert list(t1.intermediate_values) == [0]  # pruned after its first fold
    assert 0.0 <= t0.value <= 1.0
    trial_lines = [line for line in tuned.lines if line.startswith("trial")][:3]
    assert len(trial_lines) == 3 and "PRUNED" in trial_lines[1] and "non-finite loss" in trial_lines[2]
    assert f"best {t0.value:.4f} (trial 0)" in trial_lines[2]


def test_each_trial_is_a_cv_run_nested_under_the_study_run_with_its_state(tuned: Tuned) -> None:
    from nerveseg.tune.study_tracker import STUDY_RUN_ATTR

    study = tuned.study()
    (study_run,) = tuned.runs(f"tags.`{RUN_TYPE_TAG}` = 'study'")
    assert study_run.info.run_name == "tiny-study"
    assert study.user_attrs[STUDY_RUN_ATTR] == study_run.info.run_id == tuned.first.study_run_id
    trial_runs = {
        int(r.data.tags["optuna.trial_number"]): r for r in tuned.runs(schema.children_filter(study_run.info.run_id))
    }
    expected = {0: ("FINISHED", "complete"), 1: ("KILLED", "pruned"), 2: ("FAILED", "failed")}
    for number, (status, state) in expected.items():
        run, trial = trial_runs[number], study.get_trials()[number]
        assert (run.info.status, run.data.tags["optuna.state"]) == (status, state), number
        assert run.data.tags[RUN_TYPE_TAG] == schema.CV_RUN
        assert run.data.params["learning_rate"] == str(trial.params["learning_rate"])
        assert trial.user_attrs[STUDY_RUN_ATTR] == run.info.run_id
    assert trial_runs[1].data.tags[schema.STOPPED_TAG] == "TrialPruned"
    assert trial_runs[2].data.tags["optuna.fail_reason"].startswith("non-finite loss")
    assert trial_runs[0].data.metrics[names.CV_SCORE_MEAN] == pytest.approx(study.get_trials()[0].value)
    folds_of_t0 = tuned.runs(schema.children_filter(trial_runs[0].info.run_id, schema.FOLD_RUN))
    assert sorted(r.data.tags[schema.FOLD_TAG] for r in folds_of_t0) == ["0", "1"]  # like any CV run


def test_the_study_run_records_the_best_trial_and_the_plots(tuned: Tuned) -> None:
    t0 = tuned.study().get_trials()[0]
    study_run = tuned.client.get_run(tuned.first.study_run_id)
    assert study_run.data.tags["best.trial_number"] == "0"
    assert study_run.data.tags["best.learning_rate"] == str(t0.params["learning_rate"])
    assert study_run.data.metrics["best_value"] == pytest.approx(t0.value)
    artifacts = {a.path for a in tuned.client.list_artifacts(study_run.info.run_id)}
    artifacts |= {a.path for a in tuned.client.list_artifacts(study_run.info.run_id, "plots")}
    assert {"best_params.json", "trials.csv", "base_config.yaml", "plots/optimization_history.png"} <= artifacts
    assert "plots/param_importances.png" in artifacts  # a note saying how many more trials it needs


def test_the_study_run_has_the_best_params_as_params_and_a_description(tuned: Tuned) -> None:
    t0 = tuned.study().get_trials()[0]
    run = tuned.client.get_run(tuned.first.study_run_id)
    expected = {key: str(value) for key, value in t0.params.items()}
    assert run.data.params == {**expected, "params_trial": "0"}
    assert run.data.tags["best.params_current"] == "true"
    assert not set(run.data.params) & set(run.data.metrics)
    text = run.data.tags[schema.DESCRIPTION_TAG]
    assert text.startswith("### Optuna study tiny-study") and f"best: trial 0, cv_score_mean {t0.value:.4f}" in text
    assert "step = fold index" in text


def test_the_study_names_its_objective_and_its_steps(tuned: Tuned) -> None:
    study = tuned.study()
    assert study.metric_names == ["cv_score_mean"]
    assert study.user_attrs["intermediate_step"].startswith("fold index")
    assert "folds finished so far" in study.user_attrs["intermediate_value"]  # the median pruner's running mean


def test_trial_runs_never_share_a_metric_and_a_param_name(tuned: Tuned) -> None:
    runs = [run for run in tuned.runs("") if run.data.tags.get(RUN_TYPE_TAG) in (schema.CV_RUN, schema.FOLD_RUN)]
    assert len(runs) >= 4  # three trials' CV runs and their fold runs
    for run in runs:
        assert not set(run.data.params) & set(run.data.metrics), run.info.run_name


def test_study_plots_use_whole_trial_numbers_and_wait_for_enough_trials_before_importances() -> None:
    from nerveseg.tune.study_views import MIN_TRIALS_FOR_IMPORTANCE, STUDY_PLOTS

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("a", 0, 1) + 0.1 * t.suggest_float("b", 0, 1), n_trials=3)
    history = STUDY_PLOTS["plots/optimization_history.png"](study)
    history.canvas.draw()
    ticks = [tick for tick in history.axes[0].get_xticks() if 0 <= tick <= 2]
    assert ticks and all(float(tick).is_integer() for tick in ticks)
    note = STUDY_PLOTS["plots/param_importances.png"](study)
    assert "this study has 3" in note.axes[0].texts[0].get_text()
    study.optimize(lambda t: t.suggest_float("a", 0, 1) + 0.1 * t.suggest_float("b", 0, 1), n_trials=5)
    assert MIN_TRIALS_FOR_IMPORTANCE == 8
    importances = STUDY_PLOTS["plots/param_importances.png"](study)
    assert importances.axes[0].get_title(loc="left") == "Hyperparameter Importances"


@pytest.fixture(scope="module")
def continued(tuned: Tuned) -> Any:
    """The same study asked for 4 trials in all, then again (nothing left to do)."""
    second = tuned.run_more(4)
    tuned.extra["third_ran"] = tuned.run_more(4).ran_here
    return second


def test_rerunning_with_a_higher_total_continues_the_same_study_and_run(tuned: Tuned, continued: Any) -> None:
    assert continued.n_trials_total == 4 and continued.ran_here == 1
    assert continued.study_run_id == tuned.first.study_run_id
    assert tuned.extra["third_ran"] == 0  # already complete: nothing to do
    assert len(tuned.runs(f"tags.`{RUN_TYPE_TAG}` = 'study'")) == 1
    assert len(tuned.study().get_trials()) == 4


def test_the_exported_best_config_runs_through_cv_train(tuned: Tuned, continued: Any) -> None:
    import cv_train
    from nerveseg.config import load_config

    best_path = tuned.root / "experiments" / "tiny-study-best.yaml"
    assert continued.best_config_path == best_path
    best = load_config(best_path)
    assert best.name == "tiny-study-best"
    assert best.learning_rate == pytest.approx(continued.best_params["learning_rate"])
    assert best.replace(name="tiny", **{k: getattr(BASE, k) for k in ("learning_rate", "base_filters")}) == BASE
    args = ["--config", str(best_path), "--raw-dir", str(tuned.raw_dir), "--cache-dir", str(tuned.root / "cache")]
    assert cv_train.main([*args, "--folds-dir", str(tuned.root / "folds"), "--no-progress"]) == 0
    runs = tuned.runs("attributes.run_name = 'tiny-study-best'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED" and names.CV_SCORE_MEAN in runs[0].data.metrics
