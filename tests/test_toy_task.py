"""The toy task (``src/nerveseg/tasks/toy/``): a third task added as one package, found without a list to edit.

Fast: the registry finds every task package (the toy among them) and the config checks its field against them;
the toy's generator, IoU and post-processing on their own. Slow, once per module: the toy's data written by its
generator, two tiny configs (the same folds, another width) trained by ``cv_train.py`` into an SQLite MLflow
store, the better one submitted by ``submit.py`` (a CSV of RLE masks), the two compared by ``compare.py``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from helpers import quiet_main
from nerveseg.config import TrainConfig, config_to_yaml, load_config, task_names
from nerveseg.errors import ConfigError, NervesegError
from nerveseg.tasks import get_task
from nerveseg.tasks.toy import ToyDecision
from nerveseg.tasks.toy.blobs import iou_per_image, read_blobs, write_blobs

TINY = dict(task="toy", height=32, width=32, depth=3, batch_size=8, learning_rate=1e-3, epochs=2, folds=2, seed=1)
CONFIGS = (TrainConfig(name="toy_a", base_filters=4, **TINY), TrainConfig(name="toy_b", base_filters=8, **TINY))


def test_every_task_package_is_found_and_named_by_its_folder() -> None:
    assert task_names() == ("nerve", "isbi2012", "toy")  # the default first
    for name in task_names():
        assert get_task(name).name == name
    with pytest.raises(NervesegError, match="expected one of nerve, isbi2012, toy") as error:
        get_task("toy2")
    assert "\n" not in str(error.value)


def test_the_config_takes_the_toy_and_refuses_an_unknown_task_in_one_line(tmp_path: Path) -> None:
    from nerveseg.model.families import NERVE_UNET, family_of

    assert family_of(CONFIGS[0]) is NERVE_UNET  # a task without families of its own trains the whole-image U-Net
    (tmp_path / "bad.yaml").write_text("task: blobs\n")
    with pytest.raises(ConfigError, match=r"task='blobs' is not allowed; expected one of \['nerve', 'isbi2012', 'toy'"):
        load_config(tmp_path / "bad.yaml")


def test_the_generator_is_seeded_and_never_writes_over_data(tmp_path: Path) -> None:
    train = write_blobs(tmp_path / "a", n_train=12, n_test=3, size=32, seed=5)
    images, masks = read_blobs(train, "images", "masks")
    again = read_blobs(write_blobs(tmp_path / "b", n_train=12, n_test=3, size=32, seed=5), "images", "masks")
    assert images.shape == masks.shape == (12, 32, 32) and set(np.unique(masks)) == {0, 1}
    assert np.array_equal(images, again[0]) and np.array_equal(masks, again[1])
    assert images[masks == 1].mean() > images[masks == 0].mean() + 40  # the blobs are bright
    with pytest.raises(NervesegError, match="holds toy data already"):
        write_blobs(tmp_path / "a")
    (tmp_path / "a" / "test.npz").write_bytes(b"not a zip")
    with pytest.raises(NervesegError, match="no toy data file") as error:
        read_blobs(tmp_path / "a" / "test.npz", "images")
    assert "\n" not in str(error.value)


def test_iou_and_the_threshold_chosen_on_oof() -> None:
    truth = np.zeros((3, 4, 4), np.uint8)
    truth[0, :2], truth[1, :1] = 1, 1
    predicted = np.zeros_like(truth)
    predicted[0, :1], predicted[1, 2:] = 1, 1
    assert iou_per_image(truth, predicted).tolist() == [0.5, 0.0, 1.0]  # both empty: 1
    task = get_task("toy")
    data = type("Data", (), {"masks": truth})()
    decision = task.decide_postprocessing(data, np.arange(3), truth * 0.75, None, progress=False)
    assert decision == ToyDecision(0.1, 1.0)  # the lowest of the perfect thresholds
    assert task.decision_from_json(decision.to_json(), source="p.json") == decision
    with pytest.raises(NervesegError, match="needs a threshold between 0 and 1"):
        task.decision_from_json({"threshold": 2}, source="p.json")


@dataclass
class Tracked:
    root: Path
    raw_dir: Path
    parents: dict[str, str]  # config name -> parent run id
    submitted: str  # submit.py's output


@pytest.fixture(scope="module")
def tracked(empty_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tracked]:
    import cv_train
    import submit

    root = tmp_path_factory.mktemp("toy_e2e")
    shutil.copy(empty_db, root / "mlflow.db")
    raw_dir = root / "raw"
    write_blobs(raw_dir, n_train=24, n_test=6, size=32, seed=3)
    data = [f"--raw-dir={raw_dir}", f"--cache-dir={root / 'cache'}", "--no-progress"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        patch.setenv("MLFLOW_EXPERIMENT_NAME", "toy")
        parents = {}
        for config in CONFIGS:
            (root / f"{config.name}.yaml").write_text(config_to_yaml(config))
            out = quiet_main(
                cv_train.main, [f"--config={root / config.name}.yaml", f"--folds-dir={root / 'folds'}", *data]
            )
            parents[config.name] = out.split("parent run: ")[1].split()[0]
        submitted = quiet_main(submit.main, ["--task=toy", f"--out-dir={root / 'sub'}", *data])
        yield Tracked(root, raw_dir, parents, submitted)


@pytest.mark.slow
def test_cv_train_ranks_toy_runs_by_their_iou(tracked: Tracked) -> None:
    from nerveseg.track import run_reader, schema
    from nerveseg.track.store import get_client

    client = get_client()
    for parent_id in tracked.parents.values():
        run = client.get_run(parent_id)
        metrics = run.data.metrics
        assert run.info.status == "FINISHED" and run.data.params["task"] == "toy"
        assert metrics["cv_iou_mean"] == pytest.approx((metrics["fold_0_iou"] + metrics["fold_1_iou"]) / 2)
        assert 0 <= metrics["oof_iou"] <= 1 and "cv_score_mean" not in metrics  # the nerve's metric is not faked
        assert "cv_iou_mean" in run.data.tags[schema.DESCRIPTION_TAG]
        for k, fold_run in run_reader.newest_finished_fold_runs(client, run).items():
            assert fold_run.data.metrics["val_score"] == pytest.approx(metrics[f"fold_{k}_iou"])  # the fold's IoU
    assert len(list((tracked.root / "folds").glob("*.json"))) == 1  # both configs: one split


@pytest.mark.slow
def test_submit_writes_the_best_toy_runs_rle_csv(tracked: Tracked) -> None:
    from nerveseg.submit.rle import rle_decode
    from nerveseg.track.store import get_client

    ious = {name: get_client().get_run(run_id).data.metrics["cv_iou_mean"] for name, run_id in tracked.parents.items()}
    best = max(ious, key=lambda name: ious[name])
    assert f"chose {best} ({tracked.parents[best]})" in tracked.submitted
    (path,) = (tracked.root / "sub").glob("*.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "id,rle_mask" and [line.split(",")[0] for line in lines[1:]] == [str(k) for k in range(6)]
    for line in lines[1:]:
        assert rle_decode(line.split(",")[1], (32, 32)).shape == (32, 32)
    assert "toy: 6 test images" in tracked.submitted and f"wrote {path}" in tracked.submitted


@pytest.mark.slow
def test_compare_pairs_the_two_toy_runs_by_image(tracked: Tracked) -> None:
    import compare

    a, b = tracked.parents["toy_a"], tracked.parents["toy_b"]
    out = quiet_main(compare.main, [a, b, "--resamples", "200"])
    assert "per-image oof_iou (higher is better)" in out and "paired by" in out and "comparison run: " in out
    assert any(line.split()[:2] == ["B", "toy_b"] for line in out.splitlines())
