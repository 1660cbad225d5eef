"""Decoding the raw TIFFs once into model-size arrays, cached under ``data/processed``.

A cache file is named by a key over the raw files' names, sizes and modification times plus the
settings and ``CACHE_VERSION``: listing and ``stat``-ing ~11k files takes milliseconds, so every
run can check it and a changed data set or model size rebuilds by itself. The stronger *content*
fingerprint (SHA-256 of every byte) costs a full read, so it is computed while decoding anyway and
stored in the cache; runs record it as ``data_fingerprint`` and fold files are named by it.

Full-resolution masks are kept bit-packed (30 kB per image) because scores are computed at
580x420, not at model size.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np

from nerveseg.data.raw import DataError, decode_image, decode_mask, index_test, index_train, read_bytes
from nerveseg.errors import NervesegError
from nerveseg.io_utils import atomic_save_npz, check_outside, sha256_file
from nerveseg.logs import progress_bar
from nerveseg.paths import ORIG_HEIGHT, ORIG_WIDTH, PROCESSED_DIR, RAW_DIR

CACHE_VERSION = 1  # bump when decoding, resizing or the descriptors change
HIST_GRID = (6, 8)  # blocks (rows, cols) of the near-duplicate descriptor: ~70x72 pixels each at 420x580
HIST_BINS = 32  # grey levels per block histogram (8 levels each)
FULL_PIXELS = ORIG_HEIGHT * ORIG_WIDTH

T = TypeVar("T")
R = TypeVar("R")


@dataclass(eq=False)
class PreparedData:
    """The training set in index order (subject, image), at model size plus packed full-res masks.

    ``descriptors`` holds block-histogram counts of the full-resolution images (see
    ``block_histograms``) for near-duplicate search; it is None for hand-made instances.
    """

    ids: np.ndarray  # str, "1_1"
    subjects: np.ndarray  # int64
    images: np.ndarray  # (N, h, w) uint8
    masks: np.ndarray  # (N, h, w) uint8 in {0, 1}
    masks_full_packed: np.ndarray  # (N, 420*580/8) uint8, np.packbits of the flattened full-res masks
    fingerprint: str  # SHA-256 over the raw files' contents, see _content_fingerprint
    descriptors: np.ndarray | None = None  # (N, D) uint16 block-histogram counts

    def __len__(self) -> int:
        return len(self.ids)

    @cached_property
    def mask_areas(self) -> np.ndarray:
        """(N,) int64 mask area in pixels at full resolution (exact: counted on the packed bits)."""
        return np.bitwise_count(self.masks_full_packed).sum(axis=1, dtype=np.int64)

    @property
    def has_mask(self) -> np.ndarray:
        """(N,) bool: the full-resolution mask is not empty (model-size masks can lose tiny nerves)."""
        return self.mask_areas > 0

    def full_masks(self, index: np.ndarray | slice | int) -> np.ndarray:
        """Full-resolution masks (n, 420, 580) uint8 in {0, 1} (or (420, 580) for an int index)."""
        packed = self.masks_full_packed[index]
        unpacked = np.unpackbits(packed, axis=-1, count=FULL_PIXELS)
        return unpacked.reshape((*packed.shape[:-1], ORIG_HEIGHT, ORIG_WIDTH))


@dataclass(eq=False)
class TestData:
    """The test images in id order at model size."""

    ids: np.ndarray  # int64
    images: np.ndarray  # (N, h, w) uint8
    fingerprint: str = ""  # SHA-256 over the raw files' contents

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class CacheStatus:
    """Where the arrays came from, for the audit and for logging."""

    path: Path
    hit: bool
    seconds: float  # time to load (hit) or to build (miss)
    verified: bool = False  # the raw files were re-hashed (--verify) and matched the cached fingerprint
    changed: bool = False  # --verify found content changed under an unchanged name/size/mtime: rebuilt


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-averaging downscale (no aliasing of the speckle pattern); returns a new array."""
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a binary mask (0/1 or 0/255) by area coverage and re-binarise: uint8 {0, 1}.

    A model-size pixel is foreground when at least half of the full-size pixels it covers are.
    """
    coverage = cv2.resize((mask > 0).astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
    return (coverage >= 0.5).astype(np.uint8)


def block_histograms(image: np.ndarray, grid: tuple[int, int] = HIST_GRID, bins: int = HIST_BINS) -> np.ndarray:
    """Concatenated per-block grey-level histograms of one uint8 image: (grid rows * cols * bins,) uint16.

    Near-identical ultrasound frames have near-identical local brightness distributions even when
    speckle noise or a shift of a few pixels makes pixel-wise differences large; the block grid keeps
    enough layout to tell different views apart. Compared with cosine distance in ``audit``.
    """
    height, width = image.shape
    rows = np.arange(height) * grid[0] // height
    cols = np.arange(width) * grid[1] // width
    block = (rows[:, None] * grid[1] + cols[None, :]) * bins
    level = image >> (8 - int(np.log2(bins)))
    return np.bincount((block + level).ravel(), minlength=grid[0] * grid[1] * bins).astype(np.uint16)


def _decode_train_pair(
    paths: tuple[Path, Path], height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str, str]:
    """Read, hash, validate and shrink one image/mask pair (runs in a worker thread)."""
    image_path, mask_path = paths
    image_bytes, mask_bytes = read_bytes(image_path), read_bytes(mask_path)
    image, mask = decode_image(image_bytes, image_path), decode_mask(mask_bytes, mask_path)
    return (
        resize_image(image, height, width),
        resize_mask(mask, height, width),
        np.packbits(mask.ravel()),
        block_histograms(image),
        hashlib.sha256(image_bytes).hexdigest(),
        hashlib.sha256(mask_bytes).hexdigest(),
    )


def _decode_test_image(path: Path, height: int, width: int) -> tuple[np.ndarray, str]:
    data = read_bytes(path)
    return resize_image(decode_image(data, path), height, width), hashlib.sha256(data).hexdigest()


def _parallel_map(
    function: Callable[[T], R], items: Sequence[T], workers: int | None, progress: bool, desc: str
) -> list[R]:
    """``function`` over ``items`` in order, on threads (cv2 decoding and hashing release the GIL).

    On the first error the queued items are cancelled, so a bad file stops the run at once. OpenCV's
    own log lines for bad TIFFs are muted meanwhile: the ``DataError`` says it in one line.
    """
    if workers is not None and workers < 1:
        raise NervesegError(f"workers={workers}; expected at least 1 (or None for all cores)")
    workers = workers or len(os.sched_getaffinity(0))
    log_level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            try:
                results = pool.map(function, items)
                return list(progress_bar(results, total=len(items), desc=desc, unit="img", disable=not progress))
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        cv2.utils.logging.setLogLevel(log_level)


def fingerprint(*arrays: np.ndarray) -> str:
    """SHA-256 of the arrays' shapes, dtypes and bytes: equal data, equal fingerprint, whatever the layout (the
    fingerprint of data read whole into arrays: the ISBI and toy tasks')."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _content_fingerprint(paths: Iterable[Path], digests: Iterable[str]) -> str:
    """SHA-256 over "name digest" lines in index order: any changed byte, rename or reordering changes it."""
    lines = "".join(f"{Path(p).name} {d}\n" for p, d in zip(paths, digests, strict=True))
    return hashlib.sha256(lines.encode()).hexdigest()


