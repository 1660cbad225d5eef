"""Patch-CNN training windows: centred on the sampled pixel, balanced, seeded, augmented by symmetries."""

from __future__ import annotations

import numpy as np
import pytest

from nerveseg.tasks.isbi2012.windows import window_dataset


def _slices(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (3, 20, 24), dtype=np.uint8)
    membranes = (rng.random((3, 20, 24)) < 0.1).astype(np.uint8)
    return images, membranes


def _take(dataset: object, batches: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in dataset.take(batches)], strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def test_windows_are_centred_on_a_pixel_with_its_label() -> None:
    _, membranes = _slices()
    images = np.random.default_rng(9).random(membranes.shape).astype(np.float32)  # floats: taken as in [0, 1]
    x, y = _take(window_dataset(images, membranes, 9, batch_size=64, augment=False, seed=1), 4)
    assert x.shape == (256, 9, 9, 1) and x.dtype == np.float32 and y.shape == (256, 1)
    for window, target in zip(x[:64], y[:64, 0], strict=True):
        matches = np.argwhere(images == window[4, 4, 0])  # random floats: the centre value names the pixel
        assert len(matches) == 1 and membranes[tuple(matches[0])] == target
        slice_index, row, col = matches[0]
        padded = np.pad(images[slice_index], 4, mode="reflect")
        np.testing.assert_array_equal(window[..., 0], padded[row : row + 9, col : col + 9])
    borders = [m for m in x[:, 4, 4, 0] if np.argwhere(images == m)[0][1] in (0, 19)]
    assert borders, "some windows should sit on the border rows, where the reflect padding matters"


@pytest.mark.slow
def test_balanced_sampling_and_seeding() -> None:
    images, membranes = _slices()
    _, balanced = _take(window_dataset(images, membranes, 9, batch_size=200, seed=2), 3)
    _, uniform = _take(window_dataset(images, membranes, 9, batch_size=200, balanced=False, seed=2), 3)
    assert 0.4 < balanced.mean() < 0.6 and uniform.mean() < 0.2
    first, _ = _take(window_dataset(images, membranes, 9, batch_size=32, seed=5), 2)
    again, _ = _take(window_dataset(images, membranes, 9, batch_size=32, seed=5), 2)
    other, _ = _take(window_dataset(images, membranes, 9, batch_size=32, seed=6), 2)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_augmentation_keeps_the_centre_and_uses_symmetries() -> None:
    images, membranes = _slices()
    plain, _ = _take(window_dataset(images, membranes, 9, batch_size=128, augment=False, seed=3), 1)
    augmented, _ = _take(window_dataset(images, membranes, 9, batch_size=128, augment=True, seed=3), 1)
    np.testing.assert_array_equal(plain[:, 4, 4], augmented[:, 4, 4])  # same pixels, same order
    changed = 0
    for a, b in zip(plain[..., 0], augmented[..., 0], strict=True):
        symmetries = [np.rot90(a, k) for k in range(4)] + [np.rot90(a, k)[:, ::-1] for k in range(4)]
        assert any(np.array_equal(b, s) for s in symmetries)
        changed += not np.array_equal(a, b)
    assert changed > 64


def test_bad_arguments() -> None:
    images, membranes = _slices()
    with pytest.raises(ValueError, match="odd"):
        window_dataset(images, membranes, 8)
    with pytest.raises(ValueError, match="same"):
        window_dataset(images, membranes[:2], 9)
    with pytest.raises(ValueError, match="both membrane and cell"):
        window_dataset(images, np.zeros_like(membranes), 9)
    with pytest.raises(ValueError, match="too big"):
        window_dataset(images, membranes, 41)


@pytest.mark.slow
def test_windows_train_the_patch_cnn() -> None:
    """The stream has static shapes and a tiny classifier learns from it (loss falls on synthetic EM)."""
    import keras

    from nerveseg.model.patch_cnn import build_patch_cnn
    from nerveseg.model.unet import set_standardization
    from nerveseg.tasks.isbi2012.synthetic import render_stack

    images, labels = map(np.stack, zip(*render_stack(np.random.SeedSequence(0), 3, 96), strict=True))
    dataset = window_dataset(images, (labels == 0).astype(np.uint8), 23, batch_size=64, seed=0)
    assert dataset.element_spec[0].shape == (64, 23, 23, 1) and dataset.element_spec[1].shape == (64, 1)
    keras.utils.set_random_seed(0)
    model = build_patch_cnn(23, (8, 8), (4, 3), 16)
    set_standardization(model, float(images.mean() / 255), float(images.std() / 255))
    model.compile(keras.optimizers.Adam(3e-3), "binary_crossentropy")
    history = model.fit(dataset, steps_per_epoch=25, epochs=3, verbose=0).history["loss"]
    assert history[-1] < 0.7 * history[0], history
