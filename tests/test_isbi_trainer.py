"""The ISBI trainer behaves as the nerve trainer does: one-line user errors, op determinism as the config says,
the shared weights file name, atomic write and checked read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nerveseg.config import TrainConfig
from nerveseg.errors import NervesegError
from nerveseg.names import weights_file
from nerveseg.tasks.isbi2012.data import IsbiData, block_folds
from nerveseg.tasks.isbi2012.membranes import build_isbi_model, predict_isbi_ensemble
from nerveseg.tasks.isbi2012.synthetic import generate_em, render_stack
from nerveseg.tasks.isbi2012.trainer import train_isbi_fold
from nerveseg.train import fold as training

SIZE, N_SLICES = 48, 4
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.fixture(scope="module")
def em_data() -> IsbiData:
    pairs = list(render_stack(np.random.SeedSequence(5), N_SLICES, SIZE))
    images = np.stack([image for image, _ in pairs])
    membranes = np.stack([(label == 0).astype(np.uint8) for _, label in pairs])
    return IsbiData(images, membranes, images[:1].copy(), "png", "test")


def _config(**changes: object) -> TrainConfig:
    tiny = dict(height=SIZE, width=SIZE, depth=2, base_filters=4, crop_size=32, batch_size=2, epochs=1)
    return TrainConfig(task="isbi2012", **{**tiny, "steps_per_epoch": 2, "folds": 2, "tta": False, **changes})


def _one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(error.value)
    assert isinstance(error.value, NervesegError) and "\n" not in message
    return message


@pytest.mark.parametrize(
    ("changes", "folds", "fold", "expected"),
    [
        (dict(task="nerve", model="unet"), None, 0, "task='isbi2012'"),
        (dict(height=64, width=64, crop_size=32), None, 0, "height=64"),
        ({}, np.zeros(3, int), 0, "one entry per slice"),
        ({}, None, 7, "fold=7"),
    ],
)
def test_bad_isbi_training_input_is_one_nerveseg_error(
    em_data: IsbiData, tmp_path: Path, changes: dict, folds: np.ndarray | None, fold: int, expected: str
) -> None:
    config = TrainConfig(**changes) if changes.get("task") == "nerve" else _config(**changes)
    folds = block_folds(N_SLICES, 2) if folds is None else folds
    with pytest.raises(NervesegError, match=expected) as error:
        train_isbi_fold(config, em_data, folds, fold, tmp_path, verbose=0)
    _one_line(error)
    assert not list(tmp_path.iterdir())  # refused before anything is written


def test_the_trainer_sets_op_determinism_as_the_config_says(
    em_data: IsbiData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The switch is set from the config before training (stopped right there: no model is trained here)."""
    seen: list[bool] = []

    def record(enabled: bool) -> None:
        seen.append(enabled)
        raise KeyboardInterrupt  # stop before the model is built

    monkeypatch.setattr(training, "set_op_determinism", record)
    for deterministic in (True, False):
        with pytest.raises(KeyboardInterrupt):
            train_isbi_fold(_config(deterministic=deterministic), em_data, block_folds(N_SLICES, 2), 0, tmp_path)
    assert seen == [True, False]


@pytest.mark.parametrize(
    ("saved", "loaded"),
    [
        (dict(base_filters=4), dict(base_filters=8)),
        (dict(depth=2), dict(depth=3)),
        (dict(model="patch_cnn", window=25, patch_filters=4, dense_units=8), dict(patch_filters=8)),
    ],
)
def test_a_weights_file_that_does_not_fit_is_one_line(
    em_data: IsbiData, tmp_path: Path, saved: dict, loaded: dict
) -> None:
    config = _config(**saved)
    path = tmp_path / weights_file(0)
    build_isbi_model(config, SIZE, SIZE).save_weights(path)
    predict_isbi_ensemble(config, [path], em_data.images[:1], tta=False)  # the matching config loads
    with pytest.raises(NervesegError, match="does not fit the model built from config") as error:
        predict_isbi_ensemble(config.replace(**loaded), [path], em_data.images[:1], tta=False)
    assert str(path) in _one_line(error)
    with pytest.raises(NervesegError, match="does not exist") as error:
        predict_isbi_ensemble(config, [tmp_path / "missing.weights.h5"], em_data.images[:1])
    _one_line(error)


@pytest.mark.slow
def test_deterministic_isbi_folds_give_identical_weights(em_data: IsbiData, tmp_path: Path) -> None:
    def weights(config: TrainConfig, folder: str) -> list[np.ndarray]:
        result = train_isbi_fold(config, em_data, block_folds(N_SLICES, 2), 0, tmp_path / folder, verbose=0)
        assert result.weights_path == tmp_path / folder / weights_file(0)
        assert not list(result.weights_path.parent.glob("*partial*"))  # written atomically, renamed at the end
        model = build_isbi_model(config, config.crop_size, config.crop_size)
        model.load_weights(result.weights_path)
        return model.get_weights()

    config = _config(deterministic=True, elastic_sigma=2.0, border_w0=5.0)
    first, second = weights(config, "a"), weights(config, "b")
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    other = weights(config.replace(seed=config.seed + 1), "c")  # the test can fail: a seed changes the weights
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("family", [dict(), dict(model="patch_cnn", window=25, patch_filters=4, dense_units=8)])
def test_one_trainer_keeps_ema_weights_for_each_isbi_family(em_data: IsbiData, tmp_path: Path, family: dict) -> None:
    """``use_ema`` reaches both families through the one trainer (the patch CNN once ignored it): the kept weights
    are the moving average, validated on it each epoch (``SwapEMAWeights`` needs an optimizer that keeps one)."""

    def kept(use_ema: bool) -> list[np.ndarray]:
        config = _config(use_ema=use_ema, ema_momentum=0.5, **family)
        result = train_isbi_fold(config, em_data, block_folds(N_SLICES, 2), 0, tmp_path / str(use_ema), verbose=0)
        model = build_isbi_model(config, SIZE, SIZE)
        model.load_weights(result.weights_path)
        return model.get_weights()

    assert not all(np.array_equal(a, b) for a, b in zip(kept(True), kept(False), strict=True))


@pytest.mark.slow
def test_cv_train_refuses_isbi_data_of_another_size_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command path: isbi_demo.yaml (512x512) on 48x48 slices, and a raw folder without ISBI data."""
    import cv_train

    generate_em(tmp_path / "em", n_train=N_SLICES, n_test=1, size=SIZE, progress=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    common = ["--config", str(EXPERIMENTS / "isbi_demo.yaml"), "--no-progress"]
    common += ["--cache-dir", str(tmp_path / "cache"), "--folds-dir", str(tmp_path / "folds")]
    for raw_dir, expected in ((tmp_path / "em", "height=512, width=512"), (tmp_path / "none", "no ISBI 2012 data")):
        capsys.readouterr()
        assert cv_train.main([*common, "--raw-dir", str(raw_dir)]) == 2
        err = capsys.readouterr().err  # MLflow may log its database set-up before
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and expected in errors[0] and err.endswith(errors[0] + "\n"), err
        assert "Traceback" not in err
    assert not (tmp_path / "folds").exists()  # refused before any fold was set up
