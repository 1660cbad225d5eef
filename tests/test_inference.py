"""Ensembling is the plain mean over fold models and over identity + horizontal flip."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from nerveseg.inference.ensemble import load_fold_models, predict_ensemble


def _tiny_model(seed: int, presence: bool = False) -> keras.Model:
    """A 3x3 sigmoid convolution with fixed, asymmetric weights (so flipping changes its output)."""
    inputs = keras.Input((8, 10, 1))
    conv = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid", name="mask")
    outputs = {"mask": conv(inputs)}
    if presence:
        pooled = keras.layers.GlobalAveragePooling2D()(inputs)
        outputs["presence"] = keras.layers.Dense(1, activation="sigmoid", name="presence")(pooled)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def _manual(models: list[keras.Model], images: np.ndarray, tta: bool) -> tuple[np.ndarray, np.ndarray | None]:
    x = images.astype(np.float32)[..., None] / 255.0
    masks, presences = [], []
    for model in models:
        out = model(x, training=False)
        masks.append(np.asarray(out["mask"])[..., 0])
        presences.append(np.asarray(out["presence"])[:, 0] if "presence" in out else None)
        if tta:
            flipped = model(x[:, :, ::-1].copy(), training=False)
            masks.append(np.asarray(flipped["mask"])[:, :, ::-1, 0])
            presences.append(np.asarray(flipped["presence"])[:, 0] if "presence" in flipped else None)
    presence = None if any(p is None for p in presences) else np.mean(presences, axis=0)
    return np.mean(masks, axis=0), presence


@pytest.mark.parametrize("tta", [True, False])
def test_mean_over_models_and_flips(tta: bool) -> None:
    images = np.random.default_rng(0).integers(0, 256, (7, 8, 10), dtype=np.uint8)
    models = [_tiny_model(1, presence=True), _tiny_model(2, presence=True)]
    probs, presence = predict_ensemble(models, images, tta=tta, batch_size=3, progress=False)
    expected, expected_presence = _manual(models, images, tta)
    assert probs.shape == (7, 8, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    np.testing.assert_allclose(presence, expected_presence, atol=1e-6)
    single, _ = predict_ensemble(models[:1], images, tta=tta, progress=False)
    assert not np.allclose(single, probs)  # the second model really counts


def test_flip_is_undone_and_presence_optional() -> None:
    images = np.random.default_rng(1).integers(0, 256, (4, 8, 10), dtype=np.uint8)
    model = _tiny_model(3)
    with_tta, presence = predict_ensemble([model], images, progress=False)
    plain, _ = predict_ensemble([model], images, tta=False, progress=False)
    flipped, _ = predict_ensemble([model], images[:, :, ::-1].copy(), tta=False, progress=False)
    np.testing.assert_allclose(with_tta, (plain + flipped[:, :, ::-1]) / 2, atol=1e-6)
    assert presence is None
    # a model without a presence head in the ensemble -> no presence at all
    _, mixed = predict_ensemble([model, _tiny_model(4, presence=True)], images, progress=False)
    assert mixed is None


def test_input_checks() -> None:
    model = _tiny_model(1)
    with pytest.raises(ValueError, match="uint8"):
        predict_ensemble([model], np.zeros((2, 8, 10), np.int16), progress=False)
    with pytest.raises(ValueError, match="take"):
        predict_ensemble([model], np.zeros((2, 16, 20), np.uint8), progress=False)
    with pytest.raises(ValueError, match="at least one"):
        predict_ensemble([], np.zeros((2, 8, 10), np.uint8), progress=False)


def test_load_fold_models_round_trip(tmp_path: Path, tiny_config) -> None:
    from nerveseg.model.unet import build_model_from_config, set_standardization

    model = build_model_from_config(tiny_config)
    set_standardization(model, 0.3, 0.2)
    path = tmp_path / "fold_0.weights.h5"
    model.save_weights(path)
    images = np.random.default_rng(2).integers(0, 256, (3, tiny_config.height, tiny_config.width), dtype=np.uint8)
    (loaded,) = load_fold_models(tiny_config, [path])
    np.testing.assert_allclose(
        predict_ensemble([loaded], images, progress=False)[0],
        predict_ensemble([model], images, progress=False)[0],
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="does not exist"):
        load_fold_models(tiny_config, [tmp_path / "missing.weights.h5"])
    with pytest.raises(ValueError, match="does not fit"):
        load_fold_models(tiny_config.replace(base_filters=8), [path])
