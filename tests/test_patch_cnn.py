"""The patch CNN: its dense (max-pooling fragment) map equals the naive per-window classification."""

from __future__ import annotations

import numpy as np
import pytest

from nerveseg.model.patch_cnn import (
    PatchCnnSpec,
    build_dense_patch_cnn,
    build_patch_cnn,
    dense_predict,
    dense_twin,
    pad_for_windows,
    spec_of,
    working_windows,
)
from nerveseg.model.unet import set_standardization

TINY = {"window": 23, "filters": (4, 5), "kernels": (4, 3), "dense_units": (6, 5)}  # sizes 23/20/10/8/4


def _randomized_classifier(seed: int) -> object:
    """A tiny classifier with random (not default) weights, biases and standardisation."""
    import keras

    keras.utils.set_random_seed(seed)
    model = build_patch_cnn(**TINY)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.name.startswith(("conv_", "dense_", "output")):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.1, bias.shape).astype(np.float32)])
    set_standardization(model, 0.45, 0.2)
    return model


def _naive(model: object, image: np.ndarray, pixels: np.ndarray, window: int) -> np.ndarray:
    padded = pad_for_windows(image, window)
    windows = np.stack([padded[r : r + window, c : c + window] for r, c in pixels])
    return model.predict_on_batch(windows[..., None])[:, 0]


def test_dense_map_equals_naive_windows_including_borders() -> None:
    model = _randomized_classifier(seed=3)
    rng = np.random.default_rng(0)
    image = rng.random((37, 29)).astype(np.float32)
    dense = dense_predict(model, image, tile_size=16)  # tiles that do not divide the image
    assert dense.shape == image.shape and dense.dtype == np.float32
    corners = [(0, 0), (0, 28), (36, 0), (36, 28), (0, 13), (18, 0), (36, 14), (17, 28)]
    random_pixels = np.stack([rng.integers(0, 37, 40), rng.integers(0, 29, 40)], axis=1)
    pixels = np.concatenate([np.array(corners), random_pixels])
    naive = _naive(model, image, pixels, TINY["window"])
    np.testing.assert_allclose(dense[pixels[:, 0], pixels[:, 1]], naive, rtol=1e-4, atol=1e-5)
    assert dense.std() > 1e-3, "a constant map would make the comparison meaningless"


def test_dense_twin_is_reusable_and_untiled_matches_tiled() -> None:
    model = _randomized_classifier(seed=5)
    image = np.random.default_rng(1).random((24, 24)).astype(np.float32)
    twin = dense_twin(model)
    as_bytes = np.rint(image * 255).astype(np.uint8)
    np.testing.assert_array_equal(dense_predict(twin, as_bytes), dense_predict(twin, as_bytes / np.float32(255)))
    np.testing.assert_allclose(
        dense_predict(twin, image, tile_size=1000), dense_predict(model, image, tile_size=7), rtol=1e-5, atol=1e-6
    )


def test_default_spec_is_n4_and_dense_model_shares_weight_shapes() -> None:
    classifier = build_patch_cnn()
    dense = build_dense_patch_cnn()
    assert classifier.input_shape == (None, 65, 65, 1) and classifier.output_shape == (None, 1)
    assert spec_of(classifier) == PatchCnnSpec()
    shapes = {w.path.split("/")[0] + w.name: tuple(w.shape) for w in classifier.weights}
    assert shapes == {w.path.split("/")[0] + w.name: tuple(w.shape) for w in dense.weights}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": 64}, "window 64"),
        ({"window": 65, "kernels": (4, 5, 4)}, "windows that work"),
        ({"filters": (8, 8), "kernels": (4, 4, 3)}, "one filter count per conv block"),
        ({"dense_units": 0}, "must be positive"),
        ({"window": 9, "kernels": (4, 4, 3), "filters": (2, 2, 2)}, "windows that work"),
    ],
)
def test_bad_specs_say_what_works(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_patch_cnn(**kwargs)


def test_working_windows_are_the_ones_that_build() -> None:
    assert 65 in working_windows((4, 4, 3)) and 65 not in working_windows((4, 5, 4))
    assert working_windows((4, 5, 4), up_to=80) == [31, 39, 47, 55, 63, 71, 79]  # 8n + 23
    for window in working_windows((4, 3), up_to=40):
        assert build_patch_cnn(window, (2, 2), (4, 3), 3).output_shape == (None, 1)


def test_dense_predict_rejects_bad_input() -> None:
    model = build_patch_cnn(**TINY)
    with pytest.raises(ValueError, match="2-D image"):
        dense_predict(model, np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match="tile_size"):
        dense_predict(model, np.zeros((8, 8)), tile_size=0)