def _stat_key(kind: str, paths: Iterable[Path], height: int, width: int) -> str:
    """Cheap cache key: names, sizes and mtimes of the raw files, plus settings and ``CACHE_VERSION``."""
    digest = hashlib.sha256(f"{kind} v{CACHE_VERSION} {height}x{width}\n".encode())
    for path in paths:
        try:
            info = path.stat()
        except OSError as err:  # a symbolic link into nothing, or a loop; a file removed since the listing
            raise DataError(f"{path}: cannot be read ({err.strerror}); fix or remove the file") from None
        digest.update(f"{path.name}\t{info.st_size}\t{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _load_or_build(
    kind: str,
    paths: list[Path],
    cache_dir: Path,
    height: int,
    width: int,
    build: Callable[[], dict[str, np.ndarray]],
    *,
    verify: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], CacheStatus]:
    """Arrays from ``cache_dir/<kind>_<h>x<w>_<key>.npz`` when the key matches, else ``build()`` and save.

    The key trusts names, sizes and mtimes; ``verify`` re-hashes every raw file on a hit and rebuilds
    when the content fingerprint differs (a file changed in place with its mtime kept). An unreadable
    or foreign cache file is treated as a miss; after a rebuild, older caches of the same kind and size
    are removed (they can only be hit again if the old data comes back).
    """
    if height < 1 or width < 1:
        raise NervesegError(
            f"model size {height}x{width} (rows x cols) must be positive; pass e.g. --height 64 --width 80"
        )
    key = _stat_key(kind, paths, height, width)
    path = Path(cache_dir) / f"{kind}_{height}x{width}_{key[:16]}.npz"
    start = time.perf_counter()
    changed = False
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
            hit = str(arrays.pop("key")) == key
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            hit = False  # rebuilt below
        if hit and not verify:
            return arrays, CacheStatus(path, hit=True, seconds=time.perf_counter() - start)
        if hit:
            digests = _parallel_map(sha256_file, paths, workers, progress, f"verify {kind}")
            if _content_fingerprint(paths, digests) == str(arrays["fingerprint"]):
                return arrays, CacheStatus(path, hit=True, seconds=time.perf_counter() - start, verified=True)
            changed = True
    arrays = build()
    atomic_save_npz(path, key=np.array(key), **arrays)
    for stale in path.parent.glob(f"{kind}_{height}x{width}_*.npz"):
        if stale != path:
            stale.unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    return arrays, CacheStatus(path, hit=False, seconds=seconds, verified=verify, changed=changed)


