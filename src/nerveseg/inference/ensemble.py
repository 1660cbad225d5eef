"""Ensemble inference: the plain mean of probabilities over fold models and mirrored inputs.

nnU-Net ensembles this way (no voting, no weights): every fold model sees each test image as it
is and flipped left-right (the nerve's side is not informative enough to break the symmetry), and
the flipped prediction is flipped back before averaging. The models' first layer standardises
with the training fold's statistics, so the input is just the uint8 image scaled to [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np

from nerveseg.config import TrainConfig
from nerveseg.errors import NervesegError
from nerveseg.logs import progress_bar


def load_fold_models(config: TrainConfig, weights_paths: Sequence[Path | str]) -> list[keras.Model]:
    """One model per ``.weights.h5`` file, built from ``config`` (the architecture must match)."""
    from nerveseg.model.families import family_of
    from nerveseg.model.weights import load_checked_weights

    if not weights_paths:
        raise NervesegError("no fold weights given; a CV run stores weights/fold_<k>.weights.h5 on each fold's run")
    family = family_of(config)
    built_from = f"config {config.name!r} ({family.architecture(config)})"
    return [
        load_checked_weights(family.build(config, config.height, config.width), path, built_from)
        for path in weights_paths
    ]


def _hflip(batch: np.ndarray) -> np.ndarray:
    """A batch ``(b, h, w[, c])`` mirrored left-right: its own inverse, so it also maps a prediction back."""
    return batch[:, :, ::-1]


# a test-time view: its name (as the CV table and the run record give it), and the transform of a batch, which is
# its own inverse
View = tuple[str, Callable[[np.ndarray], np.ndarray]]
VIEWS: tuple[View, ...] = (("identity", lambda batch: batch), ("hflip", _hflip))  # the nerve's


def views(tta: bool) -> tuple[View, ...]:
    """Every view with ``tta``, else the image as it is."""
    return VIEWS if tta else VIEWS[:1]


def view_names(tta: bool) -> tuple[str, ...]:
    """The names of ``views(tta)``."""
    return tuple(name for name, _ in views(tta))


def _split_outputs(outputs: object) -> tuple[np.ndarray, np.ndarray | None]:
    """(mask probs (b, h, w), presence (b,) or None) from a model's dict or single-array output."""
    if isinstance(outputs, dict):
        mask = np.asarray(outputs["mask"])
        presence = outputs.get("presence")
        presence = None if presence is None else np.asarray(presence, dtype=np.float32).reshape(-1)
    else:
        mask, presence = np.asarray(outputs), None
    if mask.ndim == 4:
        mask = mask[..., 0]
    return mask.astype(np.float32, copy=False), presence


def predict_ensemble(
    models: Sequence[keras.Model],
    images_uint8: np.ndarray,
    *,
    tta: bool = True,
    batch_size: int = 256,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Mean probabilities (N, h, w) float32 and mean presence (N,) over ``models`` x {identity, hflip}.

    ``images_uint8`` are (N, h, w) at the models' input size: uint8 (scaled by 1/255 here) or floats
    already in [0, 1]. Presence is returned only when every model has a presence head (None otherwise).
    Runs batch by batch so memory stays bounded whatever N is; a progress bar advances per batch.
    """
    if not models:
        raise NervesegError("predict_ensemble needs at least one model")
    images_uint8 = np.asarray(images_uint8)
    if images_uint8.ndim == 4 and images_uint8.shape[-1] == 1:
        images_uint8 = images_uint8[..., 0]
    if images_uint8.ndim != 3:
        raise NervesegError(f"predict_ensemble takes (N, h, w) images, got shape {images_uint8.shape}")
    if images_uint8.dtype != np.uint8 and images_uint8.dtype.kind != "f":
        raise NervesegError(
            f"predict_ensemble takes uint8 images (scaled to [0, 1] here) or floats in [0, 1], got {images_uint8.dtype}"
        )
    scale = 1.0 / 255.0 if images_uint8.dtype == np.uint8 else 1.0
    expected = tuple(models[0].input_shape[1:3])
    if expected != images_uint8.shape[1:]:
        raise NervesegError(
            f"images are {images_uint8.shape[1:]} but the models take {expected}; "
            "prepare the test set at the run's height and width"
        )
    if batch_size < 1:
        raise NervesegError(f"batch_size={batch_size} must be >= 1")

    n = len(images_uint8)
    probs = np.zeros(images_uint8.shape, dtype=np.float32)
    presence_sum = np.zeros(n, dtype=np.float64)
    all_presence = True
    transforms = [transform for _, transform in views(tta)]
    passes = len(models) * len(transforms)
    with progress_bar(total=n, desc="predict", unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            x = (images_uint8[start:stop].astype(np.float32) * np.float32(scale))[..., None]
            inputs = [(np.ascontiguousarray(transform(x)), transform) for transform in transforms]
            for model in models:
                for view, transform in inputs:
                    # a plain call, not predict_on_batch: Keras traces a predict function per model and batch
                    # shape, and five fold models x a shorter last batch make TensorFlow warn about retracing
                    mask, presence = _split_outputs(model(view, training=False))
                    probs[start:stop] += transform(mask)
                    if presence is None:
                        all_presence = False
                    else:
                        presence_sum[start:stop] += presence
            bar.update(stop - start)
    probs /= passes
    return probs, (presence_sum / passes).astype(np.float32) if all_presence else None


def predict_probs(
    model: keras.Model, images: np.ndarray, batch_size: int = 256, *, progress: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """One model, no mirroring: mask probabilities (n, h, w) float32 and presence (n,) or None.

    The per-epoch curves' view; out-of-fold predictions take ``predict_ensemble`` with the submission's views.
    """
    return predict_ensemble([model], images, tta=False, batch_size=batch_size, progress=progress)
