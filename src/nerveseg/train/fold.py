"""Training one cross-validation fold: the one fold runner of every task and model family, and the whole-image fold.

``run_fold`` runs every task's fold in one order. ``fold_model`` seeds everything from ``config.seed + fold``
(with TensorFlow op determinism on by default, so one machine gives identical weights run after run) and builds
the family's network, standardised with statistics of the training images only. The task's hooks (``FoldHooks``)
then make its streams (``FoldInputs``: after the seeding, since they draw from it); ``fit_fold`` compiles the
network as its family says, runs the package's one ``model.fit``, keeps weights by the checkpoint rule and writes
them atomically; the hooks predict the fold's out-of-fold images and score them. ``image_fold(score)`` gives the
hooks of whole images at the model's size (the nerve task's ``tasks.nerve.fold.NERVE_FOLD`` scores them by the
Dice at 580x420, the toy's by IoU); ``tasks.isbi2012.trainer.ISBI_FOLD`` is the ISBI task's (crops or windows,
the V_rand error).

Checkpoint rules (which weights a fold keeps):

- ``last``: the weights after the last epoch of a fixed schedule (nnU-Net's rule). The scored fold
  is still validated every epoch, for the learning curves, but never chooses anything.
- ``inner``: early stopping on an inner validation split carved from the TRAINING subjects; the
  best inner epoch's weights are kept and the scored fold is predicted only at the end.
- ``best_val``: the epoch with the best ``val_dice`` on the very fold that is then scored. That
  picks the luckiest of noisy epochs, so its score is optimistic; kept only for comparison.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import keras
import numpy as np
import tensorflow as tf

from nerveseg import names
from nerveseg.config import CheckpointRule, TrainConfig
from nerveseg.data.audit import contradictory_ids
from nerveseg.data.cache import PreparedData
from nerveseg.errors import NervesegError
from nerveseg.evaluate.metrics import dice_per_image
from nerveseg.inference.ensemble import predict_ensemble
from nerveseg.model.families import family_of, training_network
from nerveseg.model.unet import set_standardization
from nerveseg.model.weights import fold_weights_path, partial_weights_path, publish_weights
from nerveseg.train.checkpointing import inner_split, kept_epoch, selection_callbacks
from nerveseg.train.fold_result import FoldResult
from nerveseg.train.input_pipeline import make_dataset, steps_per_epoch

HISTORY_KEYS = ("loss", "val_loss", "dice", "val_dice", "learning_rate")
# Keras 3 prefixes metric names with the output name when a model has several outputs.
_RENAMES = {"mask_dice": "dice", "val_mask_dice": "val_dice"}


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite; tuning marks such a trial as failed."""


class EpochLogs(keras.callbacks.Callback):
    """Gives every later callback the stable names: ``dice``/``val_dice`` and ``learning_rate``.

    Must be FIRST in the callback list: Keras passes one logs dict through the list in order, so
    renaming it in place here is what ModelCheckpoint, History and tracking callbacks all see.
    ``learning_rate`` is the rate the epoch started with.
    """

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._learning_rate = current_learning_rate(self.model)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is None:
            return
        for old, new in _RENAMES.items():
            if old in logs:
                logs[new] = logs.pop(old)
        logs["learning_rate"] = self._learning_rate


class StopOnNaN(keras.callbacks.Callback):
    """Like ``keras.callbacks.TerminateOnNaN``, but remembers where, so ``fit_fold`` can raise."""

    def __init__(self) -> None:
        super().__init__()
        self.failure: str | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)) and self.failure is None:
            self.failure = f"loss became {loss} at epoch {self._epoch + 1}, batch {batch + 1}"
            self.model.stop_training = True


def current_learning_rate(model: keras.Model) -> float:
    """The optimizer's learning rate now (a schedule is evaluated at the current step)."""
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


def schedule_callbacks(config: TrainConfig) -> list[keras.callbacks.Callback]:
    """Callbacks that implement ``config.lr_schedule`` ("cosine" lives in the optimizer instead)."""
    if config.lr_schedule == "plateau":
        return [keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=3, min_lr=1e-7, verbose=0)]
    return []


def standardization_stats(images: np.ndarray) -> tuple[float, float]:
    """Mean and std of uint8 images scaled to [0, 1], exact, via a 256-bin histogram (no float copy)."""
    counts = np.bincount(np.asarray(images, dtype=np.uint8).ravel(), minlength=256).astype(np.float64)
    values = np.arange(256) / 255.0
    mean = float(counts @ values / counts.sum())
    std = float(math.sqrt(counts @ (values - mean) ** 2 / counts.sum()))
    return mean, max(std, 1e-6)


