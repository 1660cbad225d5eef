"""``run.cross_validate`` over a ``LocalStore``: a whole CV with no MLflow, resumable, never retraining a fold."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nerveseg import names
from nerveseg.errors import NervesegError
from nerveseg.run.store import CVObserver, CVPaths

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, sys
from pathlib import Path
from nerveseg.config import TrainConfig
from nerveseg.run.cross_validate import cross_validate
from nerveseg.run.local_store import LocalStore
from nerveseg.run.store import CVPaths

root, out = Path(sys.argv[1]), Path(sys.argv[2])
config = TrainConfig(name="tiny", height=32, width=40, depth=2, base_filters=4, batch_size=8, epochs=1, folds=2, seed=1)
paths = CVPaths(root / "raw", out / "cache", out / "folds", out / "work")
result = cross_validate(config, paths, LocalStore(out / "cv"), progress=False)
loaded = sorted(name for name in sys.modules if name == "mlflow" or name.startswith("mlflow.")
                or name == "optuna" or name.startswith("optuna."))
print(json.dumps({"loaded": loaded, "metrics": result.final.metrics, "trained": result.trained_folds}))
"""


@pytest.mark.slow
def test_a_tiny_cv_runs_without_importing_mlflow(synthetic_root: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(synthetic_root), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "src"), "TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["loaded"] == []  # neither MLflow nor Optuna was imported
    assert report["trained"] == [0, 1]
    assert 0.0 <= report["metrics"][names.CV_SCORE_MEAN] <= 1.0
    cv = tmp_path / "cv"
    parent = json.loads((cv / "parent.json").read_text())
    assert parent["status"] == "FINISHED"
    assert len(parent["environment"][names.GIT_COMMIT_TAG]) == 40  # provenance, recorded without MLflow
    assert parent["environment"]["device"].startswith(("CPU: ", "GPU x"))
    for k in (0, 1):
        environment = json.loads((cv / f"fold_{k}" / "environment.json").read_text())
        assert environment[names.GIT_COMMIT_TAG] == parent["environment"][names.GIT_COMMIT_TAG]
        assert (cv / f"fold_{k}" / names.weights_artifact(k)).is_file()
        assert (cv / f"fold_{k}" / names.oof_fold_artifact(k)).is_file()
    for artifact in (names.SUMMARY_ARTIFACT, names.POSTPROCESSING_ARTIFACT, names.OOF_PROBS_ARTIFACT,
                     names.IMAGE_SCORES_ARTIFACT, names.PROGRESS_ARTIFACT, names.GALLERY_ARTIFACT,
                     names.CONFIG_ARTIFACT):  # fmt: skip
        assert (cv / artifact).is_file(), artifact


class StopAtFold(CVObserver):
    """Interrupts the CV at the first epoch of ``fold``."""

    def __init__(self, fold: int) -> None:
        self.fold = fold

    def on_epoch_end(self, fold: int, epoch: int, logs) -> None:
        if fold == self.fold:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_an_interrupted_local_cv_resumes_only_the_missing_folds(
    synthetic_root: Path, tmp_path: Path, tiny_config
) -> None:
    from nerveseg.run.cross_validate import cross_validate
    from nerveseg.run.local_store import LocalStore

    config = tiny_config.replace(epochs=1, folds=2, depth=2)
    paths = CVPaths(synthetic_root / "raw", tmp_path / "cache", tmp_path / "folds", tmp_path / "work")
    store_dir = tmp_path / "cv"
    with pytest.raises(KeyboardInterrupt):
        cross_validate(config, paths, LocalStore(store_dir), [StopAtFold(1)], progress=False)
    assert json.loads((store_dir / "parent.json").read_text())["status"] == "KILLED"
    assert (store_dir / "fold_1" / "status").read_text() == "KILLED"
    facts_before = (store_dir / "fold_0" / names.fold_facts_artifact(0)).read_text()
    with pytest.raises(NervesegError, match="other settings"):
        cross_validate(config.replace(learning_rate=0.5), paths, LocalStore(store_dir), progress=False)

    result = cross_validate(config, paths, LocalStore(store_dir), progress=False)
    assert result.trained_folds == [1]  # fold 0 was read back, not retrained
    assert (store_dir / "fold_0" / names.fold_facts_artifact(0)).read_text() == facts_before
    assert result.final is not None
    assert result.final.metrics[names.fold_score_metric(0)] == json.loads(facts_before)["val_score"]

    with pytest.raises(NervesegError, match="FINISHED cross-validation and is never modified"):
        cross_validate(config, paths, LocalStore(store_dir), progress=False)


@pytest.mark.slow
def test_an_ensemble_gain_probe_trains_fold_0_again_and_keeps_only_the_gain(
    synthetic_root: Path, tmp_path: Path, tiny_config, capsys: pytest.CaptureFixture[str]
) -> None:
    from nerveseg.run.cross_validate import cross_validate
    from nerveseg.run.local_store import LocalStore

    config = tiny_config.replace(epochs=1, folds=2, depth=2, ensemble_gain_probe=True)
    paths = CVPaths(synthetic_root / "raw", tmp_path / "cache", tmp_path / "folds", tmp_path / "work")
    final = cross_validate(config, paths, LocalStore(tmp_path / "cv")).final
    assert final is not None
    metrics = final.metrics
    gain, estimate = metrics[names.ENSEMBLE_GAIN], metrics[names.OOF_SCORE_POSTPROCESSED]
    assert gain == pytest.approx(metrics[names.ENSEMBLE_GAIN_PAIR])  # 2 members: scaled by 2 * (1 - 1/2)
    assert metrics[names.EXPECTED_SCORE] == pytest.approx(estimate + gain)
    assert metrics[names.OOF_SCORE_POSTPROCESSED_PI_LOW] <= metrics[names.EXPECTED_SCORE]
    assert metrics[names.EXPECTED_SCORE] <= metrics[names.OOF_SCORE_POSTPROCESSED_PI_HIGH]
    progress = capsys.readouterr().err
    assert f"seed {config.seed + 2}" in progress
    assert "2 folds trained in " in progress and "; CV 67 % done" in progress  # the ETA counts the probe's fold
    assert (tmp_path / "work" / "ensemble_probe").is_dir()
    assert sorted(p.name for p in (tmp_path / "cv").glob("fold_*")) == ["fold_0", "fold_1"]  # no third model kept
    assert "ensemble " in final.table
    with pytest.raises(ValueError, match="ensemble_gain_probe"):
        config.replace(task="isbi2012", presence_head=False)
