"""Reproducibility and the checkpoint rules of ``train_fold``, on a tiny in-memory data set."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import fake_data
from nerveseg.config import TrainConfig
from nerveseg.model.losses import learning_rate_for
from nerveseg.model.unet import build_model_from_config
from nerveseg.tasks.nerve.fold import train_fold
from nerveseg.train.checkpointing import inner_split

pytestmark = pytest.mark.slow  # every test here trains a model


@pytest.fixture(scope="module")
def data():
    from test_training import make_data

    return make_data(subjects=8, per_subject=5)


def folds_of(data, n_folds: int = 2) -> np.ndarray:
    return (data.subjects - 1) % n_folds


def weights_of(path) -> list[np.ndarray]:
    model = build_model_from_config(CONFIG)
    model.load_weights(path)
    return model.get_weights()


CONFIG = TrainConfig(
    name="tiny", height=32, width=40, depth=2, base_filters=4, learning_rate=1e-3, batch_size=8, epochs=1, folds=2,
    seed=3, augment_strength=1.0, augment_flip=True, presence_head=True, batch_norm=True,
    tta=False,  # out-of-fold = the plain view Keras validates on, so val_dice and the OOF Dice can be compared
)  # fmt: skip


def test_two_deterministic_runs_give_identical_weights_and_scores(data, tmp_path) -> None:
    first = train_fold(CONFIG, data, folds_of(data), 0, tmp_path / "a", verbose=0)
    second = train_fold(CONFIG, data, folds_of(data), 0, tmp_path / "b", verbose=0)
    a, b = weights_of(first.weights_path), weights_of(second.weights_path)
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert first.val_score == second.val_score
    assert first.history == second.history
    np.testing.assert_array_equal(first.oof_probs, second.oof_probs)
    # a different seed must change the weights, or the test above could not fail
    third = train_fold(CONFIG.replace(seed=4), data, folds_of(data), 0, tmp_path / "c", verbose=0)
    assert not all(np.array_equal(x, y) for x, y in zip(a, weights_of(third.weights_path), strict=True))


def test_last_rule_keeps_the_last_epoch(data, tmp_path) -> None:
    config = CONFIG.replace(epochs=3, checkpoint="last", lr_schedule="cosine", warmup_epochs=1)
    result = train_fold(config, data, folds_of(data), 1, tmp_path, verbose=0)
    assert (result.checkpoint, result.kept_epoch) == ("last", 3)
    assert result.history["learning_rate"][0] == 0.0  # the warm-up starts from 0
    assert result.history["learning_rate"][1] == pytest.approx(config.learning_rate)
    # the kept weights are the model's at the end: the scored fold's Dice at model size is the last val_dice
    assert result.history["val_dice"][-1] == pytest.approx(float(_model_size_dice(data, result).mean()), abs=1e-6)
    assert not list(tmp_path.glob("*partial*"))


def test_ema_weights_are_the_ones_kept(data, tmp_path) -> None:
    """With use_ema, the saved weights differ from a run without it (Keras writes the average in at the end)."""
    config = CONFIG.replace(epochs=2, checkpoint="last", use_ema=True, ema_momentum=0.9)
    with_ema = train_fold(config, data, folds_of(data), 0, tmp_path / "ema", verbose=0)
    without = train_fold(config.replace(use_ema=False), data, folds_of(data), 0, tmp_path / "raw", verbose=0)
    pairs = zip(weights_of(with_ema.weights_path), weights_of(without.weights_path), strict=True)
    assert not all(np.array_equal(x, y) for x, y in pairs)
    # the last epoch's val_dice was measured with the EMA weights, which are the ones scored at the end
    assert with_ema.history["val_dice"][-1] == pytest.approx(float(_model_size_dice(data, with_ema).mean()), abs=1e-6)


def _model_size_dice(data, result) -> np.ndarray:
    from nerveseg.evaluate.metrics import dice_per_image

    return dice_per_image(data.masks[result.val_index], result.oof_probs > 0.5)


def test_inner_rule_never_validates_on_the_scored_fold(data, tmp_path) -> None:
    config = CONFIG.replace(epochs=3, checkpoint="inner", patience=1, inner_val_fraction=0.5)
    folds = folds_of(data)
    result = train_fold(config, data, folds, 0, tmp_path, verbose=0)
    assert result.checkpoint == "inner" and 1 <= result.kept_epoch <= 3
    assert result.history["val_dice"][result.kept_epoch - 1] == max(result.history["val_dice"])
    # the inner split holds out whole training subjects, never a scored one
    fit, inner = inner_split(data, np.flatnonzero(folds != 0), 0.5, seed=3)
    assert set(data.subjects[fit]).isdisjoint(data.subjects[inner])
    assert set(data.subjects[inner]) <= set(data.subjects[folds != 0])
    assert len(fit) + len(inner) == np.count_nonzero(folds != 0)


def test_inner_split_needs_enough_subjects() -> None:
    data = fake_data(np.repeat([1, 2, 3], 2), np.array([True, False] * 3))
    with pytest.raises(ValueError, match="inner_val_fraction"):
        inner_split(data, np.arange(len(data)), 0.2, seed=0)


def test_warmup_then_constant_schedule() -> None:
    config = CONFIG.replace(epochs=4, warmup_epochs=2, lr_schedule="constant")
    schedule = learning_rate_for(config, steps_per_epoch=5)
    rates = [float(schedule(step)) for step in range(20)]
    assert rates[0] == 0.0 and rates[5] == pytest.approx(config.learning_rate / 2)
    assert rates[10:] == pytest.approx([config.learning_rate] * 10)
    assert learning_rate_for(config.replace(warmup_epochs=0), 5) == config.learning_rate


def test_bad_warmup_is_refused() -> None:
    with pytest.raises(ValueError, match="warmup_epochs"):
        CONFIG.replace(epochs=2, warmup_epochs=2)
    with pytest.raises(ValueError, match="plateau"):
        CONFIG.replace(epochs=3, warmup_epochs=1, lr_schedule="plateau")
    with pytest.raises(ValueError, match="checkpoint"):
        CONFIG.replace(checkpoint="best")
