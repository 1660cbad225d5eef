"""New images in, pictures out: decode any TIFF/PNG/JPEG to 8-bit grayscale, render masks and outlines.

Kaggle's frames are 8-bit grayscale TIFFs at 580x420 (``data.raw`` insists on exactly that); images a
user brings may be RGB, another size or another format. They are decoded here with OpenCV, the same
decoder the training cache uses, so a Kaggle frame decodes to the same pixels either way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from nerveseg.errors import NervesegError

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
OUTLINE_BGR = (0, 255, 255)  # yellow: visible on grayscale ultrasound


class ImageError(NervesegError):
    """One input image cannot be used (empty, not an image, an unsupported pixel type)."""


def decode_gray(data: bytes, name: str) -> np.ndarray:
    """(h, w) uint8 from the bytes of a TIFF, PNG or JPEG file: gray as it is, BGR(A) converted to gray.

    ``name`` only names the image in the error. 16-bit or float images are refused rather than
    rescaled, because the models were trained on 8-bit intensities.
    """
    if not data:
        raise ImageError(f"{name}: is empty (0 bytes); expected a TIFF, PNG or JPEG image file")
    array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or array.size == 0:
        raise ImageError(f"{name}: is not a readable image; expected a TIFF, PNG or JPEG file")
    if array.dtype != np.uint8:
        raise ImageError(f"{name}: has pixel type {array.dtype}; expected 8-bit (uint8) gray or RGB")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[2] in (3, 4):
        code = cv2.COLOR_BGR2GRAY if array.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
        array = cv2.cvtColor(array, code)
    if array.ndim != 2:
        raise ImageError(f"{name}: has shape {array.shape}; expected a gray or RGB image")
    return array


def decode_all(files: Sequence[tuple[bytes, str]]) -> list[np.ndarray]:
    """``decode_gray`` of every ``(bytes, name)``, in order, on threads: OpenCV releases the GIL while it
    decodes, so a batch decodes on every core instead of one (the first bad file raises its ImageError)."""
    if len(files) < 2:
        return [decode_gray(data, name) for data, name in files]
    with ThreadPoolExecutor(max_workers=min(len(files), len(os.sched_getaffinity(0)))) as pool:
        return list(pool.map(lambda file: decode_gray(*file), files))


def as_gray(image: np.ndarray, name: str = "image") -> np.ndarray:
    """An in-memory uint8 image (h, w), (h, w, 1), (h, w, 3) RGB or (h, w, 4) RGBA as (h, w) gray."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ImageError(f"{name}: has pixel type {image.dtype}; expected uint8")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    elif image.ndim == 3 and image.shape[2] in (3, 4):
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY if image.shape[2] == 3 else cv2.COLOR_RGBA2GRAY)
    if image.ndim != 2 or min(image.shape) < 1:
        raise ImageError(f"{name}: has shape {image.shape}; expected (h, w) gray or (h, w, 3) RGB")
    return image


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a uint8 image (deterministic: the same pixels give the same bytes)."""
    ok, buffer = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {image.shape} {image.dtype} image as PNG")
    return buffer.tobytes()


def encode_mask_png(mask: np.ndarray) -> bytes:
    """A binary mask as a PNG of 0 and 255."""
    return encode_png((np.asarray(mask) != 0).astype(np.uint8) * 255)


def overlay_png(gray: np.ndarray, mask: np.ndarray) -> bytes:
    """The image in colour with the mask's outline drawn on it, as PNG."""
    picture = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    contours, _ = cv2.findContours((mask != 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(picture, contours, -1, OUTLINE_BGR, thickness=max(1, round(min(gray.shape) / 200)))
    return encode_png(picture)


__all__ = [
    "IMAGE_SUFFIXES",
    "ImageError",
    "as_gray",
    "decode_all",
    "decode_gray",
    "encode_mask_png",
    "encode_png",
    "overlay_png",
]