def set_op_determinism(enabled: bool) -> None:
    """Switch TensorFlow op determinism on or off for this process (a global setting).

    On, the same seed, data and machine give bit-identical weights; different CPU models still
    differ (kernels and instruction sets). TensorFlow exports only the switch-on; switching off
    uses its framework function of the same module, so a deterministic=False run after a
    deterministic one in one process (tests, tuning) is not silently deterministic.
    """
    if enabled:
        tf.config.experimental.enable_op_determinism()
        return
    from tensorflow.python.framework import config as tf_framework_config

    tf_framework_config.disable_op_determinism()


@dataclass(frozen=True)
class FoldInputs:
    """What a task gives ``fit_fold`` for one fold, made after ``fold_model`` (its streams draw from the seed).

    ``train`` is endless: ``steps`` batches make an epoch. ``validation`` is evaluated after each epoch
    (``validation_steps`` batches; None: all of a finite one). ``checkpoint`` is the rule that keeps the weights;
    ``callbacks`` are the task's own, seeing the logs after the trainer's and before the caller's.
    """

    train: tf.data.Dataset
    validation: tf.data.Dataset
    steps: int
    validation_steps: int | None
    checkpoint: CheckpointRule
    callbacks: tuple[keras.callbacks.Callback, ...] = ()


class FoldData(Protocol):
    """What ``run_fold`` reads of a task's training data itself: the (n, h, w) uint8 images (standardised,
    predicted); the rest is the hooks' business."""

    @property
    def images(self) -> np.ndarray: ...


DataT = TypeVar("DataT", bound=FoldData)
Rows = tuple[np.ndarray, np.ndarray, np.ndarray]  # one fold's scored (validation), training and monitored rows


@dataclass(frozen=True)
class FoldHooks(Generic[DataT]):
    """What one task does differently in a fold; ``run_fold`` does the rest, in the same order for every task.

    - ``item``: what one training item is called in messages ("image", "slice").
    - ``rows(config, data, folds, fold)``: the scored rows, the training rows and the monitored rows (those the
      validation stream shows after each epoch: the scored ones, or an inner split of the training rows).
    - ``inputs(config, data, train_rows, monitor_rows, seed)``: the fit's streams, made after the seeding.
    - ``predict(config, model, images, verbose)``: the scored images' OOF probabilities (n, h, w) and presence
      (n,) or None, with the submission's views (``config.tta``), so post-processing is decided on what ships.
    - ``score(data, rows, probs)``: the fold's score of those probabilities (the task's metric).
    """

    item: str
    rows: Callable[[TrainConfig, DataT, np.ndarray, int], Rows]
    inputs: Callable[[TrainConfig, DataT, np.ndarray, np.ndarray, int], FoldInputs]
    predict: Callable[[TrainConfig, keras.Model, np.ndarray, int], tuple[np.ndarray, np.ndarray | None]]
    score: Callable[[DataT, np.ndarray, np.ndarray], float]


def check_fold(config: TrainConfig, images: np.ndarray, folds: np.ndarray, fold: int, *, item: str) -> None:
    """The user's images, folds and config fit together, else one line naming what to change (before any work)."""
    if images.shape[1:] != (config.height, config.width):
        raise NervesegError(
            f"the {item}s are {images.shape[1:]} but the config says height={config.height}, width={config.width}; "
            f"prepare the data at the config's size or set them to the {item} size"
        )
    if folds.shape != (len(images),):
        raise NervesegError(f"folds must have one entry per {item} ({len(images)}), got shape {folds.shape}")
    present = sorted(set(folds.tolist()))
    if fold not in present or present == [fold]:
        raise NervesegError(f"fold={fold} must be in the folds array and leave {item}s to train on (folds: {present})")


def fold_model(config: TrainConfig, fold: int, train_images: np.ndarray) -> tuple[keras.Model, tuple[float, float]]:
    """A fresh session seeded from ``config.seed + fold`` and the family's network as trained, standardised by
    the statistics of ``train_images`` (the fold's training images only); returns (model, (mean, std))."""
    keras.backend.clear_session()
    set_op_determinism(config.deterministic)
    keras.utils.set_random_seed(config.seed + fold)
    norm = standardization_stats(train_images)
    model = training_network(config)
    set_standardization(model, *norm)
    return model, norm


