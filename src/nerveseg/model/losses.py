"""Losses, the Dice metric Keras logs, and ``compile_model``.

The competition scores the MEAN OF PER-IMAGE Dice (1 when truth and prediction are both empty),
so the soft Dice loss is computed per image too: a batch-level Dice would let large masks drown
small ones and would never reward predicting nothing on the ~59 % of empty images.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import ops

from nerveseg.config import TrainConfig

LossFn = Callable[[Any, Any], Any]


def _flatten(y: Any) -> Any:
    """(b, ...) -> (b, pixels) float32 (outputs may be float16 under mixed precision)."""
    y = ops.cast(y, "float32")
    return ops.reshape(y, (ops.shape(y)[0], -1))


def soft_dice_per_image(y_true: Any, y_pred: Any, smooth: float = 1.0) -> Any:
    """(b,) soft Dice of each image: (2*sum(t*p) + smooth) / (sum(t) + sum(p) + smooth)."""
    t, p = _flatten(y_true), _flatten(y_pred)
    intersection = ops.sum(t * p, axis=1)
    return (2.0 * intersection + smooth) / (ops.sum(t, axis=1) + ops.sum(p, axis=1) + smooth)


def soft_dice_loss(smooth: float = 1.0) -> LossFn:
    """Per-image ``1 - soft Dice``; Keras then averages it over the batch."""

    def dice_loss(y_true: Any, y_pred: Any) -> Any:
        return 1.0 - soft_dice_per_image(y_true, y_pred, smooth)

    return dice_loss


def bce_loss(y_true: Any, y_pred: Any) -> Any:
    """Per-image mean pixel binary cross-entropy, shape (b,)."""
    t, p = _flatten(y_true), _flatten(y_pred)
    return ops.mean(keras.losses.binary_crossentropy(t[..., None], p[..., None]), axis=1)


def bce_dice_loss(smooth: float = 1.0) -> LossFn:
    """Per-image BCE + (1 - soft Dice): BCE gives gradients on empty images, Dice matches the score."""
    dice = soft_dice_loss(smooth)

    def bce_dice(y_true: Any, y_pred: Any) -> Any:
        return bce_loss(y_true, y_pred) + dice(y_true, y_pred)

    return bce_dice


def presence_bce_loss(y_true: Any, y_pred: Any) -> Any:
    """BCE of the (b, 1) "nerve present" head, shape (b,)."""
    return keras.losses.binary_crossentropy(ops.cast(y_true, "float32"), ops.cast(y_pred, "float32"))


def mask_loss(name: str, smooth: float) -> LossFn:
    """The mask loss named by ``TrainConfig.loss``."""
    if name == "dice":
        return soft_dice_loss(smooth)
    if name == "bce":
        return bce_loss
    if name == "bce_dice":
        return bce_dice_loss(smooth)
    raise ValueError(f"loss={name!r} is not supported; expected 'dice', 'bce' or 'bce_dice'")


def pixel_mask_loss(name: str, smooth: float) -> LossFn:
    """``mask_loss`` as a per-pixel (b, h, w) map, for per-pixel sample weights (b, h, w, 1).

    With unit weights its mean equals ``mask_loss``'s batch mean: the BCE is per pixel, the Dice term
    (1 - the image's soft Dice) is spread over the image's pixels. Under weights the BCE is the U-Net
    paper's weighted cross-entropy; the Dice term is scaled by the image's mean weight.
    """
    if name not in ("dice", "bce", "bce_dice"):
        raise ValueError(f"loss={name!r} is not supported; expected 'dice', 'bce' or 'bce_dice'")

    def pixel_loss(y_true: Any, y_pred: Any) -> Any:
        t, p = ops.cast(y_true, "float32"), ops.cast(y_pred, "float32")
        per_pixel = ops.zeros_like(t[..., 0])
        if name in ("bce", "bce_dice"):
            per_pixel = per_pixel + keras.losses.binary_crossentropy(t, p)
        if name in ("dice", "bce_dice"):
            per_pixel = per_pixel + (1.0 - soft_dice_per_image(t, p, smooth))[:, None, None]
        return per_pixel

    return pixel_loss


class DiceScore(keras.metrics.Metric):
    """Mean over ALL images seen of hard Dice at threshold 0.5 (empty vs empty = 1).

    Keeps a running sum and count, so an epoch's value is the per-image mean over the whole
    epoch (what the competition computes), not a mean of batch means.
    """

    def __init__(self, name: str = "dice", threshold: float = 0.5, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.threshold = threshold
        self.total = self.add_variable(shape=(), initializer="zeros", name="total", dtype="float32")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count", dtype="float32")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        t = ops.cast(_flatten(y_true) > 0.5, "float32")
        p = ops.cast(_flatten(y_pred) > self.threshold, "float32")
        intersection = ops.sum(t * p, axis=1)
        denominator = ops.sum(t, axis=1) + ops.sum(p, axis=1)
        dice = ops.where(denominator > 0, 2.0 * intersection / ops.maximum(denominator, 1.0), 1.0)
        self.total.assign_add(ops.sum(dice))
        self.count.assign_add(ops.cast(ops.shape(dice)[0], "float32"))

    def result(self) -> Any:
        return ops.divide_no_nan(self.total, self.count)

    def reset_state(self) -> None:
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "threshold": self.threshold}


def learning_rate_for(
    config: TrainConfig, steps_per_epoch: int | None
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The optimizer's learning rate: a float, or a Keras ``CosineDecay`` for a warm-up and/or cosine decay.

    "plateau" is a float that its callback lowers. A warm-up ramps linearly from 0 to ``learning_rate``
    over ``warmup_epochs``; then "cosine" decays to 0 by the last step and "constant" stays put
    (``alpha=1``). A fixed schedule is what makes keeping the LAST weights a sound rule: the rate is
    small at the end, so the last epochs do not jump around.
    """
    if config.lr_schedule == "plateau" or (config.lr_schedule == "constant" and not config.warmup_epochs):
        return config.learning_rate
    if not steps_per_epoch or steps_per_epoch < 1:
        raise ValueError(
            f"lr_schedule={config.lr_schedule!r} with warmup_epochs={config.warmup_epochs} needs steps_per_epoch >= 1 "
            f"to know its length, got {steps_per_epoch!r}; pass compile_model(..., steps_per_epoch=ceil(n_train / "
            "batch_size))"
        )
    warmup_steps = config.warmup_epochs * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup_steps else config.learning_rate,
        decay_steps=max((config.epochs - config.warmup_epochs) * steps_per_epoch, 1),
        alpha=1.0 if config.lr_schedule == "constant" else 0.0,
        warmup_target=config.learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


def compile_model(model: keras.Model, config: TrainConfig, *, steps_per_epoch: int | None = None) -> None:
    """Adam, the config's mask loss (+ weighted presence BCE), ``DiceScore`` on the mask, jit flag.

    With ``border_w0 > 0`` the mask loss is the per-pixel ``pixel_mask_loss`` that Keras multiplies by the
    stream's sample weights.
    ``steps_per_epoch`` is needed by a cosine schedule or a warm-up. With ``use_ema`` Adam keeps an
    exponential moving average of the weights, and ``fit`` writes it into the model when it ends
    (Keras 3 ``finalize_variable_values``); use ``keras.callbacks.SwapEMAWeights`` to validate with
    it during training. Mixed precision is a global
    policy set when the model is built (``model.build_model_from_config``); Keras wraps Adam in a
    loss-scale optimizer by itself under "mixed_float16".
    """
    per_pixel = config.border_w0 > 0  # the ISBI stream then yields per-pixel weights (tasks.isbi2012.border_weights)
    loss = (pixel_mask_loss if per_pixel else mask_loss)(config.loss, config.dice_smooth)
    losses: dict[str, Any] = {"mask": loss}
    weights = {"mask": 1.0}
    if "presence" in model.output_names:
        losses["presence"] = presence_bce_loss
        weights["presence"] = config.presence_weight
    model.compile(
        optimizer=keras.optimizers.Adam(
            learning_rate=learning_rate_for(config, steps_per_epoch),
            use_ema=config.use_ema,
            ema_momentum=config.ema_momentum,
        ),
        loss=losses,
        loss_weights=weights,
        metrics={"mask": [DiceScore(name="dice")]},
        jit_compile=config.jit_compile,
    )
