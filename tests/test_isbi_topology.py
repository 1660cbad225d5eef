"""Issue 17's topology pieces: the U-Net border weight map, elastic deformation, the watershed gap closing
(and its OOF decision and JSON), the PNGs beside the submission stack, the config fields."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy import ndimage

from nerveseg.config import TrainConfig
from nerveseg.errors import NervesegError
from nerveseg.tasks.isbi2012 import IsbiDecision, IsbiTask
from nerveseg.tasks.isbi2012.border_weights import (
    border_weight_map,
    class_balance_weights,
    nearest_two_cell_distances,
    training_weight_maps,
)
from nerveseg.tasks.isbi2012.challenge_metrics import cell_regions, challenge_scores
from nerveseg.tasks.isbi2012.elastic import IMAGE_ORDER, LABEL_ORDER, deform, elastic_crop, random_displacement
from nerveseg.tasks.isbi2012.membrane_postprocess import (
    MembranePostprocess,
    apply_membrane_postprocess,
    close_membrane_gaps,
)
from nerveseg.tasks.isbi2012.postprocess import decide_isbi_postprocessing, postprocessed_v_rand_error
from nerveseg.tasks.isbi2012.submission import read_probability_stack, write_submission_stack

# ------------------------------------------------------------------------------------ border weight map


def _two_cells(membrane_rows: int, height: int = 21, width: int = 60, band: int = 20) -> np.ndarray:
    """Two rectangles (rows above and below) split by ``membrane_rows`` membrane rows at row 8; the right
    ``band`` columns are membrane too (a wide membrane, far from one of the cells)."""
    membrane = np.zeros((height, width), np.uint8)
    membrane[8 : 8 + membrane_rows] = 1
    membrane[:, width - band :] = 1
    return membrane


@pytest.mark.parametrize("membrane_rows, d1, d2", [(1, 1, 1), (2, 1, 2), (3, 2, 2)])
def test_weight_map_matches_a_hand_computed_two_cell_case(membrane_rows: int, d1: float, d2: float) -> None:
    membrane = _two_cells(membrane_rows)
    assert cell_regions(membrane).max() == 2
    share = membrane.mean()
    w_membrane, w_cell = 0.5 / share, 0.5 / (1 - share)
    weights = border_weight_map(membrane, w0=10.0, sigma=5.0)
    middle = 8 + (membrane_rows - 1) // 2  # a membrane row as far from both cells as any (d1, d2 above)
    expected = w_membrane + 10.0 * math.exp(-((d1 + d2) ** 2) / (2 * 25.0))
    assert weights[middle, 20] == pytest.approx(expected, rel=1e-5)
    assert weights[middle, 0] == pytest.approx(expected, rel=1e-5)  # the same all along the membrane
    assert weights[0, 20] == pytest.approx(w_cell) and weights[15, 5] == pytest.approx(w_cell)  # cells: w_c only
    assert weights[2, 59] == pytest.approx(w_membrane)  # membrane 20 px from the cells: the border term is gone
    # at (0, 40), beside the top cell: d1 = 1 (pixel (0, 39)), d2 to the bottom cell's corner (8 + rows, 39)
    beside = 10.0 * math.exp(-((1 + math.hypot(8 + membrane_rows, 1)) ** 2) / 50.0)
    assert weights[0, 40] == pytest.approx(w_membrane + beside, rel=1e-4)


def test_bounded_distances_agree_with_full_transforms_on_many_cells() -> None:
    rng = np.random.default_rng(0)
    membrane = np.ones((96, 96), np.uint8)
    for _ in range(40):  # random rectangles of cell, many touching across thin membranes
        top, left = rng.integers(0, 90, 2)
        membrane[top : top + rng.integers(3, 15), left : left + rng.integers(3, 15)] = 0
    cells = cell_regions(membrane)
    assert cells.max() > 10
    full = np.sort(np.stack([ndimage.distance_transform_edt(cells != k) for k in range(1, cells.max() + 1)]), axis=0)
    reach = 20.0
    d1, d2 = nearest_two_cell_distances(cells, reach)
    within = full[1] <= reach
    np.testing.assert_allclose(d1[within], full[0][within], atol=1e-5)
    np.testing.assert_allclose(d2[within], full[1][within], atol=1e-5)
    assert np.all(~np.isfinite(d2[~within]) | (d2[~within] > reach))  # beyond the reach: no border term
    one_cell = np.ones((20, 20), np.uint8)
    one_cell[5:10, 5:10] = 0
    np.testing.assert_array_equal(border_weight_map(one_cell), class_balance_weights(one_cell))  # no pair: no term


def test_weight_maps_are_scaled_to_mean_one_and_w0_zero_is_class_balance_only() -> None:
    labels = np.stack([_two_cells(1), _two_cells(3)])
    maps = training_weight_maps(labels, w0=10.0, sigma=5.0)
    assert maps.shape == labels.shape and maps.dtype == np.float32 and maps.mean() == pytest.approx(1.0)
    np.testing.assert_allclose(border_weight_map(labels[0], w0=0.0), class_balance_weights(labels[0]))
    assert class_balance_weights(labels[0]).mean() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="sigma"):
        border_weight_map(labels[0], sigma=0.0)


# ------------------------------------------------------------------------------------ elastic deformation


def _blobs(size: int = 96, seed: int = 0) -> np.ndarray:
    """A 0/1 label with a few discs and bars: structure the deformation visibly moves."""
    rng = np.random.default_rng(seed)
    label = np.zeros((size, size), np.uint8)
    for _ in range(6):
        cv2.circle(label, tuple(int(v) for v in rng.integers(10, size - 10, 2)), int(rng.integers(5, 14)), 1, -1)
    label[:, size // 2 : size // 2 + 3] = 1
    return label


def test_elastic_keeps_labels_binary_and_aligned_with_the_image() -> None:
    label = _blobs().astype(np.float32)
    channels = np.stack([label * 255.0, label], axis=-1)  # the image IS the label, scaled
    out = elastic_crop(channels, 10.0, seed=3, orders=(IMAGE_ORDER, LABEL_ORDER))
    moved_image, moved_label = out[..., 0], out[..., 1]
    assert set(np.unique(moved_label)) <= {0.0, 1.0}  # exactly binary
    assert np.mean(moved_label != label) > 0.02  # the field did move things
    agree = np.mean((moved_image > 127.5) == (moved_label > 0.5))
    assert agree > 0.99  # same field for both (cubic vs nearest differ only at a few edge pixels)
    other = elastic_crop(channels, 10.0, seed=4, orders=(IMAGE_ORDER, LABEL_ORDER))
    assert np.mean((other[..., 0] > 127.5) == (moved_label > 0.5)) < agree - 0.01  # another field would not agree


def test_elastic_is_identity_at_strength_zero_and_seeded() -> None:
    label = _blobs().astype(np.float32)
    channels = np.stack([np.random.default_rng(1).random(label.shape, np.float32) * 255, label], axis=-1)
    np.testing.assert_array_equal(elastic_crop(channels, 0.0, seed=3, orders=(3, 0)), channels)
    still = deform(channels, np.zeros((2, *label.shape), np.float32), (IMAGE_ORDER, LABEL_ORDER))
    np.testing.assert_allclose(still[..., 0], channels[..., 0], atol=1e-3)  # the real sampler, zero field
    np.testing.assert_array_equal(still[..., 1], label)
    np.testing.assert_array_equal(
        elastic_crop(channels, 10.0, 7, (3, 0)), elastic_crop(channels, 10.0, 7, (3, 0))
    )  # reproducible from its seed


def test_displacement_field_is_smooth_with_the_requested_spread() -> None:
    fields = np.stack([random_displacement((64, 64), 10.0, np.random.default_rng(k)) for k in range(200)])
    corners = fields[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]  # on the grid points: the drawn N(0, 10) vectors
    assert corners.std() == pytest.approx(10.0, rel=0.1)
    assert np.abs(np.diff(fields, axis=-1)).max() < 3.0  # a coarse 3x3 grid: no pixel-scale jumps


# ------------------------------------------------------------------------------------ gap closing


def _broken_membrane(gap: int = 2, size: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """(probability, true membrane): two cells split by a vertical membrane with a ``gap``-pixel hole."""
    truth = np.zeros((size, size), np.uint8)
    truth[:, 19:21] = 1
    truth[[0, -1], :] = 1
    truth[:, [0, -1]] = 1
    prob = np.where(truth == 1, 0.9, 0.05).astype(np.float32)
    prob[18 : 18 + gap, 19:21] = 0.35  # the model's faint membrane in the gap, below the threshold
    return prob, truth


def test_watershed_splits_cells_joined_by_a_gap_and_leaves_a_clean_map_alone() -> None:
    prob, truth = _broken_membrane()
    assert cell_regions(prob > 0.5).max() == 1  # the gap merges the two cells
    closed = close_membrane_gaps(prob, seed_threshold=0.1, seed_min_area=0)
    assert cell_regions(closed > 0.5).max() == 2
    assert np.sum((closed > 0.5) != (prob > 0.5)) <= 2 * 2  # a line across the gap, nothing else
    # at 0.5 (the sweep's 0.3 would see the faint gap itself)
    assert challenge_scores(closed, truth, (0.5,)).v_rand_error < challenge_scores(prob, truth, (0.5,)).v_rand_error
    np.testing.assert_array_equal(close_membrane_gaps(prob, 0.0, 0), prob)  # off: unchanged

    clean = np.where(truth == 1, 0.9, 0.05).astype(np.float32)
    np.testing.assert_array_equal(close_membrane_gaps(clean, 0.1, 0) > 0.5, clean > 0.5)
    ridge = prob.copy()
    ridge[1:-1, 4] = 0.3  # a faint line inside the left cell, below the threshold, cuts its core in two
    assert cell_regions(close_membrane_gaps(ridge, 0.1, 0) > 0.5).max() == 3  # the failure mode: a false split
    assert cell_regions(close_membrane_gaps(ridge, 0.1, 128) > 0.5).max() == 2  # the 3x38 core is no seed


def test_gap_closing_is_chosen_on_oof_only_when_it_lowers_v_rand_error() -> None:
    prob, truth = _broken_membrane()
    stack, truths = np.stack([prob, prob]), np.stack([truth, truth])
    chosen = decide_isbi_postprocessing(stack, truths, thresholds=(0.5,), seed_thresholds=(0.1,), seed_min_areas=(0,))
    assert chosen.seed_threshold == 0.1 and chosen.threshold == 0.5
    assert postprocessed_v_rand_error(stack, truths, chosen) < challenge_scores(stack, truths, (0.5,)).v_rand_error
    clean = np.where(truths == 1, 0.9, 0.05).astype(np.float32)
    assert decide_isbi_postprocessing(clean, truths).seed_threshold == 0.0  # nothing to gain: left off
    both = apply_membrane_postprocess(stack, MembranePostprocess(0.5, 16, 0.1, 0))
    assert cell_regions(both[0] > 0.5).max() == 2


def test_postprocess_json_round_trip_and_old_files_still_load(tmp_path: Path) -> None:
    settings = MembranePostprocess(0.4, 16, 0.1, 32)
    assert MembranePostprocess.from_json(settings.to_json()) == settings
    assert MembranePostprocess.from_json('{"threshold": 0.4, "min_cell_area": 16}') == MembranePostprocess(0.4, 16)
    with pytest.raises(ValueError, match="seed_threshold"):
        MembranePostprocess(0.4, 0, 0.6, 0)  # seeds must be surely cell: below the threshold
    with pytest.raises(ValueError, match="unknown"):
        MembranePostprocess.from_json('{"threshold": 0.4, "min_cell_area": 16, "closing": 3}')

    task = IsbiTask()
    decision = IsbiDecision(settings, 0.3, 0.2)
    again = task.decision_from_json(json.loads(json.dumps(decision.to_json())), source="postprocessing.json")
    assert again == decision and "watershed" in again.describe()
    assert decision.params()["seed_min_area"] == 32
    old = {"threshold": 0.6, "min_cell_area": 64, "oof_rand_error_raw": 0.3, "oof_rand_error": 0.25}  # before issue 17
    loaded = task.decision_from_json(old, source="old.json")
    # before issue 23 the scores were skimage's adapted Rand error, not V_rand errors: kept as no score
    assert loaded == IsbiDecision(MembranePostprocess(0.6, 64), None, None)
    assert "oof_v_rand_error" in decision.to_json() and "postprocessing_oof_v_rand_error" in decision.metrics()
    with pytest.raises(NervesegError, match=r"old\.json"):
        task.decision_from_json({"threshold": 0.6}, source="old.json")


# ------------------------------------------------------------------------------------ PNGs beside the stack


def test_submission_writes_the_stack_and_one_thresholded_png_per_slice(tmp_path: Path) -> None:
    probs = np.random.default_rng(0).random((3, 32, 48), dtype=np.float32)
    stack, folder = write_submission_stack(probs, tmp_path / "run_x.tif", threshold=0.4, shape=None)
    assert folder == tmp_path / "run_x" and sorted(p.name for p in folder.iterdir()) == ["0.png", "1.png", "2.png"]
    np.testing.assert_array_equal(read_probability_stack(stack, shape=None), probs)
    for k in range(3):
        png = cv2.imread(str(folder / f"{k}.png"), cv2.IMREAD_UNCHANGED)
        assert png.dtype == np.uint8 and png.shape == (32, 48)
        np.testing.assert_array_equal(png == 0, probs[k] > 0.4)  # 0 = membrane, 255 = cell, as the labels
        assert set(np.unique(png)) == {0, 255}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind

    with pytest.raises(NervesegError, match="already exists"):
        write_submission_stack(probs, stack, threshold=0.4, shape=None)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mine.txt").write_text("keep")
    with pytest.raises(NervesegError, match="other already exists"):
        write_submission_stack(probs, tmp_path / "other.tif", threshold=0.4, shape=None)
    assert not (tmp_path / "other.tif").exists()  # checked before anything was written
    assert (tmp_path / "other" / "mine.txt").read_text() == "keep"


# ------------------------------------------------------------------------------------ config


def test_topology_options_are_validated() -> None:
    isbi = dict(task="isbi2012", height=64, width=64, crop_size=32, depth=3)
    config = TrainConfig(**isbi, border_w0=10.0, border_sigma=5.0, elastic_sigma=10.0, epoch_rand_error=True)
    assert config.to_params()["border_w0"] == 10.0
    with pytest.raises(ValueError, match="border_w0"):
        TrainConfig(border_w0=10.0)  # the nerve task has no such stream
    with pytest.raises(ValueError, match="elastic_sigma"):
        TrainConfig(**{**isbi, "crop_size": 0}, model="patch_cnn", window=25, elastic_sigma=10.0)
    with pytest.raises(ValueError, match="border_sigma"):
        TrainConfig(**isbi, border_w0=10.0, border_sigma=0.0)
    with pytest.raises(ValueError, match="epoch_rand_error"):
        TrainConfig(epoch_rand_error=True)


# ------------------------------------------------------------------------------------ the training stream


def _em(n: int = 4, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    from nerveseg.tasks.isbi2012.synthetic import render_stack

    pairs = list(render_stack(np.random.SeedSequence(5), n, size))
    return np.stack([image for image, _ in pairs]), np.stack([(label == 0).astype(np.uint8) for _, label in pairs])


@pytest.mark.parametrize("elastic_sigma", [0.0, 6.0])
def test_weights_travel_with_the_crops_through_flips_rotations_and_deformation(elastic_sigma: float) -> None:
    from nerveseg.tasks.isbi2012.trainer import crop_dataset

    images, membranes = _em()
    weights = 1.0 + 9.0 * membranes  # a weight map that says where the label is
    stream = crop_dataset(images, membranes, 32, batch_size=8, seed=1, weights=weights, elastic_sigma=elastic_sigma)
    x, y, w = next(iter(stream.take(1)))
    x, y, w = x.numpy(), y["mask"].numpy(), w["mask"].numpy()
    assert x.shape == y.shape == w.shape == (8, 32, 32, 1)
    assert set(np.unique(y)) <= {0.0, 1.0}
    np.testing.assert_array_equal(w, 1.0 + 9.0 * y)  # every weight still on its label pixel
    plain = next(iter(crop_dataset(images, membranes, 32, batch_size=8, seed=1).take(1)))
    if not elastic_sigma:  # no weights, no deformation: the same crops as before issue 17
        np.testing.assert_array_equal(plain[0].numpy(), x)
    label_image = (membranes * 255).astype(np.uint8)  # image = label: still on each other after the deformation
    same = crop_dataset(label_image, membranes, 32, batch_size=8, seed=2, elastic_sigma=elastic_sigma)
    x, y = next(iter(same.take(1)))
    assert np.mean((x.numpy() > 0.5) == (y["mask"].numpy() > 0.5)) > 0.97


@pytest.mark.slow
def test_fold_trains_with_border_weights_elastic_and_logs_v_rand_error_per_epoch(tmp_path: Path) -> None:
    import keras

    from nerveseg.names import VAL_V_RAND_ERROR
    from nerveseg.tasks.isbi2012.data import IsbiData, block_folds
    from nerveseg.tasks.isbi2012.trainer import train_isbi_fold

    images, membranes = _em(6)
    data = IsbiData(images, membranes, images[:1].copy(), "png", "test")
    config = TrainConfig(
        task="isbi2012", height=64, width=64, depth=3, base_filters=4, crop_size=32, batch_size=4, epochs=2,
        steps_per_epoch=2, folds=2, loss="bce_dice", border_w0=10.0, elastic_sigma=6.0, epoch_rand_error=True,
    )  # fmt: skip
    seen: list[float] = []

    class Listen(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            seen.append(logs[VAL_V_RAND_ERROR])

    folds = block_folds(6, 2)
    result = train_isbi_fold(config, data, folds, 0, tmp_path, callbacks=[Listen()], verbose=0)
    assert len(seen) == config.epochs and all(0.0 <= value <= 1.0 for value in seen)
    assert seen[-1] == pytest.approx(result.val_score, abs=1e-6)  # the last epoch's is the fold's score
    assert np.isfinite(result.history["loss"]).all()


def test_pixel_loss_equals_the_image_loss_unweighted_and_keras_weights_each_pixel() -> None:
    import keras

    from nerveseg.model.losses import mask_loss, pixel_mask_loss

    rng = np.random.default_rng(0)
    y_true = (rng.random((3, 8, 8, 1)) > 0.7).astype(np.float32)
    y_pred = rng.uniform(0.05, 0.95, (3, 8, 8, 1)).astype(np.float32)
    for name in ("dice", "bce", "bce_dice"):
        image_loss = float(np.mean(keras.ops.convert_to_numpy(mask_loss(name, 1.0)(y_true, y_pred))))
        per_pixel = keras.ops.convert_to_numpy(pixel_mask_loss(name, 1.0)(y_true, y_pred))
        assert per_pixel.shape == (3, 8, 8) and float(per_pixel.mean()) == pytest.approx(image_loss, rel=1e-5)
    inputs = keras.Input((8, 8, 1))  # a model that outputs its input: fit's loss is the loss of y_pred
    model = keras.Model(inputs, {"mask": keras.layers.Identity(name="mask")(inputs)})
    model.compile(loss={"mask": pixel_mask_loss("bce", 1.0)})
    weights = rng.uniform(0.5, 3.0, (3, 8, 8, 1)).astype(np.float32)
    weighted = model.evaluate(y_pred, {"mask": y_true}, sample_weight={"mask": weights}, batch_size=3, verbose=0)
    per_pixel = keras.ops.convert_to_numpy(pixel_mask_loss("bce", 1.0)(y_true, y_pred))
    assert weighted == pytest.approx(float(np.mean(per_pixel * weights[..., 0])), rel=1e-5)