def _history(model: keras.Model) -> dict[str, list[float]]:
    """The fit's history under HISTORY_KEYS (a key missing is a bug: EpochLogs names them)."""
    logged = model.history.history
    missing = [key for key in HISTORY_KEYS if key not in logged]
    if missing:
        raise RuntimeError(f"Keras did not log {missing} (logged: {sorted(logged)}); EpochLogs must run first")
    return {key: [float(v) for v in logged[key]] for key in HISTORY_KEYS}


def fit_fold(
    model: keras.Model,
    config: TrainConfig,
    inputs: FoldInputs,
    fold: int,
    workdir: Path,
    *,
    callbacks: Sequence[keras.callbacks.Callback],
    verbose: int,
) -> tuple[dict[str, list[float]], int, Path]:
    """Compile ``model`` as its family says, fit it for ``config.epochs`` epochs, keep the epoch that
    ``inputs.checkpoint`` chooses (left in ``model``) and write it to ``workdir/fold_<fold>.weights.h5``.

    Returns (history under HISTORY_KEYS, the kept 1-based epoch, the weights file). The file is written as a
    partial file renamed at the end: any failure (divergence, or e.g. a pruning callback stopping a trial)
    leaves none. Raises ``TrainingDivergedError`` when the loss becomes NaN/inf.
    """
    family_of(config).compile(model, config, inputs.steps)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)  # before training: an unusable folder fails at once
    weights_path = fold_weights_path(workdir, fold)
    partial_path = partial_weights_path(weights_path)
    partial_path.unlink(missing_ok=True)
    nan_guard = StopOnNaN()
    selection, chooser = selection_callbacks(config, inputs.checkpoint, partial_path)
    trainer_callbacks = [EpochLogs(), nan_guard, *selection, *schedule_callbacks(config)]
    try:
        model.fit(
            inputs.train,
            validation_data=inputs.validation,
            epochs=config.epochs,
            steps_per_epoch=inputs.steps,  # the streams repeat: one iterator per fit, no pause per epoch
            validation_steps=inputs.validation_steps,
            callbacks=[*trainer_callbacks, *inputs.callbacks, *callbacks],
            shuffle=False,  # the streams shuffle or draw at random themselves (seeded)
            verbose=verbose,
        )
        history = _history(model)
        if nan_guard.failure:
            raise TrainingDivergedError(
                f"fold {fold}: training diverged ({nan_guard.failure}); lower learning_rate "
                f"(now {config.learning_rate}) or check the data"
            )
        kept = kept_epoch(inputs.checkpoint, history, chooser, partial_path)
        if kept is None:
            raise TrainingDivergedError(f"fold {fold}: no epoch gave a finite val_dice ({history['val_dice']})")
        if inputs.checkpoint == "best_val":
            model.load_weights(partial_path)
        else:
            model.save_weights(partial_path)
    except BaseException:
        partial_path.unlink(missing_ok=True)
        raise
    return history, kept, publish_weights(weights_path)


def run_fold(
    hooks: FoldHooks[DataT],
    config: TrainConfig,
    data: DataT,
    folds: np.ndarray,
    fold: int,
    workdir: Path,
    *,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int = 1,
) -> FoldResult:
    """Train on every fold but ``fold``, keep weights by the task's checkpoint rule, score them on ``fold``.

    Writes ``workdir/fold_<fold>.weights.h5`` (the kept weights, with the standardisation inside).
    ``callbacks`` see logs named as in ``HISTORY_KEYS``. Raises ``TrainingDivergedError`` when
    the loss becomes NaN/inf.
    """
    folds = np.asarray(folds)
    check_fold(config, data.images, folds, fold, item=hooks.item)
    val_index, train_index, monitor_index = hooks.rows(config, data, folds, fold)
    model, (norm_mean, norm_std) = fold_model(config, fold, data.images[train_index])
    inputs = hooks.inputs(config, data, train_index, monitor_index, config.seed + fold)
    history, kept, weights_path = fit_fold(model, config, inputs, fold, workdir, callbacks=callbacks, verbose=verbose)
    oof_probs, oof_presence = hooks.predict(config, model, data.images[val_index], verbose)
    return FoldResult(
        fold=fold,
        val_index=val_index,
        oof_probs=oof_probs,
        oof_presence=oof_presence,
        history=history,
        kept_epoch=kept,
        weights_path=weights_path,
        val_score=hooks.score(data, val_index, oof_probs),
        norm_mean=norm_mean,
        norm_std=norm_std,
        checkpoint=inputs.checkpoint,
    )


