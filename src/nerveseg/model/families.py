"""The model families a config can name (``config.task`` with ``config.model``), each one object.

A family says how to build its network for an input size and compile it for training, what its training
inputs are (whole images, random crops or centre-pixel windows, and their side), how one trained model predicts
whole slices, which config fields decide whether a weights file fits it, and which slice sides it can take.
Trainers, predictors and tasks ask ``family_of(config)`` instead of testing ``config.model``. The training
streams themselves are training code (``tasks.isbi2012.trainer`` maps ``training_inputs`` to its tf.data pipelines):
they sit above this module in the package's layer order. ``config`` validates the field's values itself (it sits below).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import keras
import numpy as np

from nerveseg.config import TrainConfig
from nerveseg.errors import NervesegError
from nerveseg.model.losses import compile_model, learning_rate_for
from nerveseg.model.patch_cnn import build_patch_cnn, dense_predict, dense_twin
from nerveseg.model.unet import build_model_from_config, build_unet, unet_options

TrainingInputs = Literal["images", "crops", "windows"]
UNET_SLICE_BATCH = 2  # whole 512x512 slices per U-Net call


@dataclass(frozen=True)
class ModelFamily:
    """One model family's hooks; ``family_of(config)`` picks it.

    - ``build(config, height, width)``: the uncompiled network for ``(height, width)`` inputs (the patch
      classifier's input is its window whatever the size; the nerve U-Net's is the config's size).
    - ``compile(model, config, steps_per_epoch)``: the optimizer, loss and metrics it trains with (the metric
      logged as ``dice``; a learning-rate schedule needs the steps per epoch).
    - ``training_side(config, height, width)``: the side of the training network's inputs for slices of
      that size (0: the network's own, a window).
    - ``predict_slices(config, model, images)``: one trained model, no test-time views: (n, h, w) float32
      probabilities of (n, h, w) float32 images in [0, 1] at any size the family takes.
    - ``architecture(config)``: the fields that decide which weights file fits, for a mismatch's message.
    - ``size_divisor(config)``: slice sides must be multiples of it (the U-Net's skips).
    """

    name: str
    task: str
    label: str  # for messages: "U-Net", "patch CNN"
    training_inputs: TrainingInputs
    build: Callable[[TrainConfig, int, int], keras.Model]
    compile: Callable[[keras.Model, TrainConfig, int], None]
    training_side: Callable[[TrainConfig, int, int], int]
    predict_slices: Callable[[TrainConfig, keras.Model, np.ndarray], np.ndarray] | None
    architecture: Callable[[TrainConfig], str]
    size_divisor: Callable[[TrainConfig], int]


def crop_side(config: TrainConfig, height: int, width: int) -> int:
    """The U-Net's training crop: ``crop_size``, or the whole (square) slice when it is 0."""
    if config.crop_size == 0:
        if height != width:
            raise NervesegError(f"crop_size=0 (whole images) needs square slices for rot90, got {height}x{width}")
        return height
    if config.crop_size > min(height, width):
        raise NervesegError(f"crop_size={config.crop_size} is larger than the {height}x{width} slices; lower it")
    return config.crop_size


def _compile_unet(model: keras.Model, config: TrainConfig, steps_per_epoch: int) -> None:
    compile_model(model, config, steps_per_epoch=steps_per_epoch)


def _compile_patch_cnn(model: keras.Model, config: TrainConfig, steps_per_epoch: int) -> None:
    """Plain BCE on the centre pixels; its Dice is the F1 score over the epoch's windows."""
    model.compile(
        optimizer=keras.optimizers.Adam(
            learning_rate_for(config, steps_per_epoch), use_ema=config.use_ema, ema_momentum=config.ema_momentum
        ),
        loss="binary_crossentropy",
        metrics=[keras.metrics.F1Score(average="micro", threshold=0.5, name="dice")],
    )


def _isbi_unet(config: TrainConfig, height: int, width: int) -> keras.Model:
    return build_unet(height, width, **unet_options(config))


def _unet_slices(config: TrainConfig, model: keras.Model, images: np.ndarray) -> np.ndarray:
    """A twin built at the slice size with the same weights (fully convolutional), called in small batches."""
    height, width = images.shape[1:]
    if model.input_shape[1:3] != (height, width):
        twin = _isbi_unet(config, height, width)
        twin.set_weights(model.get_weights())
        model = twin
    x = images.astype(np.float32)[..., None]
    batches = [model(x[i : i + UNET_SLICE_BATCH], training=False)["mask"] for i in range(0, len(x), UNET_SLICE_BATCH)]
    return np.concatenate([np.asarray(batch)[..., 0] for batch in batches]).astype(np.float32)


def _patch_slices(config: TrainConfig, model: keras.Model, images: np.ndarray) -> np.ndarray:
    """The classifier's exact dense twin, slice by slice."""
    dense = dense_twin(model)
    return np.stack([dense_predict(dense, image) for image in images]).astype(np.float32)


def _unet_architecture(config: TrainConfig) -> str:
    return f"model=unet, depth={config.depth}, base_filters={config.base_filters}, batch_norm={config.batch_norm}"


def _unet_divisor(config: TrainConfig) -> int:
    return 2 ** (config.depth - 1)


NERVE_UNET = ModelFamily(
    name="unet",
    task="nerve",
    label="U-Net",
    training_inputs="images",
    build=lambda config, height, width: build_model_from_config(config),
    compile=_compile_unet,
    training_side=lambda config, height, width: height,
    predict_slices=None,  # the nerve task predicts through inference.ensemble (mirror views, presence head)
    architecture=lambda config: f"{_unet_architecture(config)}, presence_head={config.presence_head}",
    size_divisor=_unet_divisor,
)
ISBI_UNET = ModelFamily(
    name="unet",
    task="isbi2012",
    label="U-Net",
    training_inputs="crops",
    build=_isbi_unet,
    compile=_compile_unet,
    training_side=crop_side,
    predict_slices=_unet_slices,
    architecture=_unet_architecture,
    size_divisor=_unet_divisor,
)
PATCH_CNN = ModelFamily(
    name="patch_cnn",
    task="isbi2012",
    label="patch CNN",
    training_inputs="windows",
    build=lambda config, height, width: build_patch_cnn(
        config.window, (config.patch_filters,) * 3, dense_units=config.dense_units, name=config.model
    ),
    compile=_compile_patch_cnn,
    training_side=lambda config, height, width: 0,
    predict_slices=_patch_slices,
    architecture=lambda config: (
        f"model=patch_cnn, window={config.window}, patch_filters={config.patch_filters}, "
        f"dense_units={config.dense_units}"
    ),
    size_divisor=lambda config: 1,
)
FAMILIES = {(family.task, family.name): family for family in (NERVE_UNET, ISBI_UNET, PATCH_CNN)}
# a task with no family of that name trains these (whole images in, masks out: the nerve's U-Net, as the toy does)
ANY_TASK = {NERVE_UNET.name: NERVE_UNET}


def family_of(config: TrainConfig) -> ModelFamily:
    """The family of ``config.model`` for ``config.task`` (else ``ANY_TASK``'s); a pair with none is a one-line
    error."""
    family = FAMILIES.get((config.task, config.model)) or ANY_TASK.get(config.model)
    if family is None:
        known = ", ".join(f"{task}/{name}" for task, name in FAMILIES)
        raise NervesegError(
            f"config {config.name!r}: no model {config.model!r} for task {config.task!r}; known: {known}"
        )
    return family


def training_network(config: TrainConfig) -> keras.Model:
    """The family's uncompiled network as it is trained (the ISBI U-Net at its crop, the patch CNN at its window)."""
    family = family_of(config)
    side = family.training_side(config, config.height, config.width)
    return family.build(config, side, side)
