"""The tf.data pipeline: targets, alignment of image and mask under augmentation, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import random_disc_masks
from nerveseg.train.input_pipeline import make_dataset


def blobs(n: int = 24, height: int = 32, width: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Binary-looking images (20 / 220) whose mask is exactly the thresholded image; a third are empty."""
    masks = random_disc_masks(np.random.default_rng(seed), n, height, width, max_radius=8)
    return (masks * 200 + 20).astype(np.uint8), masks


def first_batch(ds) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    x, targets = next(iter(ds))
    return x.numpy(), {k: v.numpy() for k, v in targets.items()}


def test_plain_batches_are_the_scaled_arrays_in_order() -> None:
    images, masks = blobs(10)
    ds = make_dataset(images, masks, batch_size=4, shuffle=False, seed=0)
    batches = list(ds)
    assert [len(x) for x, _ in batches] == [4, 4, 2]  # the partial batch is kept
    x = np.concatenate([b[0].numpy() for b in batches])
    y = np.concatenate([b[1]["mask"].numpy() for b in batches])
    assert x.dtype == np.float32 and x.shape == (10, 32, 40, 1)
    np.testing.assert_allclose(x[..., 0], images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y[..., 0], masks)
    assert set(batches[0][1]) == {"mask"}


def test_augmentation_keeps_image_and_mask_aligned_and_binary() -> None:
    images, masks = blobs(24)
    ds = make_dataset(
        images, masks, batch_size=24, shuffle=True, seed=3, augment_strength=2.0, augment_flip=True, presence=True
    )
    x, targets = first_batch(ds)
    y = targets["mask"]
    assert set(np.unique(y)) <= {0.0, 1.0}
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert not np.allclose(np.sort(x.sum(axis=(1, 2, 3))), np.sort(images.sum(axis=(1, 2)) / 255.0))  # it changed
    mismatch = np.mean((x > 0.5) != (y > 0.5))  # only interpolated edge pixels may disagree
    assert mismatch < 0.01
    np.testing.assert_array_equal(targets["presence"][:, 0], y.max(axis=(1, 2, 3)))


def test_flip_only_mirrors_exactly() -> None:
    images, masks = blobs(16)
    x, targets = first_batch(make_dataset(images, masks, batch_size=16, shuffle=False, seed=1, augment_flip=True))
    flipped = [not np.array_equal(x[i, ..., 0], images[i] / np.float32(255)) for i in range(16)]
    for i in range(16):
        source_x, source_y = (images[i, :, ::-1], masks[i, :, ::-1]) if flipped[i] else (images[i], masks[i])
        np.testing.assert_allclose(x[i, ..., 0], source_x / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(targets["mask"][i, ..., 0], source_y)
    assert 0 < sum(flipped[1::3] + flipped[2::3]) < 10  # some, not all, of the non-empty ones


def test_same_seed_same_batches_and_epochs_differ() -> None:
    images, masks = blobs(24)

    def build(seed: int):
        return make_dataset(images, masks, batch_size=8, shuffle=True, seed=seed, augment_strength=1.0)

    a, b, c = build(5), build(5), build(6)
    epoch1 = [x.numpy() for x, _ in a]
    np.testing.assert_array_equal(np.concatenate(epoch1), np.concatenate([x.numpy() for x, _ in b]))
    assert not np.array_equal(epoch1[0], first_batch(c)[0])
    epoch2 = [x.numpy() for x, _ in a]
    assert not np.array_equal(np.concatenate(epoch1), np.concatenate(epoch2))


def test_repeat_reshuffles_each_pass_and_covers_every_image_once() -> None:
    images, masks = blobs(10)
    images = np.arange(10, dtype=np.uint8)[:, None, None] * np.ones((1, 32, 40), np.uint8)  # image i is all i
    ds = make_dataset(images, masks, batch_size=4, shuffle=True, seed=2, repeat=True)
    batches = [x.numpy()[:, 0, 0, 0] * 255 for x, _ in ds.take(6)]  # 3 batches per pass (4, 4, 2)
    first, second = np.concatenate(batches[:3]).round(), np.concatenate(batches[3:]).round()
    assert sorted(first) == sorted(second) == list(range(10))
    assert not np.array_equal(first, second)


@pytest.mark.parametrize(
    ("images", "masks", "kwargs", "message"),
    [
        (np.zeros((4, 8, 8), np.float32), np.zeros((4, 8, 8), np.uint8), {}, "uint8"),
        (np.zeros((4, 8, 8), np.uint8), np.zeros((3, 8, 8), np.uint8), {}, "shape"),
        (np.zeros((4, 8, 8), np.uint8), np.zeros((4, 8, 8), np.uint8), {"augment_strength": -1.0}, "augment_strength"),
        (np.zeros((0, 8, 8), np.uint8), np.zeros((0, 8, 8), np.uint8), {}, "no images"),
    ],
)
def test_bad_input_raises(images, masks, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        make_dataset(images, masks, batch_size=2, shuffle=False, seed=0, **kwargs)