# ------------------------------------------------------------------------------ the whole-image fold's hooks


def training_index(data: PreparedData, folds: np.ndarray, fold: int, *, drop_contradictory: bool) -> np.ndarray:
    """Positions of the training images of ``fold``; contradictory pairs leave training, never validation."""
    index = np.flatnonzero(folds != fold)
    if drop_contradictory:
        dropped = np.asarray(sorted(contradictory_ids(data)), dtype=str)
        index = index[~np.isin(data.ids[index], dropped)]
    if len(index) == 0:
        raise NervesegError(f"fold {fold} leaves no training images; check the folds array")
    return index


class GatedValDice(keras.callbacks.Callback):
    """``val_dice_gated`` after each epoch: the monitored images' Dice at the model's size and threshold 0.5, the
    mask emptied where the presence head says no nerve (< 0.5), i.e. the model as it ships.

    Why beside ``val_dice``: that scores the mask head alone, where one fired pixel on an empty frame scores 0, so
    with a presence head its curve can slide while the model gets no worse (the demo's seed 5: a fold's val_dice
    ended at 0.55, 0.23 below its best, while its OOF gated by the presence head scored 0.89). Predicting the
    images costs well under a second per epoch at 64x80 and changes no weight.
    """

    def __init__(self, images: np.ndarray, masks: np.ndarray) -> None:
        super().__init__()
        self._images, self._truth = images, masks > 0.5

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is None:
            return
        probs, presence = predict_ensemble([self.model], self._images, tta=False, progress=False)
        gated = (probs > 0.5) & (presence > 0.5)[:, None, None]
        logs[names.VAL_DICE_GATED] = float(dice_per_image(self._truth, gated).mean())


def fold_datasets(
    config: TrainConfig, data: PreparedData, train_index: np.ndarray, val_index: np.ndarray, seed: int
) -> FoldInputs:
    """Endless training (shuffled, augmented) and validation (fixed order) datasets, kept by ``config.checkpoint``.

    Both repeat so that Keras keeps one iterator per fit; the steps make each epoch exactly one pass.
    """
    train_ds = make_dataset(
        data.images[train_index],
        data.masks[train_index],
        batch_size=config.batch_size,
        shuffle=True,
        seed=seed,
        augment_strength=config.augment_strength,
        augment_flip=config.augment_flip,
        presence=config.presence_head,
        repeat=True,
    )
    val_ds = make_dataset(
        data.images[val_index],
        data.masks[val_index],
        batch_size=config.batch_size,
        shuffle=False,
        seed=0,
        presence=config.presence_head,
        repeat=True,
    )
    return FoldInputs(
        train_ds,
        val_ds,
        steps_per_epoch(len(train_index), config.batch_size),
        steps_per_epoch(len(val_index), config.batch_size),
        config.checkpoint,
        (GatedValDice(data.images[val_index], data.masks[val_index]),) if config.presence_head else (),
    )


def fold_indices(
    config: TrainConfig, data: PreparedData, folds: np.ndarray, fold: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(validation, training, monitor) rows of fold ``fold``: the monitor set is the fold itself, or an inner
    split of the training rows when ``config.checkpoint == "inner"`` keeps the fold unseen until scoring."""
    val_index = np.flatnonzero(folds == fold)
    train_index = training_index(data, folds, fold, drop_contradictory=config.drop_contradictory)
    monitor_index = val_index
    if config.checkpoint == "inner":
        train_index, monitor_index = inner_split(data, train_index, config.inner_val_fraction, config.seed + fold)
    return val_index, train_index, monitor_index


def _predict_images(
    config: TrainConfig, model: keras.Model, images: np.ndarray, verbose: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """The fold ensemble's prediction of one model (mirror views with ``config.tta``, the presence head's too)."""
    return predict_ensemble([model], images, tta=config.tta, batch_size=256, progress=verbose > 0)


def image_fold(score: Callable[[PreparedData, np.ndarray, np.ndarray], float]) -> FoldHooks[PreparedData]:
    """The whole-image fold (the nerve and toy tasks): ``fold_indices``' rows, ``fold_datasets``' streams, the
    model's OOF prediction with the submission's views, scored by the task's ``score``."""
    return FoldHooks(item="image", rows=fold_indices, inputs=fold_datasets, predict=_predict_images, score=score)
