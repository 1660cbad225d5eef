"""The served model's request and answer as tables: images from the request, the answer's columns from segmentations.

The pyfunc model (``track.model_package``) wraps a task's ``served`` model behind MLflow's interface; what it reads,
and the nerve task's answer, are decided here, with the column names of ``nerveseg.names``, which ``run.predict``
sends and reads as any HTTP client would. A request is a DataFrame with a column ``image`` of encoded image files
(TIFF, PNG, JPEG; gray or RGB; any size; base64 in JSON); in process a list or array of uint8 images is accepted
too. The nerve task's answer has one row per image: ``present``, ``probability``, ``area`` and ``rle`` (plus
``mask_png`` when asked); ISBI 2012's is ``tasks.isbi2012.serving``'s. A malformed request is a one-line
``NervesegError`` naming the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nerveseg import names
from nerveseg.errors import NervesegError
from nerveseg.inference.images import decode_all, encode_mask_png

if TYPE_CHECKING:
    from nerveseg.inference.segmenter import Segmentation


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


def segmentations_frame(results: Sequence[Segmentation], with_masks: bool) -> pd.DataFrame:
    """The output columns from ``Segmenter.segment``'s results (``mask_png`` only ``with_masks``)."""
    frame = pd.DataFrame(
        {
            names.PRESENT_COLUMN: [r.present for r in results],
            names.PROBABILITY_COLUMN: [r.probability for r in results],
            names.AREA_COLUMN: [r.area for r in results],
            names.RLE_COLUMN: [r.rle for r in results],
        }
    )
    if with_masks:
        frame[names.MASK_COLUMN] = [encode_mask_png(r.mask) for r in results]
    return frame


__all__ = ["request_images", "segmentations_frame"]
