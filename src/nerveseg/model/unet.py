"""The U-Net, built keras-io style from small pure functions.

``build_unet`` returns an uncompiled functional model whose outputs are always a dict
(``{"mask": ...}`` plus ``"presence"`` when the auxiliary head is on), so losses, metrics and
callers address outputs by name. The first layer, ``Standardize``, stores the training fold's
mean and std as non-trainable weights: a saved ``.weights.h5`` file is all inference needs.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import layers

from nerveseg.config import TrainConfig


@keras.saving.register_keras_serializable(package="nerveseg")
class Standardize(layers.Layer):
    """``(x - mean) / std`` with scalar, non-trainable ``mean``/``std`` saved with the weights.

    Kept in float32 under mixed precision: the statistics are small numbers and the first
    convolution casts its input anyway.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def build(self, input_shape: Any) -> None:
        self.mean = self.add_weight(name="mean", shape=(), initializer="zeros", trainable=False)
        self.std = self.add_weight(name="std", shape=(), initializer="ones", trainable=False)

    def call(self, inputs: Any) -> Any:
        return (inputs - self.mean) / self.std


def set_standardization(model: keras.Model, mean: float, std: float) -> None:
    """Store the training fold's pixel statistics (of images scaled to [0, 1]) in the model."""
    if not (np.isfinite(mean) and np.isfinite(std) and std > 0):
        raise ValueError(f"standardisation needs a finite mean and a positive std, got mean={mean}, std={std}")
    layer = model.get_layer("standardize")
    layer.mean.assign(float(mean))
    layer.std.assign(float(std))


def get_standardization(model: keras.Model) -> tuple[float, float]:
    """The (mean, std) stored in ``model``'s ``Standardize`` layer."""
    layer = model.get_layer("standardize")
    return float(keras.ops.convert_to_numpy(layer.mean)), float(keras.ops.convert_to_numpy(layer.std))


def conv_block(x: Any, filters: int, *, batch_norm: bool, dropout: float, name: str, last_relu: bool = True) -> Any:
    """Two 3x3 same-padded ReLU convolutions (BatchNorm before each ReLU when asked), then dropout;
    ``last_relu=False`` leaves out the second ReLU (the features a linear head reads)."""
    for i in (1, 2):
        x = layers.Conv2D(
            filters, 3, padding="same", kernel_initializer="he_normal", use_bias=not batch_norm, name=f"{name}_conv{i}"
        )(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"{name}_bn{i}")(x)
        if i == 1 or last_relu:
            x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return x


def upsample(x: Any, filters: int, *, mode: str, name: str) -> Any:
    """Double the resolution and set the channels: a 2x2 stride-2 transposed convolution, or
    bilinear resizing followed by a 2x2 convolution (the original paper's "up-convolution")."""
    if mode == "transpose":
        return layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=f"{name}_transpose")(x)
    if mode == "bilinear":
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_resize")(x)
        return layers.Conv2D(filters, 2, padding="same", kernel_initializer="he_normal", name=f"{name}_conv")(x)
    raise ValueError(f"upsampling={mode!r} is not supported; expected 'transpose' or 'bilinear'")


def build_unet(
    height: int,
    width: int,
    *,
    depth: int = 5,
    base_filters: int = 32,
    batch_norm: bool = False,
    dropout: float = 0.0,
    upsampling: str = "transpose",
    presence_head: bool = False,
    head_before_relu: bool = False,
) -> keras.Model:
    """An uncompiled U-Net on (height, width, 1) float32 inputs in [0, 1].

    ``depth`` counts levels including the bottleneck; level ``i`` has ``base_filters * 2**i``
    filters. Dropout (if any) follows the two deepest levels' convolutions. Output layers are
    float32 so that losses stay stable under mixed precision.

    ``head_before_relu``: the 1x1 mask head reads the last block's (batch-normalised) features before their
    ReLU. Behind a ReLU every feature is >= 0, so once the head's few weights are all negative (8 of them
    at base_filters 8; the early push of the many background pixels does that on an unlucky seed) no pixel
    can score above sigmoid(bias) < 0.5 and the model never fires again: a "silent fold".
    """
    if depth < 2:
        raise ValueError(f"depth={depth} must be at least 2 (one pooling level and the bottleneck)")
    factor = 2 ** (depth - 1)
    if height % factor or width % factor:
        raise ValueError(f"height={height} and width={width} must be divisible by 2**(depth-1)={factor}")

    inputs = keras.Input((height, width, 1), name="image")
    x = Standardize(name="standardize")(inputs)
    skips = []
    for level in range(depth - 1):
        deep = level >= depth - 2
        x = conv_block(
            x, base_filters * 2**level, batch_norm=batch_norm, dropout=dropout if deep else 0.0, name=f"down{level}"
        )
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"down{level}_pool")(x)
    bottleneck = conv_block(
        x, base_filters * 2 ** (depth - 1), batch_norm=batch_norm, dropout=dropout, name="bottleneck"
    )
    x = bottleneck
    for level in reversed(range(depth - 1)):
        filters = base_filters * 2**level
        x = upsample(x, filters, mode=upsampling, name=f"up{level}")
        x = layers.Concatenate(name=f"up{level}_concat")([x, skips[level]])
        last_relu = level > 0 or not head_before_relu
        x = conv_block(x, filters, batch_norm=batch_norm, dropout=0.0, name=f"up{level}", last_relu=last_relu)
    outputs = {"mask": layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="mask")(x)}
    if presence_head:
        pooled = layers.GlobalAveragePooling2D(name="presence_pool")(bottleneck)
        outputs["presence"] = layers.Dense(1, activation="sigmoid", dtype="float32", name="presence")(pooled)
    return keras.Model(inputs, outputs, name="unet")


def apply_precision_policy(mixed_precision: bool) -> None:
    """Set Keras' global dtype policy; must run before a model is built (it is global state)."""
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed_precision else "float32")


def unet_options(config: TrainConfig) -> dict[str, Any]:
    """The config's U-Net architecture as ``build_unet`` keywords (every task builds its U-Net from these)."""
    return {
        "depth": config.depth,
        "base_filters": config.base_filters,
        "batch_norm": config.batch_norm,
        "dropout": config.dropout,
        "upsampling": config.upsampling,
        "head_before_relu": config.head_before_relu,
    }


def build_model_from_config(config: TrainConfig) -> keras.Model:
    """``build_unet`` with the config's architecture, after setting the config's precision policy."""
    apply_precision_policy(config.mixed_precision)
    return build_unet(config.height, config.width, **unet_options(config), presence_head=config.presence_head)


def model_flops_per_image(model: keras.Model) -> float:
    """Analytic forward FLOPs for one image (a multiply-add counts 2).

    Counts convolutions, transposed convolutions and dense layers, which are > 99 % of the work;
    biases, activations, pooling, BatchNorm and resizing are left out. Used by benchmarks to
    turn images/s into GFLOP/s.
    """
    total = 0.0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2DTranspose):
            _, h_in, w_in, _ = layer.input.shape
            total += 2.0 * np.prod(layer.kernel.shape) * h_in * w_in
        elif isinstance(layer, layers.Conv2D):
            _, h_out, w_out, _ = layer.output.shape
            total += 2.0 * np.prod(layer.kernel.shape) * h_out * w_out
        elif isinstance(layer, layers.Dense):
            total += 2.0 * np.prod(layer.kernel.shape)
    return float(total)
