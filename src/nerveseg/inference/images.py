"""New images in, pictures out: decode any TIFF/PNG/JPEG to 8-bit grayscale, render masks and outlines.

Kaggle's frames are 8-bit grayscale TIFFs at 580x420 (``data.raw`` insists on exactly that); images a
user brings may be RGB, another size or another format. They are decoded here with OpenCV, the same
decoder the training cache uses, so a Kaggle frame decodes to the same pixels either way.

Every inference path (``predict.py``, the served model) reads through :func:`decode_gray`, which, like the
training reader, refuses a hostile file from its header before a pixel is decoded: the signature must say
TIFF, PNG or JPEG, and the header must describe one 8-bit image of at most ``MAX_IMAGE_PIXELS`` with 1-4
channels. A TIFF's header is read by ``data.raw.tiff_header`` (tifffile reads only the tags); PNG's IHDR
and JPEG's frame header are a few fixed fields, read here. So a 272-byte file claiming 100000x100000
pixels is one ``ImageError`` line, not an OpenCV assertion or gigabytes of memory.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from nerveseg.data.raw import file_kind, tiff_header
from nerveseg.errors import NervesegError, first_line
from nerveseg.io_utils import read_bounded

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
OUTLINE_BGR = (0, 255, 255)  # yellow: visible on grayscale ultrasound
MAX_IMAGE_PIXELS = 8192 * 8192  # 67 MP: far above any ultrasound frame, and 268 MB decoded as RGBA at most
MAX_IMAGE_FILE_BYTES = 4 * MAX_IMAGE_PIXELS + (4 << 20)  # uncompressed RGBA at the largest size, plus tags
ACCEPTED_KINDS = ("TIFF", "PNG", "JPEG")
EXPECTED = "expected a TIFF, PNG or JPEG file"
# JPEG markers that start a frame header (SOF0-15 less DHT, JPG and DAC), and those without a length field
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_BARE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel (3: palette indices)


class ImageError(NervesegError):
    """One input image cannot be used (empty, not an image, an unsupported pixel type)."""


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says, read without decoding a pixel."""

    kind: str  # "TIFF", "PNG" or "JPEG"
    width: int
    height: int
    channels: int
    bits: int  # per sample
    sample: str = "uint"  # "uint", "int" or "float"
    frames: int = 1  # TIFF pages, APNG frames


def _png_header(data: bytes) -> ImageHeader | None:
    """IHDR (always the first chunk) and, before the image data, an APNG's frame count (``acTL``)."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        return None
    width, height, bits, colour = struct.unpack_from(">IIBB", data, 16)
    if colour not in _PNG_CHANNELS:
        return None
    frames, pos = 1, 8
    while pos + 12 <= len(data):
        length, chunk = struct.unpack_from(">I4s", data, pos)
        if chunk == b"acTL" and length >= 8:  # the loop leaves room for its first field
            (frames,) = struct.unpack_from(">I", data, pos + 8)
        if chunk in (b"IDAT", b"IEND"):
            break
        pos += 12 + length
    return ImageHeader("PNG", width, height, _PNG_CHANNELS[colour], bits, frames=frames)


def _jpeg_header(data: bytes) -> ImageHeader | None:
    """The frame header (SOFn: precision, height, width, components), found by walking the markers before it."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_BARE_MARKERS:
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if marker in (0xD8, 0xD9, 0xDA) or length < 2:  # a second start, the end or a scan before any frame
            return None
        if marker in _JPEG_FRAME_MARKERS:
            if pos + 10 > len(data):
                return None
            bits, height, width, components = struct.unpack_from(">BHHB", data, pos + 4)
            return ImageHeader("JPEG", width, height, components, bits)
        pos += 2 + length
    return None


def _tiff_image_header(data: bytes) -> ImageHeader | None:
    header = tiff_header(data)
    if header is None:
        return None
    dtype = header.dtype
    sample = {"u": "uint", "b": "uint", "i": "int", "f": "float"}.get(dtype.kind, "other") if dtype else "other"
    bits = 1 if dtype is not None and dtype.kind == "b" else (dtype.itemsize * 8 if dtype is not None else 0)
    return ImageHeader("TIFF", header.width, header.height, header.channels, bits, sample, header.pages)


