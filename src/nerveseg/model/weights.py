"""A fold's weights file: its name, its atomic write and its checked read, for every task and model family.

The one trainer (``train.fold.fit_fold``) writes ``<workdir>/fold_<k>.weights.h5`` (the name is
``names.weights_file``'s) through a partial file renamed at the end, so a crash never leaves a half-written
file under the final name; every predictor loads one through ``load_checked_weights``, which turns a file
that does not fit the model built from the config into one line instead of a Keras traceback or, worse, a
model with some layers left at their random initial weights.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import keras

from nerveseg.errors import NervesegError
from nerveseg.names import weights_file

_SUFFIX = ".weights.h5"  # Keras 3 saves and loads weights only under this ending


def fold_weights_path(workdir: Path | str, fold: int) -> Path:
    """Where fold ``fold``'s kept weights are written in ``workdir``."""
    return Path(workdir) / weights_file(fold)


def partial_weights_path(weights_path: Path) -> Path:
    """The file a trainer writes first (``fold_<k>.partial.weights.h5``); ``publish_weights`` renames it."""
    if not weights_path.name.endswith(_SUFFIX):
        raise ValueError(f"{weights_path} does not end in {_SUFFIX}, which Keras needs")
    return weights_path.with_name(weights_path.name[: -len(_SUFFIX)] + ".partial" + _SUFFIX)


def publish_weights(weights_path: Path) -> Path:
    """Rename the finished partial file to ``weights_path`` in one step (same folder: atomic)."""
    os.replace(partial_weights_path(weights_path), weights_path)
    return weights_path


def load_checked_weights(model: keras.Model, path: Path | str, built_from: str) -> keras.Model:
    """Load ``path`` into ``model``; a missing file or one that does not fit is a one-line ``NervesegError``.

    ``built_from`` says what the model was built from (the config and its architecture fields), for the
    message. Keras raises for a layer whose shapes differ but only warns when a layer finds no weights in
    the file and keeps random ones; both are refused here.
    """
    path = Path(path)
    if not path.is_file():
        raise NervesegError(f"weights file {path} does not exist; did the fold finish training (cv_train.py)?")
    mismatch = f"weights file {path} does not fit the model built from {built_from}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(path)
        except (ValueError, KeyError, OSError) as err:
            keras_says = " ".join(str(err).split())[:300]  # Keras's message spans lines; the user's error is one
            raise NervesegError(f"{mismatch}: {keras_says}") from err
    if any("freshly-initialized" in str(w.message) for w in caught):
        raise NervesegError(f"{mismatch}: some layers found no weights in the file")
    return model
