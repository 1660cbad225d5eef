"""The tf.data input pipeline on the cached uint8 arrays, with augmentation done per BATCH.

Why per batch: one ``ImageProjectiveTransformV3`` call warps a whole batch with one matrix per
image, so augmentation costs a few ms per batch and keeps up with the model on two CPU cores.
Image and mask are stacked as two channels and warped by the same call, so they cannot drift
apart; the mask is re-binarised afterwards. Randomness comes from stateless ops seeded by a
``Dataset.random`` stream zipped with the batches: the same ``seed`` gives the same batches in
the same order, epoch after epoch, whatever the parallelism, while each epoch differs.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

# At augment_strength 1: shifts of 10 % of the size, rotations of 10 degrees, zoom of 10 %,
# brightness offsets of 0.1 (images are in [0, 1]) and contrast factors of 1 +- 0.1.
SHIFT, ROTATION_DEG, ZOOM, BRIGHTNESS, CONTRAST = 0.1, 10.0, 0.1, 0.1, 0.1


def _validate(images: np.ndarray, masks: np.ndarray, batch_size: int, augment_strength: float) -> None:
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be a (N, h, w) uint8 array, got shape {images.shape} dtype {images.dtype}")
    if masks.shape != images.shape:
        raise ValueError(f"masks must have the images' shape {images.shape}, got {masks.shape}")
    if len(images) == 0:
        raise ValueError("make_dataset got no images; check the fold assignment")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    if not (math.isfinite(augment_strength) and augment_strength >= 0):
        raise ValueError(f"augment_strength={augment_strength} must be a finite number >= 0 (0 turns it off)")


def _to_float(images: tf.Tensor, masks: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """uint8 (b, h, w) -> float32 (b, h, w, 1): images in [0, 1], masks in {0, 1}."""
    x = tf.cast(images, tf.float32)[..., None] / 255.0
    y = tf.cast(masks > 0, tf.float32)[..., None]
    return x, y


def _affine_transforms(u: tf.Tensor, height: int, width: int, strength: float, flip: bool) -> tf.Tensor:
    """(b, 8) output->input projective transforms from uniform(-1, 1) draws ``u`` (b, 7).

    Forward map: out = c + t + zoom * R(angle) * F * (in - c) around the centre c, with F an
    optional horizontal mirror; ImageProjectiveTransform wants its inverse.
    """
    tx = u[:, 0] * SHIFT * strength * width
    ty = u[:, 1] * SHIFT * strength * height
    angle = u[:, 2] * ROTATION_DEG * strength * (math.pi / 180.0)
    zoom = 1.0 + u[:, 3] * ZOOM * strength
    mirror = tf.where(u[:, 4] > 0, -1.0, 1.0) if flip else tf.ones_like(tx)
    cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
    m00, m01, m10, m11 = mirror * cos, mirror * sin, -sin, cos
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    a2 = cx - (m00 * (cx + tx) + m01 * (cy + ty))
    b2 = cy - (m10 * (cx + tx) + m11 * (cy + ty))
    zeros = tf.zeros_like(tx)
    return tf.stack([m00, m01, a2, m10, m11, b2, zeros, zeros], axis=1)


def augment_batch(
    x: tf.Tensor, y: tf.Tensor, seed: tf.Tensor, *, strength: float, flip: bool
) -> tuple[tf.Tensor, tf.Tensor]:
    """Warp image and mask identically (flip, shift, rotation, zoom); brightness/contrast on the image."""
    height, width = x.shape[1], x.shape[2]
    u = tf.random.stateless_uniform((tf.shape(x)[0], 7), seed=seed, minval=-1.0, maxval=1.0)
    transforms = _affine_transforms(u, height, width, strength, flip)
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.concat([x, y], axis=-1),
        transforms=transforms,
        output_shape=tf.constant([height, width], tf.int32),
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="NEAREST",
    )
    x, y = warped[..., :1], tf.cast(warped[..., 1:] > 0.5, tf.float32)
    if strength > 0:
        offset = (u[:, 5] * BRIGHTNESS * strength)[:, None, None, None]
        contrast = (1.0 + u[:, 6] * CONTRAST * strength)[:, None, None, None]
        mean = tf.reduce_mean(x, axis=(1, 2, 3), keepdims=True)
        x = tf.clip_by_value((x - mean) * contrast + mean + offset, 0.0, 1.0)
    return x, y


def make_dataset(
    images: np.ndarray,
    masks: np.ndarray,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    augment_strength: float = 0.0,
    augment_flip: bool = False,
    presence: bool = False,
    repeat: bool = False,
) -> tf.data.Dataset:
    """Batches of (x float32 (b, h, w, 1) in [0, 1], {"mask": y (b, h, w, 1)[, "presence": p (b, 1)]}).

    ``shuffle`` reshuffles every epoch (seeded). Augmentation is on when ``augment_strength > 0``
    or ``augment_flip``; ``presence`` (mask non-empty) is computed after augmentation, so a
    nerve shifted out of view counts as absent. The last, partial batch is kept.

    ``repeat=True`` makes it endless (each pass reshuffled, augmentation never repeating); pass
    ``steps_per_epoch=ceil(N / batch_size)`` to ``fit``. Keras then keeps ONE iterator for the
    whole fit instead of building a new one per epoch, which costs 0.1-0.3 s (seconds under load)
    before each epoch's first batch, and the prefetch buffer stays full across epoch boundaries.
    """
    images, masks = np.asarray(images), np.asarray(masks)
    _validate(images, masks, batch_size, augment_strength)
    ds = tf.data.Dataset.from_tensor_slices((images, masks))
    if shuffle:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if repeat:
        ds = ds.repeat()
    strength, flip = float(augment_strength), bool(augment_flip)

    def with_targets(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        targets = {"mask": y}
        if presence:
            targets["presence"] = tf.reduce_max(y, axis=(1, 2, 3))[:, None]
        return x, targets

    if strength > 0 or flip:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

        def prepare(batch: tuple[tf.Tensor, tf.Tensor], seed_pair: tf.Tensor) -> tuple[tf.Tensor, dict]:
            return with_targets(*augment_batch(*_to_float(*batch), seed_pair, strength=strength, flip=flip))

        ds = tf.data.Dataset.zip((ds, seeds)).map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        ds = ds.map(
            lambda images, masks: with_targets(*_to_float(images, masks)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    return ds.prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(n_images: int, batch_size: int) -> int:
    """Batches in one pass with the last, partial batch kept (as ``make_dataset`` batches)."""
    return max(1, math.ceil(n_images / batch_size))
