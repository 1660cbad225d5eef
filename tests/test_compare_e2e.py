"""``compare.py`` on real cross-validations: three tiny CVs trained once per module on the synthetic set.

Two LocalStore CVs of one config with seeds 4 and 7 (two fold splits: on this set several seeds give one
partition), and one MLflow CV with seed 4 (the first one's split) and another learning rate. What is checked:
the stored per-image scores are what the run reports, two seeds come out "no detectable difference", a run
against itself differs by exactly 0, and an MLflow run is compared with a LocalStore folder and the comparison
logged.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import assert_one_line_error, run_script
from nerveseg import names
from nerveseg.config import TrainConfig
from nerveseg.errors import NervesegError
from nerveseg.evaluate.paired import NO_DIFFERENCE

pytestmark = pytest.mark.slow

CONFIG = TrainConfig(name="tiny", height=32, width=40, depth=2, base_filters=4, learning_rate=1e-3, batch_size=8,
                     epochs=1, folds=2, seed=1)  # fmt: skip


@dataclass
class Trained:
    seed4: Path  # LocalStore folders
    seed7: Path
    tracked: str  # the MLflow run id (seed 4, another learning rate)
    tracking_uri: str
    raw_dir: Path


@pytest.fixture(scope="module")
def trained(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    from nerveseg.run.cross_validate import cross_validate
    from nerveseg.run.local_store import LocalStore
    from nerveseg.run.store import CVPaths
    from nerveseg.track.mlflow_store import MlflowStore

    root = tmp_path_factory.mktemp("compare_e2e")
    paths = CVPaths(synthetic_root / "raw", root / "cache", root / "folds")
    for seed in (4, 7):
        cross_validate(CONFIG.replace(seed=seed), paths, LocalStore(root / f"seed{seed}"), progress=False)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv("MLFLOW_EXPERIMENT_NAME", "compare-test")
        config = CONFIG.replace(learning_rate=3e-3, name="tiny-lr", seed=4)
        tracked = cross_validate(config, paths, MlflowStore(progress=False), progress=False)
        yield Trained(root / "seed4", root / "seed7", tracked.parent_id, uri, synthetic_root / "raw")


def test_the_stored_image_scores_are_what_the_run_reports(trained: Trained) -> None:
    from nerveseg.run.local_store import LocalRunReader
    from nerveseg.track.run_reader import open_run

    folds_file = next((trained.seed4 / names.FOLDS_DIR).glob("*.json"))
    split = json.loads(folds_file.read_text())["folds"]
    for reader in (LocalRunReader(trained.seed4), open_run(trained.tracked, trained.tracking_uri)):
        scores = reader.image_scores()
        assert scores.metric == names.OOF_SCORE_POSTPROCESSED
        assert scores.scores.mean() == pytest.approx(reader.metrics()[names.OOF_SCORE_POSTPROCESSED], abs=1e-12)
        assert len(scores.ids) == 48 and len(set(scores.subjects.tolist())) == 6
        assert [image_id.split("_")[0] for image_id in scores.ids.tolist()] == scores.subjects.tolist()
        assert {i: int(f) for i, f in zip(scores.ids.tolist(), scores.folds.tolist(), strict=True)} == split


def test_two_seeds_of_one_config_are_no_detectable_difference(trained: Trained) -> None:
    from nerveseg.run.comparison import compare_runs
    from nerveseg.run.local_store import LocalRunReader

    readers = [LocalRunReader(trained.seed4), LocalRunReader(trained.seed7)]
    with pytest.raises(NervesegError, match="different fold splits"):
        compare_runs(readers)  # a seed picks the fold split too
    comparison = compare_runs(readers, allow_different_folds=True, warn=lambda line: None)
    diff = comparison.differences[0]
    assert diff.pairing == "subject" and diff.n_subjects == 6
    assert diff.verdict == NO_DIFFERENCE and diff.low <= 0.0 <= diff.high


def test_a_trained_run_compared_with_itself_differs_by_exactly_zero(trained: Trained) -> None:
    from nerveseg.run.comparison import compare_runs
    from nerveseg.run.local_store import LocalRunReader

    diff = compare_runs([LocalRunReader(trained.seed4), LocalRunReader(trained.seed4)]).differences[0]
    assert (diff.difference, diff.low, diff.high, diff.pairing) == (0.0, 0.0, 0.0, "image")


def test_an_mlflow_run_and_a_local_folder_are_paired_by_image(trained: Trained, tmp_path: Path) -> None:
    env = {"MLFLOW_TRACKING_URI": trained.tracking_uri, "MLFLOW_EXPERIMENT_NAME": "compare-test"}
    plot = tmp_path / "diff.png"
    done = run_script("compare.py", trained.tracked, trained.seed4, "--plot", plot, env=env)
    assert done.returncode == 0, done.stderr
    assert "paired by image" in done.stdout and "B vs A: " in done.stdout and "comparison run: " in done.stdout
    assert plot.is_file()
    seeds = run_script("compare.py", trained.seed4, trained.seed7, "--no-track", env=env)
    assert_one_line_error(seeds, "different fold splits", "--allow-different-folds")
