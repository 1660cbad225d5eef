"""The checkpoint rules of ``train.fold.fit_fold``: which weights a fold keeps, and on what data they are chosen.

Only ``best_val`` looks at the fold that is then scored; ``inner`` holds out whole training
subjects instead; ``last`` chooses nothing (a fixed schedule, the weights after its last epoch).
See ``nerveseg.train.fold`` for why.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from nerveseg.config import CheckpointRule, TrainConfig
from nerveseg.data.cache import PreparedData
from nerveseg.data.folds import make_folds


def inner_split(
    data: PreparedData, train_index: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(fit, inner validation) positions: whole training SUBJECTS held out, stratified by mask presence.

    Reuses the cross-validation split (``make_folds``) on the training part with ``round(1 / fraction)``
    folds and holds out its first fold, so the inner split never leaks a subject either.
    """
    n_inner = max(2, round(1.0 / fraction))
    subjects = data.subjects[train_index]
    if len(np.unique(subjects)) < n_inner:
        raise ValueError(
            f"checkpoint='inner' with inner_val_fraction={fraction} needs at least {n_inner} training subjects, "
            f"got {len(np.unique(subjects))}; raise inner_val_fraction, use fewer folds or checkpoint='last'"
        )
    inner = make_folds(subjects, data.has_mask[train_index], n_inner, seed) == 0
    return train_index[~inner], train_index[inner]


def selection_callbacks(
    config: TrainConfig, rule: CheckpointRule, partial_path: Path
) -> tuple[list[keras.callbacks.Callback], keras.callbacks.Callback | None]:
    """Callbacks that implement the checkpoint ``rule`` (after EpochLogs), and the one that picks the epoch.

    With EMA weights, ``SwapEMAWeights`` puts them in the model for validation and at each epoch's end,
    so the epoch chosen by val_dice and the weights kept are the EMA ones.
    """
    ema = [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if config.use_ema else []
    if rule == "best_val":
        chooser: keras.callbacks.Callback = keras.callbacks.ModelCheckpoint(
            partial_path, monitor="val_dice", mode="max", save_best_only=True, save_weights_only=True
        )
    elif rule == "inner":
        chooser = keras.callbacks.EarlyStopping(
            monitor="val_dice",
            mode="max",
            patience=config.patience,
            restore_best_weights=True,
            start_from_epoch=config.warmup_epochs,
        )
    else:
        return ema, None
    return [*ema, chooser], chooser


def kept_epoch(
    rule: CheckpointRule, history: dict[str, list[float]], chooser: keras.callbacks.Callback | None, partial_path: Path
) -> int | None:
    """The 1-based epoch whose weights ``rule`` keeps (``best_val``: those saved at ``partial_path``).

    None when the rule found no epoch with a finite val_dice (the caller reports divergence).
    """
    if rule == "last":
        return len(history["loss"])
    if rule == "inner":
        if not isinstance(chooser, keras.callbacks.EarlyStopping) or chooser.best_weights is None:
            return None
        return int(chooser.best_epoch) + 1
    if not partial_path.is_file():
        return None
    return int(np.nanargmax(history["val_dice"])) + 1
