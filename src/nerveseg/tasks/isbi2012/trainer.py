"""The ISBI 2012 EM membrane task: training one block fold.

Both model families train on a fixed schedule (``epochs`` x ``steps_per_epoch`` batches) and keep
the LAST epoch: with 25 slices the held-out block is the only test there is, so it is never used
to pick an epoch. Validation numbers are logged only.

- ``unet``: trained on random ``crop_size`` crops with flips and 90-degree rotations (and, as options,
  elastic deformation and the U-Net paper's border weight map as per-pixel loss weights, which travel
  with the crops), then applied to whole slices by a twin built at the slice size with the same
  weights (the U-Net is fully convolutional; its weights do not depend on the input size).
- ``patch_cnn``: trained on centre-pixel windows (``tasks.isbi2012.windows``), applied to whole slices by its
  exact dense twin (``model.patch_cnn.dense_predict``).

``ISBI_FOLD`` gives the one fold runner (``train.fold.run_fold``) these streams, the slices' rows, the
whole-slice OOF prediction and the V_rand error as the fold's score. Whole-slice prediction lives in
``tasks.isbi2012.membranes``, the folds' scores in ``tasks.isbi2012.summary`` and post-processing in
``tasks.isbi2012.postprocess``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from nerveseg.config import TrainConfig
from nerveseg.errors import NervesegError
from nerveseg.model.families import family_of
from nerveseg.names import VAL_V_RAND_ERROR
from nerveseg.tasks.isbi2012 import elastic
from nerveseg.tasks.isbi2012.border_weights import training_weight_maps
from nerveseg.tasks.isbi2012.challenge_metrics import challenge_scores
from nerveseg.tasks.isbi2012.data import IsbiData
from nerveseg.tasks.isbi2012.membranes import predict_slices
from nerveseg.tasks.isbi2012.windows import window_dataset
from nerveseg.train.fold import FoldHooks, FoldInputs, FoldResult, Rows, run_fold

PATCH_STEPS_DEFAULT = 500  # patch CNN batches per epoch when steps_per_epoch is 0 (a pixel pass is ~10^4)
PATCH_VAL_STEPS = 20  # held-out window batches per validation (logged only)
_RANGE = 1 << 30


def training_steps(config: TrainConfig, n_train: int, height: int, width: int) -> int:
    """Batches per epoch: ``steps_per_epoch``, or by default one pass over the training pixels (U-Net
    crops) or ``PATCH_STEPS_DEFAULT`` (patch CNN, whose pixel pass would be millions of windows)."""
    if config.steps_per_epoch:
        return config.steps_per_epoch
    family = family_of(config)
    if family.training_inputs == "windows":
        return PATCH_STEPS_DEFAULT
    side = family.training_side(config, height, width)
    return max(1, math.ceil(n_train * height * width / (side * side) / config.batch_size))


def elastic_margin(elastic_sigma: float) -> int:
    """Pixels of real context cut around a crop before it is deformed (displacements rarely exceed 3 sigma)."""
    return math.ceil(3 * elastic_sigma)


def crop_dataset(
    images: np.ndarray,
    membranes: np.ndarray,
    crop: int,
    *,
    batch_size: int,
    seed: int,
    weights: np.ndarray | None = None,
    elastic_sigma: float = 0.0,
) -> tf.data.Dataset:
    """An endless, seeded stream of ``(crops (b, crop, crop, 1) in [0, 1], {"mask": targets})``, and
    ``{"mask": weights}`` (Keras sample weights, (b, crop, crop, 1)) as a third element when ``weights``
    (n, h, w) are given.

    Each crop comes from a random slice at a random offset; with ``elastic_sigma > 0`` it is cut with a
    margin of real context, elastically deformed (``tasks.isbi2012.elastic``: one field for image, label and
    weights) and cut to size; then it gets one of the 8 flips/rotations. Image, label and weights move
    together in every step.
    """
    n, height, width = images.shape
    planes = [images.astype(np.float32) / 255.0, membranes.astype(np.float32)]
    if weights is not None:
        planes.append(np.asarray(weights, np.float32))
    orders = (elastic.IMAGE_ORDER, elastic.LABEL_ORDER, elastic.WEIGHT_ORDER)[: len(planes)]
    margin = elastic_margin(elastic_sigma)
    stack = np.stack(planes, axis=-1)
    if margin:  # reflect the slices' edges so that every crop offset has its margin
        stack = np.pad(stack, ((0, 0), (margin, margin), (margin, margin), (0, 0)), mode="reflect")
    stack = tf.constant(stack)
    side, channels = crop + 2 * margin, len(planes)

    def deformed(patch: np.ndarray, field_seed: np.ndarray) -> np.ndarray:
        out = elastic.elastic_crop(patch, elastic_sigma, int(field_seed), orders)
        return out[margin : margin + crop, margin : margin + crop]

    def cut(draws: tf.Tensor) -> tuple[tf.Tensor, ...]:
        draws = tf.math.floormod(draws, _RANGE)
        index, top, left = draws[0] % n, draws[1] % (height - crop + 1), draws[2] % (width - crop + 1)
        patch = stack[index, top : top + side, left : left + side]
        if margin:
            patch = tf.numpy_function(deformed, [patch, draws[4]], tf.float32, stateful=False)
        patch = tf.image.rot90(tf.ensure_shape(patch, (crop, crop, channels)), k=tf.cast(draws[3] % 4, tf.int32))
        patch = tf.cond((draws[3] // 4) % 2 == 1, lambda: tf.reverse(patch, [1]), lambda: patch)
        patch = tf.ensure_shape(patch, (crop, crop, channels))
        targets = {"mask": patch[..., 1:2]}
        return (patch[..., :1], targets, {"mask": patch[..., 2:]}) if weights is not None else (patch[..., :1], targets)

    draws = tf.data.Dataset.random(seed=seed).batch(5 if margin else 4, drop_remainder=True)
    return (
        draws.map(cut, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .batch(batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def tile_dataset(images: np.ndarray, membranes: np.ndarray, crop: int, batch_size: int) -> tf.data.Dataset:
    """The held-out slices cut into non-overlapping ``crop`` tiles (the training model's input size)."""
    rows, cols = images.shape[1] // crop, images.shape[2] // crop

    def tiles(array: np.ndarray) -> np.ndarray:
        cut = array[:, : rows * crop, : cols * crop].reshape(len(array), rows, crop, cols, crop)
        return cut.transpose(0, 1, 3, 2, 4).reshape(-1, crop, crop, 1).astype(np.float32)

    x, y = tiles(images) / 255.0, tiles(membranes)
    return tf.data.Dataset.from_tensor_slices((x, {"mask": y})).batch(batch_size)


Streams = tuple[tf.data.Dataset, tf.data.Dataset, int, int | None]  # train, validation, steps, validation steps


def _window_streams(config: TrainConfig, data: IsbiData, train: np.ndarray, val: np.ndarray, seed: int) -> Streams:
    """The patch CNN: centre-pixel windows (``tasks.isbi2012.windows``), validated on 20 window batches."""
    windows = dict(window=config.window, batch_size=config.batch_size)
    train_ds = window_dataset(data.images[train], data.membranes[train], **windows, seed=seed)
    val_ds = window_dataset(data.images[val], data.membranes[val], **windows, balanced=False, augment=False, seed=0)
    return train_ds, val_ds, training_steps(config, len(train), *data.images.shape[1:]), PATCH_VAL_STEPS


def _crop_streams(config: TrainConfig, data: IsbiData, train: np.ndarray, val: np.ndarray, seed: int) -> Streams:
    """The U-Net: random crops (border weights, elastic deformation as options), validated on the held-out
    slices' non-overlapping tiles."""
    height, width = data.images.shape[1:]
    crop = family_of(config).training_side(config, height, width)
    weights = None
    if config.border_w0 > 0:
        weights = training_weight_maps(data.membranes[train], w0=config.border_w0, sigma=config.border_sigma)
    stream = dict(batch_size=config.batch_size, seed=seed, weights=weights, elastic_sigma=config.elastic_sigma)
    train_ds = crop_dataset(data.images[train], data.membranes[train], crop, **stream)
    val_ds = tile_dataset(data.images[val], data.membranes[val], crop, config.batch_size)
    return train_ds, val_ds, training_steps(config, len(train), height, width), None


# the training stream of each kind of training input a family declares (model.families.ModelFamily)
_STREAMS = {"crops": _crop_streams, "windows": _window_streams}


def _fit_inputs(config: TrainConfig, data: IsbiData, train: np.ndarray, val: np.ndarray, seed: int) -> FoldInputs:
    """The family's streams, the LAST epoch kept (a fixed schedule), and with ``epoch_rand_error`` the held-out
    V_rand error after every epoch."""
    inputs = family_of(config).training_inputs
    if inputs not in _STREAMS:
        raise NervesegError(f"the ISBI trainer has no training stream of {inputs}; use model unet or patch_cnn")
    rand_error = (HeldOutRandError(config, data.images[val], data.membranes[val]),) if config.epoch_rand_error else ()
    return FoldInputs(*_STREAMS[inputs](config, data, train, val, seed), checkpoint="last", callbacks=rand_error)


class HeldOutRandError(keras.callbacks.Callback):
    """Adds ``val_v_rand_error`` to each epoch's logs: the held-out slices' V_rand error (the challenge's,
    ``tasks.isbi2012.challenge_metrics``: best threshold of its sweep), predicted whole (no TTA) with that epoch's
    weights. Logged only, never used to pick an epoch; it is how a CV reports the V_rand error against
    training steps (``benchmarks/isbi_steps.py``).

    Must come after ``EpochLogs`` and before the callbacks that read the logs (MLflow's ``EpochLogger``
    logs it as the per-epoch metric ``val_v_rand_error``).
    """

    def __init__(self, config: TrainConfig, images: np.ndarray, membranes: np.ndarray) -> None:
        super().__init__()
        self._config, self._images, self._membranes = config, images, membranes

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is None:
            return
        probs = predict_slices(self._config, [self.model], self._images, tta=False)
        logs[VAL_V_RAND_ERROR] = challenge_scores(probs, self._membranes).v_rand_error


def _block_rows(config: TrainConfig, data: IsbiData, folds: np.ndarray, fold: int) -> Rows:
    """The held-out block is scored and monitored (logged only: the last epoch is kept); the rest trains."""
    held_out = np.flatnonzero(folds == fold)
    return held_out, np.flatnonzero(folds != fold), held_out


def _slices_oof(config: TrainConfig, model: keras.Model, images: np.ndarray, verbose: int) -> tuple[np.ndarray, None]:
    """Whole held-out slices with the submission's views (``config.tta``); the task has no presence head."""
    return predict_slices(config, [model], images, tta=config.tta), None


def _v_rand_error(data: IsbiData, rows: np.ndarray, probs: np.ndarray) -> float:
    """The challenge's V_rand error of the held-out slices (best threshold of its sweep; LOWER is better)."""
    return challenge_scores(probs, data.membranes[rows]).v_rand_error


ISBI_FOLD = FoldHooks[IsbiData](
    item="slice", rows=_block_rows, inputs=_fit_inputs, predict=_slices_oof, score=_v_rand_error
)


def train_isbi_fold(
    config: TrainConfig,
    data: IsbiData,
    folds: np.ndarray,
    fold: int,
    workdir: Path,
    *,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 1,
) -> FoldResult:
    """Train on every block but ``fold`` for ``epochs`` x ``steps_per_epoch`` batches; keep the last epoch.

    Writes ``workdir/fold_<fold>.weights.h5`` (standardisation inside) atomically. ``oof_probs``
    are the held-out slices' membrane probabilities at full size; ``val_score`` is their V_rand error
    (the challenge's; LOWER is better, unlike the nerve task's Dice); ``history["dice"]`` is
    the membrane Dice (U-Net: per crop; patch CNN: over the epoch's windows).
    """
    if config.task != "isbi2012":
        raise NervesegError(f"train_isbi_fold needs a config with task='isbi2012', got task={config.task!r}")
    return run_fold(ISBI_FOLD, config, data, folds, fold, workdir, callbacks=callbacks, verbose=verbose)
