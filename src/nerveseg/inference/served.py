"""The served model's request and answer as tables: images from the request, the answer's columns from segmentations.

The pyfunc model (``track.model_package``) wraps a task's ``served`` model behind MLflow's interface; what it reads
is decided here, with the column names of ``nerveseg.names``, which ``run.predict`` sends and reads as any HTTP
client would. A request is a DataFrame with a column ``image`` of encoded image files (TIFF, PNG, JPEG; gray or
RGB; any size; base64 in JSON); in process a list or array of uint8 images is accepted too. Each task answers
itself (``tasks.nerve.segmenter``, ``tasks.isbi2012.serving``). A malformed request is a one-line
``NervesegError`` naming the image.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from nerveseg import names
from nerveseg.errors import NervesegError
from nerveseg.inference.images import decode_all


def request_images(model_input: Any) -> list[np.ndarray]:
    """Gray uint8 images from a DataFrame ``image`` column of file bytes, or from uint8 arrays."""
    if isinstance(model_input, pd.DataFrame):
        if names.IMAGE_COLUMN not in model_input.columns:
            raise NervesegError(
                f"the input has columns {list(model_input.columns)}; expected a column {names.IMAGE_COLUMN!r} "
                "of base64-encoded TIFF, PNG or JPEG files"
            )
        cells = model_input[names.IMAGE_COLUMN].tolist()
        for row, value in enumerate(cells):
            if not isinstance(value, bytes | bytearray):
                raise NervesegError(
                    f"image {row}: is a {type(value).__name__}; expected the bytes of an image file (base64 in JSON)"
                )
            if not value:  # MLflow's base64 decoding drops every character outside the alphabet
                raise NervesegError(
                    f"image {row}: holds no bytes (an empty string, or base64 without one valid character); "
                    "send the base64 of a TIFF, PNG or JPEG file"
                )
        return decode_all([(bytes(value), f"image {row}") for row, value in enumerate(cells)])
    if isinstance(model_input, np.ndarray) and model_input.ndim in (2, 3) and model_input.dtype != object:
        model_input = model_input[None] if model_input.ndim == 2 else model_input
    if isinstance(model_input, np.ndarray | list | tuple):
        return [np.asarray(image) for image in model_input]
    raise NervesegError(
        f"the input is a {type(model_input).__name__}; expected a DataFrame with column {names.IMAGE_COLUMN!r} "
        "or a batch of uint8 images"
    )


__all__ = ["request_images"]
