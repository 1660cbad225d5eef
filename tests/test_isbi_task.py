"""The ISBI 2012 task: fold training for both model families, OOF scoring, post-processing, TIFF submission."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import tifffile

from nerveseg import names
from nerveseg.config import TrainConfig, load_config
from nerveseg.errors import NervesegError
from nerveseg.tasks.isbi2012.challenge_metrics import challenge_scores
from nerveseg.tasks.isbi2012.data import IsbiData, block_folds
from nerveseg.tasks.isbi2012.membrane_postprocess import MembranePostprocess, apply_membrane_postprocess
from nerveseg.tasks.isbi2012.membranes import predict_isbi_ensemble
from nerveseg.tasks.isbi2012.metrics import membrane_scores
from nerveseg.tasks.isbi2012.postprocess import decide_isbi_postprocessing, postprocessed_v_rand_error
from nerveseg.tasks.isbi2012.submission import read_probability_stack, write_probability_stack
from nerveseg.tasks.isbi2012.summary import format_isbi_table, isbi_oof_summary
from nerveseg.tasks.isbi2012.synthetic import render_stack
from nerveseg.tasks.isbi2012.trainer import train_isbi_fold
from nerveseg.train.fold import HISTORY_KEYS, FoldResult

SIZE, N_SLICES = 64, 6
TINY = {
    "unet": dict(depth=3, base_filters=4, crop_size=32),
    "patch_cnn": dict(model="patch_cnn", window=25, patch_filters=4, dense_units=8),
}


@pytest.fixture(scope="module")
def em_data() -> IsbiData:
    """Six correlated 64x64 synthetic EM slices (labels: 255 cell, 0 membrane)."""
    pairs = list(render_stack(np.random.SeedSequence(3), N_SLICES, SIZE))
    images = np.stack([image for image, _ in pairs])
    membranes = np.stack([(label == 0).astype(np.uint8) for _, label in pairs])
    return IsbiData(images, membranes, images[:2].copy(), "png", "test")


def _config(family: str) -> TrainConfig:
    return TrainConfig(
        task="isbi2012", height=SIZE, width=SIZE, batch_size=4, epochs=2, steps_per_epoch=2, folds=2, **TINY[family]
    )


@pytest.fixture(scope="module", params=["unet", "patch_cnn"])
def trained(request: pytest.FixtureRequest, em_data: IsbiData, tmp_path_factory: pytest.TempPathFactory):
    config = _config(request.param)
    folds = block_folds(N_SLICES, 2)
    result = train_isbi_fold(config, em_data, folds, 1, tmp_path_factory.mktemp(request.param), verbose=0)
    return config, folds, result


@pytest.mark.slow
def test_fold_result_shapes_keys_and_last_epoch(trained, em_data: IsbiData) -> None:
    config, folds, result = trained
    assert isinstance(result, FoldResult) and result.fold == 1
    np.testing.assert_array_equal(result.val_index, np.flatnonzero(folds == 1))
    assert result.oof_probs.shape == (3, SIZE, SIZE) and result.oof_probs.dtype == np.float32
    assert np.isfinite(result.oof_probs).all() and 0 <= result.oof_probs.min() <= result.oof_probs.max() <= 1
    assert result.oof_presence is None
    assert tuple(result.history) == HISTORY_KEYS and all(len(v) == config.epochs for v in result.history.values())
    # a fixed schedule: the last epoch, never chosen on the scored fold
    assert result.kept_epoch == config.epochs and result.checkpoint == "last"
    assert result.weights_path.name == "fold_1.weights.h5" and result.weights_path.is_file()
    assert not list(result.weights_path.parent.glob("*partial*"))
    expected = membrane_scores(result.oof_probs, em_data.membranes[result.val_index]).v_rand_error
    assert result.val_score == pytest.approx(expected)
    assert result.norm_std > 0 and 0 < result.norm_mean < 1


@pytest.mark.slow
def test_saved_weights_reproduce_the_oof_predictions(trained, em_data: IsbiData) -> None:
    config, _, result = trained
    assert config.tta  # the out-of-fold predictions take the submission's 8 views
    again = predict_isbi_ensemble(config, [result.weights_path], em_data.images[result.val_index], tta=True)
    np.testing.assert_allclose(again, result.oof_probs, atol=1e-5)


@pytest.mark.slow
def test_tta_ensemble_is_equivariant_to_rotations_and_flips(trained, em_data: IsbiData) -> None:
    """Averaging over all 8 views makes the prediction of a rotated slice the rotated prediction."""
    config, _, result = trained
    images = em_data.images[:1]
    paths = [result.weights_path, result.weights_path]
    probs = predict_isbi_ensemble(config, paths, images)
    turned = predict_isbi_ensemble(config, paths, np.ascontiguousarray(np.rot90(images[:, ::-1], 1, axes=(1, 2))))
    np.testing.assert_allclose(turned, np.rot90(probs[:, ::-1], 1, axes=(1, 2)), atol=1e-5)
    plain = predict_isbi_ensemble(config, paths, images, tta=False)
    assert not np.allclose(plain, probs, atol=1e-6)  # the views do differ (the models are not symmetric)


def test_missing_weights_and_wrong_task_are_one_line_errors(em_data: IsbiData, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        predict_isbi_ensemble(_config("unet"), [tmp_path / "nope.weights.h5"], em_data.images)
    with pytest.raises(ValueError, match="task='isbi2012'"):
        train_isbi_fold(TrainConfig(), em_data, block_folds(N_SLICES, 2), 0, tmp_path)
    with pytest.raises(ValueError, match="height=128"):
        train_isbi_fold(_config("unet").replace(height=128), em_data, block_folds(N_SLICES, 2), 0, tmp_path)


def _fake_results(em_data: IsbiData, folds: np.ndarray, seed: int = 0) -> list[FoldResult]:
    rng = np.random.default_rng(seed)
    noisy = np.clip(em_data.membranes + rng.normal(0, 0.35, em_data.membranes.shape), 0, 1).astype(np.float32)
    history = {key: [0.0] for key in HISTORY_KEYS}
    return [
        FoldResult(k, np.flatnonzero(folds == k), noisy[folds == k], None, history, 1, Path("x"), 0.0, 0.5, 0.2)
        for k in np.unique(folds)
    ]


def test_oof_summary_agrees_with_membrane_scores(em_data: IsbiData) -> None:
    folds = block_folds(N_SLICES, 3)
    results = _fake_results(em_data, folds)
    metrics, oof, pooled = isbi_oof_summary(em_data, folds, results[::-1])  # order of results does not matter
    for result in results:
        np.testing.assert_array_equal(oof[result.val_index], result.oof_probs)
    per_fold = [membrane_scores(r.oof_probs, em_data.membranes[r.val_index]).as_dict() for r in results]
    for name in ("pixel_error", "v_rand_error", "v_info_error", "adapted_rand_error"):
        assert metrics[f"fold_2_{name}"] == pytest.approx(per_fold[2][name])
        assert metrics[f"cv_{name}_mean"] == pytest.approx(np.mean([s[name] for s in per_fold]))
    assert metrics["oof_v_rand_error"] == pytest.approx(membrane_scores(oof, em_data.membranes).v_rand_error)
    np.testing.assert_array_equal(pooled.v_rand_errors(), challenge_scores(oof, em_data.membranes).v_rand_errors())
    assert metrics["baseline_all_cell_pixel_error"] == pytest.approx(em_data.membranes.mean())
    table = format_isbi_table(metrics)
    assert "fold 2" in table and "CV mean" in table and f"{metrics['cv_v_rand_error_mean']:.4f}" in table
    with pytest.raises(ValueError, match="once"):
        isbi_oof_summary(em_data, folds, results[:2])


def _grid(size: int = 60, step: int = 12) -> np.ndarray:
    membrane = np.zeros((size, size), np.uint8)
    membrane[::step] = 1
    membrane[:, ::step] = 1
    return membrane


def test_postprocess_round_trips_and_rejects_bad_values() -> None:
    settings = MembranePostprocess(0.4, 16)
    assert MembranePostprocess.from_json(settings.to_json()) == settings
    with pytest.raises(ValueError, match="threshold"):
        MembranePostprocess(1.5, 0)
    with pytest.raises(ValueError, match="must hold"):
        MembranePostprocess.from_json('{"threshold": 0.5}')


def test_small_cell_cleanup_is_kept_only_when_it_lowers_v_rand_error() -> None:
    truth = np.stack([_grid(), _grid()])
    spurious = truth.astype(np.float32)
    spurious[:, 3:8, 3:8] = 1.0  # a membrane ring inside a cell carves a 3x3 fake cell out of it
    spurious[:, 4:7, 4:7] = 0.0
    chosen = decide_isbi_postprocessing(spurious, truth, min_cell_areas=(0, 16))
    assert chosen.min_cell_area == 16
    assert postprocessed_v_rand_error(spurious, truth, chosen) < membrane_scores(spurious, truth).v_rand_error
    cleaned = apply_membrane_postprocess(spurious, chosen)
    assert (cleaned[:, 4:7, 4:7] == 1.0).all() and (cleaned[:, 20:23, 20:23] == spurious[:, 20:23, 20:23]).all()

    perfect = decide_isbi_postprocessing(truth.astype(np.float32), truth, min_cell_areas=(0, 16, 400))
    assert perfect.min_cell_area == 0  # nothing to gain: the clean-up is left off


def test_tiff_stack_writes_float32_never_overwrites_and_validates(tmp_path: Path) -> None:
    probs = np.random.default_rng(0).random((3, 512, 512), dtype=np.float32)
    path = write_probability_stack(probs, tmp_path / "sub.tif")
    back = read_probability_stack(path)
    assert back.dtype == np.float32 and back.shape == (3, 512, 512)
    np.testing.assert_array_equal(back, probs)
    with pytest.raises(NervesegError, match="already exists"):  # the user's error: one line from submit.py
        write_probability_stack(np.zeros_like(probs), path)
    np.testing.assert_array_equal(read_probability_stack(path), probs)  # untouched


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.full((2, 512, 512), 1.5, np.float32), "in \\[0, 1\\]"),
        (np.full((2, 512, 512), np.nan, np.float32), "NaN"),
        (np.zeros((2, 512, 512), np.float64), "float32"),
        (np.zeros((2, 256, 512), np.float32), "shape"),
    ],
)
def test_bad_stacks_are_refused_on_write_and_caught_on_read(tmp_path: Path, bad: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_probability_stack(bad, tmp_path / "new.tif")
    assert not (tmp_path / "new.tif").exists()
    tifffile.imwrite(tmp_path / "bad.tif", bad)
    with pytest.raises(ValueError, match=message) as error:
        read_probability_stack(tmp_path / "bad.tif")
    assert "bad.tif" in str(error.value) and "\n" not in str(error.value)


def test_config_task_rules(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs task='isbi2012'"):
        TrainConfig(model="patch_cnn")
    with pytest.raises(ValueError, match="crop_size=100"):
        TrainConfig(task="isbi2012", height=512, width=512, crop_size=100)
    with pytest.raises(ValueError, match="window 64"):
        TrainConfig(task="isbi2012", model="patch_cnn", window=64)
    for name in ("isbi_unet", "isbi_patch_cnn", "isbi_demo", "isbi_unet_topology"):
        config = load_config(Path(__file__).resolve().parents[1] / "experiments" / f"{name}.yaml")
        assert config.task == "isbi2012" and (config.height, config.width) == (512, 512) and config.folds == 5


@pytest.mark.slow
def test_the_served_model_answers_each_slice_with_its_cleaned_up_membrane_map(trained, em_data: IsbiData) -> None:
    """What the pyfunc model serves for ISBI (``TASK.served``): one float32 TIFF per image, the runs' map cleaned up
    as the decision says; its signature has that one column and no ``return_mask``."""
    from nerveseg.inference.trained import TrainedModels
    from nerveseg.tasks import get_task
    from nerveseg.track.model_package import signature

    config, _, result = trained
    task, settings = get_task("isbi2012"), MembranePostprocess(threshold=0.5, min_cell_area=4)
    decision = task.decision_from_json(settings.as_dict(), source="test")
    served = task.served([TrainedModels(config, [result.weights_path])], decision, tta=False, batch_size=4)
    answer = served.answer(list(em_data.images[:2]), return_mask=True)
    maps = [tifffile.imread(io.BytesIO(cell)) for cell in answer[names.MEMBRANE_COLUMN]]
    probs = predict_isbi_ensemble(config, [result.weights_path], em_data.images[:2], tta=False)
    np.testing.assert_allclose(np.stack(maps), apply_membrane_postprocess(probs, settings), atol=1e-6)
    assert [c.name for c in signature("isbi2012").outputs.inputs] == [names.MEMBRANE_COLUMN]
    assert signature("isbi2012").params is None and signature("nerve").params is not None