@dataclass(frozen=True)
class _DecodeJob:
    """One cache kind: its raw files (the cache key), the items decoded in parallel, how one item is
    decoded at (height, width), and how the decoded items become the cached arrays."""

    kind: str
    files: list[Path]
    items: Sequence[Any]
    decode: Callable[..., Any]
    assemble: Callable[[list[Any]], dict[str, np.ndarray]]


def _cached(
    job: _DecodeJob, cache_dir: Path, height: int, width: int, *, workers: int | None, progress: bool, verify: bool
) -> tuple[dict[str, Any], CacheStatus]:
    """The train/test cache logic once: load ``job``'s arrays, or decode every item and save them."""

    def build() -> dict[str, np.ndarray]:
        decode = partial(job.decode, height=height, width=width)
        return job.assemble(_parallel_map(decode, job.items, workers, progress, job.kind))

    arrays, status = _load_or_build(
        job.kind, job.files, cache_dir, height, width, build, verify=verify, workers=workers, progress=progress
    )
    return {**arrays, "fingerprint": str(arrays["fingerprint"])}, status


def _train_files(raw_dir: Path) -> tuple[Any, list[tuple[Path, Path]], list[Path]]:
    """The training index, its (image, mask) pairs and the files in fingerprint order: image, mask, image, ..."""
    index = index_train(raw_dir)
    pairs = list(zip(index["image_path"], index["mask_path"], strict=True))
    return index, pairs, [path for pair in pairs for path in pair]


