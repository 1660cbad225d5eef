"""The sliding-window membrane classifier (Ciresan et al. 2012) and its exact dense inference.

``build_patch_cnn`` is the classifier: it reads an odd ``window x window`` patch and returns the
membrane probability of the centre pixel. Blocks of valid convolution + 2x2 max-pooling are
followed by "dense" layers written as convolutions (one whose kernel covers the remaining spatial
extent, then 1x1 convolutions), so the very same weights also fit a fully convolutional model.

``build_dense_patch_cnn`` is that model (Giusti et al. 2013, "max-pooling fragments" / filter
rarefaction): pooling runs with stride 1, and every later convolution and pooling is dilated by
the product of the earlier pooling strides. Applied to an image reflect-padded by half a window,
its output at ``(i, j)`` is exactly the classifier's output on the window centred at ``(i, j)``,
for every pixel at once, without recomputing the features that neighbouring windows share.

The window arithmetic is strict: the size reaching every pooling must be even, so that no row of
the window is silently dropped and the receptive field is exactly the window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import layers

from nerveseg.model.unet import Standardize

POOL = 2  # every block ends with a 2x2 max-pooling (stride 2 in the classifier)


@dataclass(frozen=True)
class PatchCnnSpec:
    """Layer sizes shared by the classifier and its dense twin (and inferable from either)."""

    window: int = 65
    filters: tuple[int, ...] = (48, 48, 48)
    kernels: tuple[int, ...] = (4, 4, 3)
    dense_units: tuple[int, ...] = (200,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", tuple(int(f) for f in self.filters))
        object.__setattr__(self, "kernels", tuple(int(k) for k in self.kernels))
        object.__setattr__(self, "dense_units", tuple(int(u) for u in self.dense_units))
        _validate(self)

    @property
    def final_extent(self) -> int:
        """Spatial size left after the last pooling: the kernel of the first dense convolution."""
        return block_sizes(self.window, self.kernels)[-1]


def block_sizes(window: int, kernels: Sequence[int]) -> list[int]:
    """Sizes through the blocks: ``[window, after conv 1, after pool 1, after conv 2, ...]``."""
    sizes = [int(window)]
    for kernel in kernels:
        sizes.append(sizes[-1] - int(kernel) + 1)
        sizes.append(sizes[-1] // POOL)
    return sizes


def _window_works(window: int, kernels: Sequence[int]) -> bool:
    sizes = block_sizes(window, kernels)
    before_pools = sizes[1::2]
    return window % 2 == 1 and all(s >= POOL and s % POOL == 0 for s in before_pools)


def working_windows(kernels: Sequence[int], up_to: int = 201) -> list[int]:
    """Odd windows (<= ``up_to``) whose sizes before every pooling are even for these kernels."""
    return [w for w in range(3, up_to + 1, 2) if _window_works(w, kernels)]


def _validate(spec: PatchCnnSpec) -> None:
    if not spec.kernels or len(spec.filters) != len(spec.kernels):
        raise ValueError(
            f"patch_cnn needs one filter count per conv block: got filters={spec.filters}, kernels={spec.kernels}"
        )
    if any(k < 1 for k in spec.kernels) or any(f < 1 for f in spec.filters) or any(u < 1 for u in spec.dense_units):
        raise ValueError(
            f"patch_cnn sizes must be positive: filters={spec.filters}, kernels={spec.kernels}, "
            f"dense_units={spec.dense_units}"
        )
    if not _window_works(spec.window, spec.kernels):
        sizes = "->".join(str(s) for s in block_sizes(spec.window, spec.kernels))
        options = working_windows(spec.kernels)[:8]
        raise ValueError(
            f"patch_cnn window {spec.window} with kernels {spec.kernels} does not fit: the window must be odd and "
            f"the size before every 2x2 pooling even and >= 2 (sizes {sizes}); windows that work with these "
            f"kernels: {options or 'none below 201'}; or change the kernels (65 works with (4, 4, 3))"
        )


def _dense_head(x: Any, spec: PatchCnnSpec, dilation: int) -> Any:
    """Dense layers as convolutions: the first covers the remaining extent, the rest are 1x1."""
    for index, units in enumerate(spec.dense_units, start=1):
        kernel = spec.final_extent if index == 1 else 1
        x = layers.Conv2D(units, kernel, dilation_rate=dilation, activation="relu", name=f"dense_{index}")(x)
    return layers.Conv2D(1, 1, activation="sigmoid", name="output", dtype="float32")(x)


def build_patch_cnn(
    window: int = 65,
    filters: Sequence[int] = (48, 48, 48),
    kernels: Sequence[int] = (4, 4, 3),
    dense_units: int | Sequence[int] = 200,
    name: str = "window_classifier",
) -> keras.Model:
    """The centre-pixel classifier: ``(batch, window, window, 1)`` in [0, 1] -> ``(batch, 1)`` membrane prob.

    Uncompiled; ``name`` is the Keras model's (``model.families`` passes the family's, which its trained weights
    files hold). The defaults are Ciresan's N4 shape (65x65 window, three 48-map blocks with 4, 4 and
    3 kernels, sizes 62/31/28/14/12/6, one 200-unit dense layer).
    """
    spec = _make_spec(window, filters, kernels, dense_units)
    inputs = keras.Input((spec.window, spec.window, 1), name="window")
    x = Standardize(name="standardize")(inputs)
    for index, (n_filters, kernel) in enumerate(zip(spec.filters, spec.kernels, strict=True), start=1):
        x = layers.Conv2D(n_filters, kernel, activation="relu", name=f"conv_{index}")(x)
        x = layers.MaxPooling2D(POOL, name=f"pool_{index}")(x)
    outputs = layers.Flatten(name="flatten")(_dense_head(x, spec, dilation=1))
    return keras.Model(inputs, outputs, name=name)


@keras.saving.register_keras_serializable(package="nerveseg")
class DilatedMaxPool2D(layers.Layer):
    """2x2 max-pooling with stride 1 whose taps are ``dilation`` pixels apart (a valid "pooling fragment")."""

    def __init__(self, dilation: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dilation = int(dilation)

    def call(self, inputs: Any) -> Any:
        d = self.dilation
        top = keras.ops.maximum(inputs[:, :-d, :-d], inputs[:, :-d, d:])
        bottom = keras.ops.maximum(inputs[:, d:, :-d], inputs[:, d:, d:])
        return keras.ops.maximum(top, bottom)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "dilation": self.dilation}


def build_dense_patch_cnn(
    window: int = 65,
    filters: Sequence[int] = (48, 48, 48),
    kernels: Sequence[int] = (4, 4, 3),
    dense_units: int | Sequence[int] = 200,
) -> keras.Model:
    """The fully convolutional twin: ``(batch, h + window - 1, w + window - 1, 1)`` -> ``(batch, h, w, 1)``.

    Same layer names and weight shapes as ``build_patch_cnn`` (copy weights with ``copy_weights``).
    Feed it an image padded by ``window // 2`` on each side (``pad_for_windows``).
    """
    spec = _make_spec(window, filters, kernels, dense_units)
    inputs = keras.Input((None, None, 1), name="padded_image")
    x = Standardize(name="standardize")(inputs)
    dilation = 1
    for index, (n_filters, kernel) in enumerate(zip(spec.filters, spec.kernels, strict=True), start=1):
        x = layers.Conv2D(n_filters, kernel, dilation_rate=dilation, activation="relu", name=f"conv_{index}")(x)
        x = DilatedMaxPool2D(dilation, name=f"pool_{index}")(x)
        dilation *= POOL
    outputs = _dense_head(x, spec, dilation=dilation)
    return keras.Model(inputs, outputs, name="dense_patch_cnn")


def _make_spec(
    window: int, filters: Sequence[int], kernels: Sequence[int], dense_units: int | Sequence[int]
) -> PatchCnnSpec:
    units = (dense_units,) if isinstance(dense_units, int | np.integer) else tuple(dense_units)
    return PatchCnnSpec(int(window), tuple(filters), tuple(kernels), units)


def spec_of(model: keras.Model) -> PatchCnnSpec:
    """Recover the layer spec from a classifier built by ``build_patch_cnn`` (for its dense twin)."""
    window = model.input_shape[1]
    if window is None:
        raise ValueError(f"model {model.name!r} has no fixed window size: pass the classifier from build_patch_cnn")
    convs = [layer for layer in model.layers if layer.name.startswith("conv_")]
    dense = [layer for layer in model.layers if layer.name.startswith("dense_")]
    return PatchCnnSpec(
        window=window,
        filters=tuple(layer.filters for layer in convs),
        kernels=tuple(layer.kernel_size[0] for layer in convs),
        dense_units=tuple(layer.filters for layer in dense),
    )


def copy_weights(source: keras.Model, target: keras.Model) -> None:
    """Copy every weighted layer of ``source`` into the same-named layer of ``target``."""
    for layer in target.layers:
        if layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())


def dense_twin(classifier: keras.Model) -> keras.Model:
    """A dense model with the classifier's spec and weights (build once, reuse for many images)."""
    spec = spec_of(classifier)
    dense = build_dense_patch_cnn(spec.window, spec.filters, spec.kernels, spec.dense_units)
    copy_weights(classifier, dense)
    return dense


