"""Losses per image (not per batch), the epoch-level Dice metric, and compiling."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from nerveseg.evaluate.metrics import dice_per_image
from nerveseg.model.losses import (
    DiceScore,
    bce_dice_loss,
    bce_loss,
    compile_model,
    mask_loss,
    soft_dice_loss,
    soft_dice_per_image,
)
from nerveseg.model.unet import build_unet


def np_(x) -> np.ndarray:
    return keras.ops.convert_to_numpy(x)


def batch_of_two() -> tuple[np.ndarray, np.ndarray]:
    """Image 0: large nerve found exactly. Image 1: empty truth, a small false positive."""
    truth = np.zeros((2, 8, 8, 1), np.float32)
    pred = np.zeros((2, 8, 8, 1), np.float32)
    truth[0, :6, :6] = 1
    pred[0, :6, :6] = 1
    pred[1, :2, :2] = 1
    return truth, pred


def test_soft_dice_is_per_image_not_per_batch() -> None:
    truth, pred = batch_of_two()
    per_image = np_(soft_dice_per_image(truth, pred, smooth=1.0))
    np.testing.assert_allclose(per_image, [(72 + 1) / (72 + 1), 1 / (4 + 1)], rtol=1e-6)
    loss = np_(soft_dice_loss(1.0)(truth, pred))
    assert loss.shape == (2,)
    np.testing.assert_allclose(loss, 1 - per_image, rtol=1e-6)
    batch_dice = (2 * 36 + 1) / (36 + 40 + 1)  # what a whole-batch Dice would say: ~0.95
    assert abs(loss.mean() - (1 - batch_dice)) > 0.3


def test_bce_dice_adds_per_image_terms() -> None:
    truth, pred = batch_of_two()
    pred = np.clip(pred, 0.1, 0.9)
    bce = np_(bce_loss(truth, pred))
    manual = -(truth * np.log(pred) + (1 - truth) * np.log(1 - pred)).reshape(2, -1).mean(axis=1)
    np.testing.assert_allclose(bce, manual, rtol=1e-4)
    np.testing.assert_allclose(np_(bce_dice_loss(1.0)(truth, pred)), bce + np_(soft_dice_loss(1.0)(truth, pred)))
    with pytest.raises(ValueError, match="loss"):
        mask_loss("focal", 1.0)


def test_dice_score_is_the_mean_over_all_images_of_all_batches() -> None:
    rng = np.random.default_rng(0)
    truths = (rng.random((8, 6, 6, 1)) > 0.7).astype(np.float32)
    probs = rng.random((8, 6, 6, 1)).astype(np.float32)
    truths[0] = 0
    probs[0] = 0.2  # empty vs empty: 1
    truths[1] = 0  # empty truth, non-empty prediction: 0
    metric = DiceScore()
    metric.update_state(truths[:3], probs[:3])  # batches of different sizes: a mean of batch means would differ
    metric.update_state(truths[3:], probs[3:])
    expected = dice_per_image(truths[..., 0] > 0.5, probs[..., 0] > 0.5).mean()
    assert float(np_(metric.result())) == pytest.approx(expected, rel=1e-6)
    batch_means = np.mean(
        [dice_per_image(truths[s, ..., 0], probs[s, ..., 0] > 0.5).mean() for s in (slice(0, 3), slice(3, 8))]
    )
    assert abs(batch_means - expected) > 1e-3
    metric.reset_state()
    assert float(np_(metric.result())) == 0.0


@pytest.mark.slow
def test_compile_model_losses_and_schedules(tiny_config) -> None:
    model = build_unet(32, 40, depth=2, base_filters=4, presence_head=True)
    compile_model(model, tiny_config.replace(lr_schedule="cosine"), steps_per_epoch=5)
    schedule = model.optimizer._learning_rate
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    assert float(np_(schedule(0))) == pytest.approx(tiny_config.learning_rate)
    assert float(np_(schedule(tiny_config.epochs * 5))) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        compile_model(model, tiny_config.replace(lr_schedule="cosine"))
    compile_model(model, tiny_config)
    assert float(np_(model.optimizer.learning_rate)) == pytest.approx(tiny_config.learning_rate)
    x = np.zeros((2, 32, 40, 1), np.float32)
    logs = model.train_on_batch(x, {"mask": x, "presence": np.zeros((2, 1), np.float32)}, return_dict=True)
    assert {"loss", "mask_dice"} <= set(logs)  # training.EpochLogs renames mask_dice -> dice
