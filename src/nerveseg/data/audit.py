"""What the training data looks like, and which labels contradict each other.

Within one subject some frames are near-identical while one has a mask and the other has none;
a model cannot satisfy both, and whichever it follows, one of the two scores 0. Top solutions found
these pairs by comparing block histograms with cosine distance and removed one member before
training. ``prepare`` is the typed function behind ``src/prepare_data.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from nerveseg.data.cache import CacheStatus, PreparedData, block_histograms, load_or_build_test, load_or_build_train
from nerveseg.data.folds import load_or_create_folds
from nerveseg.errors import NervesegError
from nerveseg.paths import FOLDS_DIR, ORIG_HEIGHT, ORIG_WIDTH, PROCESSED_DIR, RAW_DIR

# Calibration (6x8 blocks, 32 grey levels): a real frame against itself with speckle-level noise (sigma 4)
# or a 3-pixel shift: <= 0.006; distinct real frames of one view (1_1 vs 1_7): 0.05, other real frames
# >= 0.11. Synthetic set: planted contradictory copies ~0.0005, its ordinary frames >= 0.011.
# 0.008 keeps only near-copies; check the pairs the audit lists on the full data set before relying on it.
DEFAULT_MAX_DISTANCE = 0.008


def find_contradictory_pairs(data: PreparedData, max_distance: float = DEFAULT_MAX_DISTANCE) -> pd.DataFrame:
    """Near-identical image pairs of one subject where exactly one mask is empty.

    Columns ``id_a``, ``id_b`` (in index order), ``distance`` (cosine distance of the L2-normalised
    block histograms), ``empty_id``. Uses the full-resolution descriptors stored in the cache, so it
    takes well under a second for the full set and needs no caching of its own.
    """
    if not 0 <= max_distance <= 1:
        raise NervesegError(
            f"max_distance={max_distance}; expected a cosine distance between 0 and 1, e.g. {DEFAULT_MAX_DISTANCE}"
        )
    if data.descriptors is not None:
        counts = data.descriptors
    else:  # hand-made PreparedData: describe the model-size images (distances are then not calibrated)
        counts = np.stack([block_histograms(image) for image in data.images])
    vectors = counts.astype(np.float64)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    has_mask = data.has_mask
    rows = []
    with threadpool_limits(1, user_api="blas"):  # many tiny products: BLAS threads only contend (up to 60x slower)
        for subject in np.unique(data.subjects):
            members = np.flatnonzero(data.subjects == subject)
            distance = 1.0 - vectors[members] @ vectors[members].T
            conflict = has_mask[members][:, None] != has_mask[members][None, :]
            for a, b in zip(*np.nonzero(np.triu(conflict & (distance <= max_distance), k=1)), strict=True):
                i, j = members[a], members[b]
                empty = str(data.ids[j if has_mask[i] else i])
                rows.append((str(data.ids[i]), str(data.ids[j]), max(float(distance[a, b]), 0.0), empty))
    return pd.DataFrame(rows, columns=["id_a", "id_b", "distance", "empty_id"])


def contradictory_ids(data: PreparedData, max_distance: float = DEFAULT_MAX_DISTANCE) -> set[str]:
    """Ids to leave out of TRAINING when ``drop_contradictory`` is on: the empty member of each pair.

    The empty member is the one dropped (as most top solutions did): missing an annotation is the
    likelier mistake than drawing a nerve that is not there, and an empty label on a frame that shows
    the nerve teaches the model to miss it. Validation folds keep every image, so scores stay comparable.
    """
    return set(find_contradictory_pairs(data, max_distance)["empty_id"])


def _subject_table(data: PreparedData, columns: int = 4) -> list[str]:
    """Empty share per subject, several subjects per line."""
    frame = pd.DataFrame({"subject": data.subjects, "empty": ~data.has_mask})
    stats = frame.groupby("subject")["empty"].agg(["size", "mean"])
    cells = [f"{s:>4} {int(r['size']):>4} {r['mean']:5.2f}" for s, r in stats.iterrows()]
    header = "   ".join(["subj    n empty"] * min(columns, len(cells)))
    return [header] + ["   ".join(cells[k : k + columns]) for k in range(0, len(cells), columns)]


def audit_report(data: PreparedData, pairs: pd.DataFrame, *, details: Mapping[str, str] | None = None) -> str:
    """A plain-text summary of the training set; ``details`` adds lines such as the cache path."""
    areas = data.mask_areas[data.has_mask]
    lines = [
        f"images: {len(data)}   subjects: {len(np.unique(data.subjects))}",
        f"image size: {ORIG_HEIGHT}x{ORIG_WIDTH}   model size: {data.images.shape[1]}x{data.images.shape[2]} "
        "(rows x cols)",
        f"empty masks: {int((~data.has_mask).sum())} ({(~data.has_mask).mean():.1%})",
    ]
    if len(areas):
        q = np.percentile(areas, [0, 5, 50, 95, 100]).astype(int)
        lines.append(f"mask area at full size (pixels): min {q[0]}, 5% {q[1]}, median {q[2]}, 95% {q[3]}, max {q[4]}")
    lines.append(f"fingerprint: {data.fingerprint}")
    lines += [f"{key}: {value}" for key, value in (details or {}).items()]
    lines += ["empty share per subject:", *_subject_table(data)]
    lines.append(f"contradictory pairs (near-identical, one mask empty): {len(pairs)}")
    lines += [f"  {r.id_a:>8} {r.id_b:>8}  distance {r.distance:.4f}  empty {r.empty_id}" for r in pairs.itertuples()]
    return "\n".join(lines)


@dataclass
class PrepareResult:
    """Everything ``prepare`` produced, for the CLI and for tests."""

    data: PreparedData
    cache: CacheStatus
    test_cache: CacheStatus | None
    folds: np.ndarray
    folds_path: Path
    pairs: pd.DataFrame
    report: str


def prepare(
    raw_dir: Path = RAW_DIR,
    cache_dir: Path = PROCESSED_DIR,
    folds_dir: Path = FOLDS_DIR,
    height: int = 64,
    width: int = 80,
    n_folds: int = 5,
    seed: int = 42,
    workers: int | None = None,
    progress: bool = True,
    verify: bool = False,
) -> PrepareResult:
    """Build or load the train cache (and the test cache when ``raw_dir/test`` exists), write the
    fold file, find contradictory pairs and write the audit: everything a training run reads. ``verify``
    re-hashes the raw files and rebuilds a cache whose data changed in place."""
    data, cache = load_or_build_train(raw_dir, cache_dir, height, width, workers, progress, verify)
    test_cache = None
    test_line = "none (no test folder)"
    if (Path(raw_dir) / "test").exists():
        test, test_cache = load_or_build_test(raw_dir, cache_dir, height, width, workers, progress, verify)
        test_line = f"{len(test)} images, fingerprint {test.fingerprint}"
    folds, path = load_or_create_folds(data, n_folds, seed, folds_dir)
    pairs = find_contradictory_pairs(data)
    details = {"train cache": _describe(cache), "test": test_line}
    if test_cache is not None:
        details["test cache"] = _describe(test_cache)
    details["folds"] = f"{path} (k={n_folds}, seed={seed}, images per fold {np.bincount(folds).tolist()})"
    report = audit_report(data, pairs, details=details)
    return PrepareResult(data, cache, test_cache, folds, path, pairs, report)


def _describe(status: CacheStatus) -> str:
    verb = "hit, loaded" if status.hit else "miss, built"
    if status.changed:
        verb = "raw content changed (verified by hash), rebuilt"
    elif status.verified:
        verb += ", raw files verified by hash"
    return f"{status.path} ({verb} in {status.seconds:.2f} s)"
