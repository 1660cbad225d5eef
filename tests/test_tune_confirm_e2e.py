"""``tune.py --confirm`` on a tiny tracked study: two trials, then the best re-trained on a fresh split and seed.

The study (two enqueued trials of a tiny config, no pruning) is run once per module; then ``confirm_study``
trains the best trial's config and the base config with the fresh seed, compares them and logs everything on the
study's MLflow run. A second confirmation through the command line reuses those runs instead of training again.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

optuna = pytest.importorskip("optuna")

from nerveseg import names  # noqa: E402
from nerveseg.config import TrainConfig  # noqa: E402
from nerveseg.errors import NervesegError  # noqa: E402
from nerveseg.track import schema  # noqa: E402
from nerveseg.tune import confirm  # noqa: E402
from nerveseg.tune.search_space import parse_search_space  # noqa: E402

pytestmark = pytest.mark.slow

BASE = TrainConfig(name="tiny", height=32, width=40, depth=2, base_filters=4, learning_rate=1e-3, batch_size=8,
                   epochs=1, folds=2, seed=4)  # fmt: skip
STUDY = "confirm-study"


@dataclass
class Confirmed:
    root: Path
    storage: str
    raw_dir: Path
    study_run_id: str
    result: Any  # ConfirmResult
    lines: list[str]
    client: Any
    experiment_id: str

    def settings(self, **changes: Any) -> Any:
        from nerveseg.tune.confirm import ConfirmSettings

        dirs = {"raw_dir": self.raw_dir, "cache_dir": self.root / "cache", "folds_dir": self.root / "folds"}
        return ConfirmSettings(STUDY, self.storage, **dirs, progress=False, **changes)

    def children(self, run_type: str) -> list:
        return self.client.search_runs([self.experiment_id], schema.children_filter(self.study_run_id, run_type))


@pytest.fixture(scope="module")
def confirmed(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Confirmed]:
    import mlflow

    from nerveseg.tune.confirm import confirm_study
    from nerveseg.tune.objective import make_pruner
    from nerveseg.tune.study import TuneSettings, run_study

    root = tmp_path_factory.mktemp("confirm_e2e")
    storage = f"sqlite:///{root / 'optuna.db'}"
    space = parse_search_space({"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}, source="s")
    seeded = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")
    for lr in (3e-3, 1e-3):
        seeded.enqueue_trial({"learning_rate": lr})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        patch.setenv("MLFLOW_EXPERIMENT_NAME", "confirm-test")
        dirs = {"raw_dir": synthetic_root / "raw", "cache_dir": root / "cache", "folds_dir": root / "folds"}
        study = run_study(
            TuneSettings(STUDY, 2, BASE, space, storage, **dirs, pruner=make_pruner("none"), seed=0,
                         experiments_dir=root / "experiments", progress=False),
            out=lambda line: None,
        )  # fmt: skip
        client = mlflow.MlflowClient()
        experiment_id = client.get_experiment_by_name("confirm-test").experiment_id
        box = Confirmed(root, storage, synthetic_root / "raw", study.study_run_id, None, [], client, experiment_id)
        box.result = confirm_study(box.settings(), out=box.lines.append)
        yield box


def test_confirm_reports_the_confirmed_score_beside_the_selected_one(confirmed: Confirmed) -> None:
    from nerveseg.tune.confirm import BASELINE_ROLE, BEST_ROLE, FRESH_SEED_OFFSET, SELECTED_ROLE

    result, study = confirmed.result, optuna.load_study(study_name=STUDY, storage=confirmed.storage)
    assert result.seed == BASE.seed + FRESH_SEED_OFFSET and result.trial_number == study.best_trial.number
    assert result.selected[names.CV_SCORE_MEAN] == study.best_value and result.n_complete == 2
    assert result.gap == result.confirmed[names.CV_SCORE_MEAN] - study.best_value
    best_run = confirmed.client.get_run(result.run_ids[BEST_ROLE])
    baseline_run = confirmed.client.get_run(result.run_ids[BASELINE_ROLE])
    assert best_run.data.params["seed"] == baseline_run.data.params["seed"] == str(result.seed)
    assert best_run.data.params["learning_rate"] == str(study.best_params["learning_rate"])
    assert baseline_run.data.params["learning_rate"] == str(BASE.learning_rate)
    assert result.confirmed[names.CV_SCORE_MEAN] == best_run.data.metrics[names.CV_SCORE_MEAN]
    assert result.baseline[names.CV_SCORE_MEAN] == baseline_run.data.metrics[names.CV_SCORE_MEAN]
    assert result.run_ids[SELECTED_ROLE] == study.best_trial.user_attrs["mlflow_run_id"]
    diff = result.comparison.differences[0]
    assert diff.pairing == "image"  # best and base config on the same fresh split
    assert [run.run_id for run in result.comparison.runs] == [baseline_run.info.run_id, best_run.info.run_id]
    text = result.describe()
    assert (
        "selected" in text and "confirmed" in text and f"best vs base config on the fresh split: {diff.verdict}" in text
    )
    assert any(f"training {STUDY}-confirm-best" in line for line in confirmed.lines)
    assert len(study.get_trials()) == 2  # confirmation runs are no trials


def test_the_study_run_logs_the_selected_and_the_confirmed_estimate(confirmed: Confirmed) -> None:
    from nerveseg.tune.confirm import BASELINE_ROLE, BEST_ROLE

    result = confirmed.result
    run = confirmed.client.get_run(confirmed.study_run_id)
    assert run.data.metrics[confirm.CONFIRM_SELECTED] == pytest.approx(result.selected[names.CV_SCORE_MEAN])
    assert run.data.metrics[confirm.CONFIRM_VALUE] == pytest.approx(result.confirmed[names.CV_SCORE_MEAN])
    assert run.data.metrics[confirm.CONFIRM_GAP] == pytest.approx(result.gap)
    assert run.data.metrics[confirm.confirm_metric(schema.PAIRED_DIFFERENCE)] == pytest.approx(
        result.comparison.differences[0].difference
    )
    for role in (BEST_ROLE, BASELINE_ROLE, schema.COMPARISON_RUN):
        assert run.data.tags[f"{confirm.CONFIRM_RUN_TAG_PREFIX}{role}"] == result.run_ids[role]
    assert run.data.tags[schema.VERDICT_TAG] == result.comparison.differences[0].verdict
    text = confirmed.client.download_artifacts(run.info.run_id, confirm.CONFIRM_REPORT_ARTIFACT)
    assert Path(text).read_text().strip() == result.describe()
    cv_runs = {r.info.run_id: r for r in confirmed.children(schema.CV_RUN)}
    for role in (BEST_ROLE, BASELINE_ROLE):
        tags = cv_runs[result.run_ids[role]].data.tags
        assert (tags[confirm.CONFIRM_ROLE_TAG], tags[confirm.CONFIRM_SEED_TAG]) == (role, str(result.seed))
    (comparison,) = confirmed.children(schema.COMPARISON_RUN)
    assert comparison.info.run_id == result.run_ids[schema.COMPARISON_RUN]


def test_confirming_again_from_the_command_line_reuses_the_runs(
    confirmed: Confirmed, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import tune

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{confirmed.root / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "confirm-test")
    cv_runs_before = len(confirmed.children(schema.CV_RUN))
    args = ["--study", STUDY, "--confirm", "--storage", confirmed.storage, "--raw-dir", str(confirmed.raw_dir)]
    args += ["--cache-dir", str(confirmed.root / "cache"), "--folds-dir", str(confirmed.root / "folds")]
    args += ["--no-progress"]
    assert tune.main(args) == 0
    out = capsys.readouterr().out
    assert out.count("confirm: reusing the finished") == 2 and confirmed.result.describe() in out
    assert len(confirmed.children(schema.CV_RUN)) == cv_runs_before


def test_a_confirmation_needs_a_fresh_seed(confirmed: Confirmed) -> None:
    from nerveseg.tune.confirm import confirm_study

    with pytest.raises(NervesegError, match="is the study's own seed"):
        confirm_study(confirmed.settings(seed=BASE.seed), out=lambda line: None)