_HEADER_READERS = {"TIFF": _tiff_image_header, "PNG": _png_header, "JPEG": _jpeg_header}


def read_header(data: bytes, name: str) -> ImageHeader:
    """The header of a TIFF, PNG or JPEG file's bytes, checked: one 8-bit image, 1-4 channels, at most
    ``MAX_IMAGE_PIXELS``. Raises ``ImageError`` naming ``name``; no pixel is decoded."""
    kind = file_kind(data)
    if kind not in ACCEPTED_KINDS:
        what = f"a {kind} file" if kind is not None else "no TIFF, PNG or JPEG signature"
        raise ImageError(f"{name}: is not a readable image ({what}); {EXPECTED}")
    header = _HEADER_READERS[kind](data)
    if header is None:
        raise ImageError(f"{name}: is not a readable {kind} (corrupt or truncated header); {EXPECTED}")
    if header.frames != 1:
        unit = "pages" if kind == "TIFF" else "frames"
        raise ImageError(f"{name}: holds {header.frames} {kind} {unit}; expected one image per file")
    if header.width < 1 or header.height < 1 or header.width * header.height > MAX_IMAGE_PIXELS:
        raise ImageError(
            f"{name}: its {kind} header says {header.width}x{header.height} pixels (width x height); "
            f"expected 1 to {MAX_IMAGE_PIXELS:,} pixels, resize it first"
        )
    if header.sample != "uint" or header.bits > 8:
        raise ImageError(
            f"{name}: has {header.bits}-bit {header.sample} samples; expected 8-bit gray or RGB "
            "(the models were trained on 8-bit intensities)"
        )
    if not 1 <= header.channels <= 4:
        raise ImageError(f"{name}: has {header.channels} channels; expected gray (1), RGB (3) or RGBA (4)")
    return header


def read_image_file(path: Path) -> bytes:
    """A file's bytes for ``decode_gray``; a file larger than any image it accepts is refused unread."""
    too_large = (
        f"larger than any image of at most {MAX_IMAGE_PIXELS:,} pixels ({MAX_IMAGE_FILE_BYTES / 1e6:.0f} MB); "
        "resize it first"
    )
    return read_bounded(path, MAX_IMAGE_FILE_BYTES, too_large, ImageError)


def decode_gray(data: bytes, name: str) -> np.ndarray:
    """(h, w) uint8 from the bytes of a TIFF, PNG or JPEG file: gray as it is, BGR(A) converted to gray.

    ``name`` only names the image in the error. The header is checked first (:func:`read_header`);
    16-bit or float images are refused rather than rescaled, because the models were trained on 8-bit
    intensities.
    """
    if not data:
        raise ImageError(f"{name}: is empty (0 bytes); {EXPECTED}")
    header = read_header(data, name)
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # the ImageError below says it in one line
    try:
        array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as err:  # a header OpenCV reads otherwise than the check above
        raise ImageError(f"{name}: is not a readable {header.kind} ({_first_line(err)}); {EXPECTED}") from err
    if array is None or array.size == 0:
        raise ImageError(f"{name}: is not a readable {header.kind} (corrupt or truncated); {EXPECTED}")
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


def _first_line(err: BaseException) -> str:
    """``errors.first_line`` without the decoder's "... error: " prefix, at most 200 characters."""
    return first_line(err).split(" error: ", 1)[-1][:200]


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


Shape = tuple[int, int]  # an image's (height, width)


def gray_images(images: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    """Every image as (h, w) uint8 gray (RGB converted); an empty batch is a one-line error."""
    if len(images) == 0:
        raise ImageError("the batch holds no images; send at least one")
    return [as_gray(image, f"image {i}") for i, image in enumerate(images)]


__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_IMAGE_PIXELS",
    "ImageError",
    "ImageHeader",
    "Shape",
    "as_gray",
    "decode_all",
    "decode_gray",
    "encode_mask_png",
    "encode_png",
    "gray_images",
    "overlay_png",
    "read_header",
    "read_image_file",
]