def _cached_fingerprint(kind: str, files: list[Path], cache_dir: Path) -> str | None:
    """The content fingerprint kept in a cache of ``kind`` (at any model size) whose key still matches ``files``'
    names, sizes and mtimes; None when there is none. Reads two small members of the archive, never the arrays."""
    for path in sorted(Path(cache_dir).glob(f"{kind}_*.npz")):
        match = re.fullmatch(rf"{kind}_(\d+)x(\d+)_[0-9a-f]{{16}}\.npz", path.name)  # _load_or_build's names
        if match is None:
            continue
        key = _stat_key(kind, files, int(match[1]), int(match[2]))
        if not path.name.endswith(f"_{key[:16]}.npz"):
            continue
        try:
            with np.load(path, allow_pickle=False) as archive:
                if str(archive["key"]) == key:
                    return str(archive["fingerprint"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            continue  # unreadable: hash the files instead
    return None


def train_fingerprint(
    raw_dir: Path = RAW_DIR, cache_dir: Path = PROCESSED_DIR, *, workers: int | None = None, progress: bool = True
) -> str:
    """The ``data_fingerprint`` a CV trained on ``raw_dir``'s training set records, without decoding an image.

    Choosing which run may predict this data compares it with the runs' tags. It is read from a cache in
    ``cache_dir`` that still matches the raw files (any model size: the fingerprint does not depend on it), else
    computed by hashing every file, a full read of the set (as ``prepare_data.py --verify`` does). Nothing is written.
    """
    _, _, files = _train_files(raw_dir)
    cached = _cached_fingerprint("train", files, cache_dir)
    if cached is not None:
        return cached
    return _content_fingerprint(files, _parallel_map(sha256_file, files, workers, progress, "fingerprint train"))


def load_or_build_train(
    raw_dir: Path = RAW_DIR,
    cache_dir: Path = PROCESSED_DIR,
    height: int = 64,
    width: int = 80,
    workers: int | None = None,
    progress: bool = True,
    verify: bool = False,
) -> tuple[PreparedData, CacheStatus]:
    """``prepare_train`` that also says whether the cache was hit (for the audit); ``verify`` re-hashes
    the raw files on a hit and rebuilds when their content changed."""
    check_outside(cache_dir, raw_dir, "cache folder")
    index, pairs, files = _train_files(raw_dir)

    def assemble(decoded: list[Any]) -> dict[str, np.ndarray]:
        images, masks, packed, descriptors, image_digests, mask_digests = zip(*decoded, strict=True)
        digests = [d for pair in zip(image_digests, mask_digests, strict=True) for d in pair]
        return {
            "ids": index["id"].to_numpy(dtype=str),
            "subjects": index["subject"].to_numpy(dtype=np.int64),
            "images": np.stack(images),
            "masks": np.stack(masks),
            "masks_full_packed": np.stack(packed),
            "descriptors": np.stack(descriptors),
            "fingerprint": np.array(_content_fingerprint(files, digests)),
        }

    job = _DecodeJob("train", files, pairs, _decode_train_pair, assemble)
    arrays, status = _cached(job, cache_dir, height, width, workers=workers, progress=progress, verify=verify)
    return PreparedData(**arrays), status


def prepare_train(
    raw_dir: Path = RAW_DIR,
    cache_dir: Path = PROCESSED_DIR,
    height: int = 64,
    width: int = 80,
    workers: int | None = None,
    progress: bool = True,
) -> PreparedData:
    """The validated training set at ``height`` x ``width``, from the cache when the raw files are unchanged."""
    return load_or_build_train(raw_dir, cache_dir, height, width, workers, progress)[0]


def load_or_build_test(
    raw_dir: Path = RAW_DIR,
    cache_dir: Path = PROCESSED_DIR,
    height: int = 64,
    width: int = 80,
    workers: int | None = None,
    progress: bool = True,
    verify: bool = False,
) -> tuple[TestData, CacheStatus]:
    """``prepare_test`` that also says whether the cache was hit; ``verify`` as for the training set."""
    check_outside(cache_dir, raw_dir, "cache folder")
    index = index_test(raw_dir)
    paths = list(index["image_path"])

    def assemble(decoded: list[Any]) -> dict[str, np.ndarray]:
        images, digests = zip(*decoded, strict=True)
        return {
            "ids": index["id"].to_numpy(dtype=np.int64),
            "images": np.stack(images),
            "fingerprint": np.array(_content_fingerprint(paths, digests)),
        }

    job = _DecodeJob("test", paths, paths, _decode_test_image, assemble)
    arrays, status = _cached(job, cache_dir, height, width, workers=workers, progress=progress, verify=verify)
    return TestData(**arrays), status


def prepare_test(
    raw_dir: Path = RAW_DIR,
    cache_dir: Path = PROCESSED_DIR,
    height: int = 64,
    width: int = 80,
    workers: int | None = None,
    progress: bool = True,
) -> TestData:
    """The validated test images at ``height`` x ``width``, cached like the training set."""
    return load_or_build_test(raw_dir, cache_dir, height, width, workers, progress)[0]
