"""The U-Net: the reference recipe's size and cost, output names, and the stored standardisation."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from nerveseg.model.unet import (
    Standardize,
    build_model_from_config,
    build_unet,
    get_standardization,
    model_flops_per_image,
    set_standardization,
)


def test_reference_model_has_the_reference_size_and_cost() -> None:
    model = build_unet(64, 80)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == 7_759_521
    assert model.count_params() == 7_759_521 + 2  # Standardize's non-trainable mean and std
    assert model_flops_per_image(model) == pytest.approx(1.88e9, rel=0.01)


@pytest.mark.parametrize("presence_head", [False, True])
def test_outputs_are_a_dict_named_by_head(presence_head: bool) -> None:
    model = build_unet(32, 40, depth=3, base_filters=4, presence_head=presence_head)
    out = model.predict_on_batch(np.zeros((2, 32, 40, 1), np.float32))
    expected = {"mask", "presence"} if presence_head else {"mask"}
    assert set(out) == expected
    assert out["mask"].shape == (2, 32, 40, 1)
    assert np.all((out["mask"] >= 0) & (out["mask"] <= 1))
    if presence_head:
        assert out["presence"].shape == (2, 1)


def test_variants_build_and_predict() -> None:
    model = build_unet(32, 40, depth=3, base_filters=4, batch_norm=True, dropout=0.3, upsampling="bilinear")
    assert model.predict_on_batch(np.ones((1, 32, 40, 1), np.float32))["mask"].shape == (1, 32, 40, 1)
    assert any(isinstance(layer, keras.layers.Dropout) for layer in model.layers)
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"height": 30}, "divisible"), ({"upsampling": "nearest"}, "upsampling"), ({"depth": 1}, "depth")],
)
def test_bad_arguments_raise(kwargs: dict, message: str) -> None:
    args = {"height": 32, "width": 40, "depth": 3, "base_filters": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        build_unet(args.pop("height"), args.pop("width"), **args)


def test_standardize_layer_and_saved_statistics(tmp_path) -> None:
    layer = Standardize()
    out = keras.ops.convert_to_numpy(layer(np.full((1, 2, 2, 1), 0.75, np.float32)))
    np.testing.assert_allclose(out, 0.75)  # mean 0, std 1 until set
    model = build_unet(32, 40, depth=2, base_filters=4)
    set_standardization(model, 0.4, 0.2)
    path = tmp_path / "m.weights.h5"
    model.save_weights(path)
    fresh = build_unet(32, 40, depth=2, base_filters=4)
    fresh.load_weights(path)
    assert get_standardization(fresh) == pytest.approx((0.4, 0.2))
    std_layer = fresh.get_layer("standardize")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(std_layer(np.full((1, 1, 1, 1), 0.8, np.float32))), 2.0)
    assert not std_layer.trainable_weights
    with pytest.raises(ValueError, match="std"):
        set_standardization(model, 0.4, 0.0)


def test_mixed_precision_keeps_outputs_float32(tiny_config) -> None:
    try:
        model = build_model_from_config(tiny_config.replace(mixed_precision=True, presence_head=True))
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
        assert model.get_layer("down0_conv1").compute_dtype == "float16"
        assert model.output["mask"].dtype == "float32"
        assert model.output["presence"].dtype == "float32"
    finally:
        build_model_from_config(tiny_config)  # back to float32 for the other tests
    assert keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.parametrize("head_before_relu", [False, True])
def test_a_head_before_the_relu_can_fire_with_every_weight_negative(head_before_relu: bool) -> None:
    """The silent fold: behind a ReLU, all-negative head weights cap every pixel at sigmoid(bias) = 0.5."""
    keras.utils.set_random_seed(0)
    model = build_unet(32, 40, depth=2, base_filters=4, batch_norm=True, head_before_relu=head_before_relu)
    head = model.get_layer("mask")
    kernel, _ = head.get_weights()
    head.set_weights([-np.abs(kernel) - 0.1, np.zeros(1, np.float32)])
    images = np.random.default_rng(0).random((4, 32, 40, 1), dtype=np.float32)
    top = float(model.predict_on_batch(images)["mask"].max())
    assert (top > 0.5) == head_before_relu
