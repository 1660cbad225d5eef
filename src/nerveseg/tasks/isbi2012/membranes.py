"""ISBI 2012 membrane prediction: whole slices through the fold models, with flip/rotation test-time views.

The config's model family decides the network: a U-Net, fully convolutional, is rebuilt at the slice size
with the trained weights (they do not depend on the input size); the patch classifier is applied densely
by its exact twin (``model.patch_cnn.dense_predict``). Training (``tasks.isbi2012.trainer``) predicts its held-out
slices through the same functions, so out-of-fold and submission predictions are made alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from nerveseg.config import TrainConfig
from nerveseg.errors import NervesegError
from nerveseg.model.families import family_of
from nerveseg.model.weights import load_checked_weights


def build_isbi_model(config: TrainConfig, height: int, width: int) -> keras.Model:
    """The config's model family's network for ``(height, width)`` inputs (the patch classifier: its window)."""
    return family_of(config).build(config, height, width)


def _dihedral(tta: bool, square: bool) -> list[tuple[int, bool]]:
    """(quarter turns, horizontal flip) pairs: all 8 for square slices, the 4 flips otherwise."""
    if not tta:
        return [(0, False)]
    return (
        [(k, flip) for k in range(4) for flip in (False, True)]
        if square
        else [(0, False), (0, True), (2, False), (2, True)]
    )


def predict_slices(config: TrainConfig, models: Sequence[keras.Model], images: np.ndarray, *, tta: bool) -> np.ndarray:
    """Mean membrane probability over ``models`` and (with ``tta``) the flip/rotation variants."""
    images = np.asarray(images)
    if images.ndim != 3:
        raise NervesegError(f"ISBI prediction takes (n, h, w) slices, got shape {images.shape}")
    scaled = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
    family = family_of(config)
    if family.predict_slices is None:
        raise NervesegError(f"ISBI prediction needs a config with task='isbi2012', got task={config.task!r}")
    total = np.zeros(images.shape, dtype=np.float64)
    variants = _dihedral(tta, images.shape[1] == images.shape[2])
    for model in models:
        for turns, flip in variants:
            view = np.rot90(scaled, turns, axes=(1, 2))
            view = view[:, :, ::-1] if flip else view
            probs = family.predict_slices(config, model, np.ascontiguousarray(view))
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
    built_from = f"config {config.name!r} ({family_of(config).architecture(config)})"
    models = [load_checked_weights(build_isbi_model(config, height, width), path, built_from) for path in weights_paths]
    return predict_slices(config, models, images, tta=tta)
