"""ISBI 2012 membrane prediction: whole slices through the fold models, with flip/rotation test-time views.

The config's model family decides the network: a U-Net, fully convolutional, is rebuilt at the slice size
with the trained weights (they do not depend on the input size); the patch classifier is applied densely
by its exact twin (``model.patch_cnn.dense_predict``). Training (``train.isbi_fold``) predicts its held-out
slices through the same functions, so out-of-fold and submission predictions are made alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from nerveseg.config import TrainConfig
from nerveseg.errors import NervesegError
from nerveseg.inference.ensemble import predict_probs
from nerveseg.model.patch_cnn import build_patch_cnn, dense_predict, dense_twin
from nerveseg.model.unet import build_unet, unet_options
from nerveseg.model.weights import load_checked_weights


def build_isbi_model(config: TrainConfig, height: int, width: int) -> keras.Model:
    """The config's model family: a U-Net on ``(height, width)`` inputs, or the patch classifier."""
    if config.model == "patch_cnn":
        return build_patch_cnn(config.window, (config.patch_filters,) * 3, dense_units=config.dense_units)
    return build_unet(height, width, **unet_options(config))


def _dihedral(tta: bool, square: bool) -> list[tuple[int, bool]]:
    """(quarter turns, horizontal flip) pairs: all 8 for square slices, the 4 flips otherwise."""
    if not tta:
        return [(0, False)]
    return (
        [(k, flip) for k in range(4) for flip in (False, True)]
        if square
        else [(0, False), (0, True), (2, False), (2, True)]
    )


def _predict_plain(config: TrainConfig, model: keras.Model, images: np.ndarray) -> np.ndarray:
    """One model, no TTA: (n, h, w) float32 membrane probabilities of (n, h, w) images in [0, 1]."""
    if config.model == "patch_cnn":
        dense = dense_twin(model)
        return np.stack([dense_predict(dense, image) for image in images]).astype(np.float32)
    height, width = images.shape[1:]
    if model.input_shape[1:3] != (height, width):
        twin = build_isbi_model(config, height, width)
        twin.set_weights(model.get_weights())
        model = twin
    return predict_probs(model, images, batch_size=2)[0]


def predict_slices(config: TrainConfig, models: Sequence[keras.Model], images: np.ndarray, *, tta: bool) -> np.ndarray:
    """Mean membrane probability over ``models`` and (with ``tta``) the flip/rotation variants."""
    images = np.asarray(images)
    if images.ndim != 3:
        raise NervesegError(f"ISBI prediction takes (n, h, w) slices, got shape {images.shape}")
    scaled = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
    total = np.zeros(images.shape, dtype=np.float64)
    variants = _dihedral(tta, images.shape[1] == images.shape[2])
    for model in models:
        for turns, flip in variants:
            view = np.rot90(scaled, turns, axes=(1, 2))
            view = view[:, :, ::-1] if flip else view
            probs = _predict_plain(config, model, np.ascontiguousarray(view))
            probs = probs[:, :, ::-1] if flip else probs
            total += np.rot90(probs, -turns, axes=(1, 2))
    return (total / (len(models) * len(variants))).astype(np.float32)


def predict_isbi_ensemble(
    config: TrainConfig, weights_paths: Sequence[Path | str], images: np.ndarray, *, tta: bool = True
) -> np.ndarray:
    """(n, h, w) float32: membrane probabilities averaged over the fold models and 8 (or 4) TTA views."""
    if not weights_paths:
        raise NervesegError("predict_isbi_ensemble needs at least one fold weights file; train the run (cv_train.py)")
    height, width = np.asarray(images).shape[1:]
    built_from = f"config {config.name!r} ({architecture(config)})"
    models = [load_checked_weights(build_isbi_model(config, height, width), path, built_from) for path in weights_paths]
    return predict_slices(config, models, images, tta=tta)


def architecture(config: TrainConfig) -> str:
    """The config fields that decide which weights file fits the ISBI model, for a mismatch's message."""
    if config.model == "patch_cnn":
        sizes = f"window={config.window}, patch_filters={config.patch_filters}, dense_units={config.dense_units}"
        return f"model=patch_cnn, {sizes}"
    return f"model=unet, depth={config.depth}, base_filters={config.base_filters}, batch_norm={config.batch_norm}"