def pad_for_windows(image: np.ndarray, window: int) -> np.ndarray:
    """Reflect-pad a 2-D image by ``window // 2`` so every pixel has a full window (edge not repeated)."""
    half = window // 2
    return np.pad(np.asarray(image, dtype=np.float32), half, mode="reflect")


def dense_predict(model: keras.Model, image: np.ndarray, tile_size: int = 256) -> np.ndarray:
    """Membrane probability of every pixel of a 2-D image -> ``(h, w)`` float32.

    uint8 images are scaled by 1/255 (as the training windows are); floats are taken as in [0, 1].

    ``model`` is either the classifier (its dense twin is built here; pass the twin from
    ``dense_twin`` when predicting many images) or the dense model itself. The image is processed in
    ``tile_size`` x ``tile_size`` output tiles so memory stays bounded at any image size.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"dense_predict takes one 2-D image, got shape {image.shape}")
    if tile_size < 1:
        raise ValueError(f"tile_size must be >= 1, got {tile_size}")
    if image.dtype == np.uint8:
        image = image.astype(np.float32) / 255.0
    dense = model if model.input_shape[1] is None else dense_twin(model)
    window = _window_of_dense(dense)
    padded = pad_for_windows(image, window)
    height, width = image.shape
    out = np.empty((height, width), dtype=np.float32)
    for top in range(0, height, tile_size):
        for left in range(0, width, tile_size):
            bottom, right = min(top + tile_size, height), min(left + tile_size, width)
            tile = padded[top : bottom + window - 1, left : right + window - 1]
            probs = dense(tile[None, :, :, None], training=False)
            out[top:bottom, left:right] = keras.ops.convert_to_numpy(probs)[0, :, :, 0]
    return out


def _window_of_dense(dense: keras.Model) -> int:
    """The window a dense model was built for: its receptive field (sum of dilated reductions + 1)."""
    field = 1
    for layer in dense.layers:
        if isinstance(layer, layers.Conv2D):
            field += (layer.kernel_size[0] - 1) * layer.dilation_rate[0]
        elif isinstance(layer, DilatedMaxPool2D):
            field += layer.dilation
    return field
