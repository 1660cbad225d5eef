"""Training windows for the patch CNN: seeded centre-pixel sampling from slices, as a tf.data pipeline.

The classifier learns the label of a window's centre pixel, so training draws centre pixels from
the training slices (optionally half membrane, half cell: membranes are ~22 % of pixels) and cuts
the ``window x window`` patch around each from the slice reflect-padded by half a window, the same
padding ``dense_predict`` uses at inference. Random flips and 90-degree rotations about the centre
augment without moving the centre pixel.

The stream is infinite (pass ``steps_per_epoch`` to ``fit``) and depends only on ``seed``: every
random draw comes from ``tf.data.Dataset.random(seed)`` and the map keeps its order.
The slices live in memory as one float32 tensor (30 padded 512x512 slices: ~40 MB).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from nerveseg.errors import NervesegError
from nerveseg.model.patch_cnn import pad_for_windows

_RANGE = 1 << 30  # random draws are reduced modulo this before use (plenty for pixel indices)


def _check_inputs(images: np.ndarray, membranes: np.ndarray, window: int, balanced: bool) -> None:
    if images.ndim != 3 or images.shape != membranes.shape:
        raise ValueError(
            f"window sampling needs images and membranes of the same (n, h, w) shape, got {images.shape} "
            f"and {membranes.shape}"
        )
    if window < 3 or window % 2 == 0:
        raise ValueError(f"window must be odd and >= 3 so that it has a centre pixel, got {window}")
    if window // 2 >= min(images.shape[1:]):
        raise NervesegError(
            f"window {window} is too big for {images.shape[1:]} slices: reflect padding needs window < 2 * side"
        )
    if balanced and (membranes.all() or not membranes.any()):
        raise NervesegError("balanced sampling needs both membrane and cell pixels in the training slices")


def _padded_stack(images: np.ndarray, window: int) -> np.ndarray:
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    return np.stack([pad_for_windows(image.astype(np.float32) / scale, window) for image in images])


def window_dataset(
    images: np.ndarray,
    membranes: np.ndarray,
    window: int = 65,
    *,
    batch_size: int = 256,
    balanced: bool = True,
    augment: bool = True,
    seed: int = 0,
) -> tf.data.Dataset:
    """An infinite stream of ``(windows (b, window, window, 1) float32 in [0, 1], targets (b, 1) float32)``.

    ``images`` are ``(n, h, w)`` slices (uint8 are scaled by 1/255, floats taken as already in
    [0, 1]); ``membranes`` the 0/1 targets. ``balanced`` draws membrane and cell centres with equal
    probability, else pixels uniformly.
    """
    images, membranes = np.asarray(images), np.asarray(membranes)
    _check_inputs(images, membranes, window, balanced)
    padded = tf.constant(_padded_stack(images, window))
    flat = membranes.reshape(-1).astype(bool)
    height, width = membranes.shape[1:]
    pools = [np.flatnonzero(~flat), np.flatnonzero(flat)] if balanced else [np.arange(flat.size)]
    pools = [tf.constant(pool.astype(np.int32)) for pool in pools]
    sizes = tf.constant([int(pool.shape[0]) for pool in pools], dtype=tf.int64)
    labels = tf.constant(flat.astype(np.float32))

    def to_window(draws: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        draw, augment_draw = tf.unstack(tf.math.floormod(draws, _RANGE))
        which = tf.math.floormod(draw, len(pools))
        pick = tf.math.floormod(draw // len(pools), sizes[which])
        index = tf.switch_case(tf.cast(which, tf.int32), [lambda p=p: p[pick] for p in pools])
        slice_index, rest = index // (height * width), index % (height * width)
        row, col = rest // width, rest % width
        patch = padded[slice_index, row : row + window, col : col + window][..., None]
        if augment:
            patch = tf.image.rot90(patch, k=tf.cast(tf.math.floormod(augment_draw, 4), tf.int32))
            flip = tf.math.floormod(augment_draw // 4, 2) == 1
            patch = tf.cond(flip, lambda: tf.reverse(patch, [1]), lambda: patch)
        return tf.ensure_shape(patch, (window, window, 1)), labels[index][None]

    draws = tf.data.Dataset.random(seed=seed).batch(
        2, drop_remainder=True
    )  # one draw picks the pixel, one the augmentation
    return (
        draws.map(to_window, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .batch(batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )
