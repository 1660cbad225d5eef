"""Synthetic brachial-plexus ultrasound in Kaggle's exact layout, so the pipeline can run without the real data.

The real competition data cannot live in this repository, yet every stage (indexing, caching, folds, training,
submission, scoring) must be exercised end to end. This module writes a stand-in that is *fair*, not merely
well-formed: the image statistics, the nerve's size/shape/position, the per-subject empty share, the slow drift
between consecutive frames and the contradictory near-duplicate pairs all follow what was measured on the 5635
real training masks (see ``../shared/real_sample/README.md``). Above all it is not trivially separable: the nerve
is a honeycomb pattern (bright rim and septa around dark fascicles) whose mean is close to the surrounding tissue,
bright fascia and dark vessels are everywhere, and whether a frame is labelled depends on how clearly the nerve
is in the imaging plane -- faded nerves appear on both sides of the annotator's cut-off, and the annotator is
inconsistent near it, as are hand-drawn outlines. An intensity threshold therefore scores no better than predicting
"empty" everywhere, while a U-Net can learn shape and context (a quick check with a small U-Net trained on 1620
frames closed about a third of the gap between the all-empty score and 1, about what U-Nets do on the real data).

How a frame is made (each step a small pure function in ``synthetic_anatomy``, ``synthetic_nerve`` and
``synthetic_frames``; this module writes the data set):

1. per subject, an *anatomy canvas* slightly larger than the frame: echogenicity of curved tissue layers with
   streaky texture, muscle bellies, bright fascia bands, dark vessels, 0-2 unlabelled nerve-like distractors; plus
   the subject's nerve (a honeycomb patch and its outline) and its per-subject empty share;
2. per frame, a slowly drifting state (probe translation/rotation/scale, a smooth elastic deformation, the nerve's
   own drift, its visibility, the label and the annotator's outline error); the nerve is blended in with that
   visibility, the artery pulsates;
3. the canvas is warped into the 580x420 frame (the mask with the same map), skin bands are added (they move with
   the probe, not the anatomy), multiplicative Rayleigh-like speckle is applied and the result is log-compressed
   to 8 bits like a scanner's display.

Everything derives from one ``numpy.random.SeedSequence``: one child per subject, so the output is byte-identical
for a seed whatever the number of worker processes.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from nerveseg.data.synthetic_anatomy import HEIGHT
from nerveseg.data.synthetic_frames import STYLES, render_subject
from nerveseg.errors import NervesegError
from nerveseg.logs import progress_bar

if TYPE_CHECKING:
    from tqdm import tqdm

# Kaggle's TIFFs: LZW, no predictor, one strip (cv2's default adds a horizontal predictor and 14-row strips).
TIFF_PARAMS = [
    cv2.IMWRITE_TIFF_COMPRESSION,
    cv2.IMWRITE_TIFF_COMPRESSION_LZW,
    cv2.IMWRITE_TIFF_PREDICTOR,
    cv2.IMWRITE_TIFF_PREDICTOR_NONE,
    cv2.IMWRITE_TIFF_ROWSPERSTRIP,
    HEIGHT,
]


# ---------------------------------------------------------------------------------------------------------------
# Writing a data set
# ---------------------------------------------------------------------------------------------------------------


def write_tiff(path: Path, array: np.ndarray) -> None:
    """Write an 8-bit single-channel TIFF exactly like Kaggle's: LZW, no predictor, one strip."""
    if not cv2.imwrite(str(path), array, TIFF_PARAMS):
        raise OSError(f"cv2 could not write {path}; check that the folder exists and the disk is not full")


@dataclasses.dataclass(frozen=True)
class _Job:
    """One subject to render and where its frames go (picklable, for the process pool)."""

    entropy: tuple[int, ...]
    image_paths: tuple[Path, ...]
    mask_paths: tuple[Path, ...]
    style: str


def _run_job(job: _Job) -> tuple[int, int]:
    """Render and write one subject; returns (frames written, frames labelled)."""
    labelled = 0
    frames = render_subject(np.random.SeedSequence(list(job.entropy)), len(job.image_paths), STYLES[job.style])
    for (image, mask), image_path, mask_path in zip(frames, job.image_paths, job.mask_paths, strict=True):
        write_tiff(image_path, image)
        write_tiff(mask_path, mask)
        labelled += bool(mask.any())
    return len(job.image_paths), labelled


def _init_worker() -> None:
    """Each worker renders one subject at a time: one OpenCV thread per process avoids oversubscription."""
    cv2.setNumThreads(1)


def _check_empty(folder: Path, what: str) -> None:
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise NervesegError(
            f"{what} folder {folder} is not empty; generate() never overwrites or mixes data sets: "
            f"delete or move it (e.g. `rm -r {folder}`) or choose another --out"
        )


def _check_count(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise NervesegError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _plan_jobs(
    seed: int,
    subjects: int,
    images_per_subject: int,
    test: int,
    dirs: tuple[Path, Path, Path],
    style: str,
) -> list[_Job]:
    """Split the work into per-subject jobs with their own seeds and output names (Kaggle's naming).

    Test frames come from further subjects (not in training, as in the competition) and get ids 1..test in a
    seeded random order, so neighbouring ids do not reveal a subject. ``dirs``: (train, test, test masks).
    """
    train_dir, test_dir, masks_dir = dirs
    jobs = [
        _Job(
            entropy=(seed, 0, subject),
            image_paths=tuple(train_dir / f"{subject}_{image}.tif" for image in range(1, images_per_subject + 1)),
            mask_paths=tuple(train_dir / f"{subject}_{image}_mask.tif" for image in range(1, images_per_subject + 1)),
            style=style,
        )
        for subject in range(1, subjects + 1)
    ]
    ids = np.random.default_rng(np.random.SeedSequence([seed, 2])).permutation(test) + 1
    for index, start in enumerate(range(0, test, images_per_subject)):
        chunk = [int(i) for i in ids[start : start + images_per_subject]]
        jobs.append(
            _Job(
                entropy=(seed, 1, index),
                image_paths=tuple(test_dir / f"{i}.tif" for i in chunk),
                mask_paths=tuple(masks_dir / f"{i}_mask.tif" for i in chunk),
                style=style,
            )
        )
    return jobs


TEST_SUBJECTS_FILE = "subjects.csv"  # beside the synthetic test masks: id,subject (for subject-level intervals)


def _write_test_subjects(jobs: list[_Job], first_subject: int, masks_dir: Path) -> None:
    """``masks_dir/subjects.csv``: which synthetic test subject (numbered after the training ones) each id shows."""
    rows = ["id,subject"]
    test_jobs = [job for job in jobs if job.entropy[1] == 1]
    for job in test_jobs:
        subject = first_subject + job.entropy[2]
        rows += [f"{path.name[: -len('_mask.tif')]},{subject}" for path in job.mask_paths]
    (masks_dir / TEST_SUBJECTS_FILE).write_text("\n".join(rows) + "\n")


def read_test_subjects(masks_dir: Path) -> dict[int, int] | None:
    """id -> subject from ``masks_dir/subjects.csv`` (written by ``generate``), or None when there is none."""
    path = Path(masks_dir) / TEST_SUBJECTS_FILE
    if not path.is_file():
        return None
    try:
        rows = [line.split(",") for line in path.read_text().splitlines()[1:] if line.strip()]
        return {int(image_id): int(subject) for image_id, subject in rows}
    except ValueError as err:
        raise NervesegError(
            f"{path} is not an id,subject table ({err}); delete it or regenerate the synthetic set"
        ) from err


def _collect(results: Iterable[tuple[int, int]], bar: tqdm) -> tuple[int, int]:
    """Sum (frames, labelled) over finished jobs, advancing the progress bar."""
    done = labelled = 0
    for n, k in results:
        done, labelled = done + n, labelled + k
        bar.update(n)
        bar.set_postfix(empty_share=f"{1 - labelled / done:.2f}")
    return done, labelled


def _execute(jobs: list[_Job], workers: int, progress: bool) -> tuple[int, int]:
    """Run the jobs (in-process or in a spawn-started pool), progress on stderr; returns (images, labelled)."""
    total = sum(len(job.image_paths) for job in jobs)
    with progress_bar(total=total, desc="synthetic", unit="img", disable=not progress, file=sys.stderr) as bar:
        if workers <= 1:
            return _collect(map(_run_job, jobs), bar)
        # spawn, not fork: the caller may have TensorFlow loaded, whose threads do not survive a fork
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker) as pool:
            futures = [pool.submit(_run_job, job) for job in jobs]
            return _collect((future.result() for future in as_completed(futures)), bar)


def generate(
    out_dir: Path,
    subjects: int,
    images_per_subject: int,
    test: int,
    seed: int,
    *,
    test_masks_dir: Path | None = None,
    progress: bool = True,
    workers: int | None = None,
    style: str = "realistic",
) -> None:
    """Write a synthetic data set in Kaggle's layout.

    ``out_dir/train/<subject>_<image>.tif`` and ``<subject>_<image>_mask.tif`` (subjects 1..subjects, images
    1..images_per_subject), ``out_dir/test/<id>.tif`` (ids 1..test) and the test masks, which Kaggle never
    published, as ``test_masks_dir/<id>_mask.tif`` (default ``out_dir.parent / "synthetic_test_masks"``) so a
    submission can be scored locally, with ``test_masks_dir/subjects.csv`` (id,subject) for subject-level
    intervals of that score. All files: 580x420, 8-bit grayscale, LZW TIFF; masks 0/255.

    The output depends only on the arguments (not on ``workers``). Refuses to write into a non-empty folder.
    Frames are written into hidden ``.synthetic-partial-*`` folders that are renamed into place at the end, so an
    interrupted run leaves no ``train``/``test`` folder behind (a leftover partial folder may be deleted).
    ``workers`` defaults to one process per CPU for sets of 300 images or more, else in-process. ``style`` is one
    of ``STYLES``: "realistic" (as hard as the real scans at 64x80; tests and benchmarks) or "clear" (the demo's).
    """
    _check_count("subjects", subjects, 1)
    _check_count("images_per_subject", images_per_subject, 1)
    _check_count("test", test, 0)
    _check_count("seed", seed, 0)
    if style not in STYLES:
        raise NervesegError(f"style must be one of {sorted(STYLES)}, got {style!r}")
    out_dir = Path(out_dir)
    masks_dir = Path(test_masks_dir) if test_masks_dir is not None else out_dir.parent / "synthetic_test_masks"
    if masks_dir.resolve() in {(out_dir / "train").resolve(), (out_dir / "test").resolve()}:
        raise NervesegError(f"test_masks_dir {masks_dir} must differ from {out_dir}/train and {out_dir}/test")
    _check_empty(out_dir / "train", "train")
    _check_empty(out_dir / "test", "test")
    _check_empty(masks_dir, "test masks")

    total = subjects * images_per_subject + test
    if workers is None:
        workers = (os.cpu_count() or 1) if total >= 300 else 1
    _check_count("workers", workers, 1)

    out_dir.mkdir(parents=True, exist_ok=True)
    masks_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".synthetic-partial-", dir=out_dir))
    masks_staging = Path(tempfile.mkdtemp(prefix=".synthetic-partial-masks-", dir=masks_dir.parent))
    try:
        for folder in (staging / "train", staging / "test"):
            folder.mkdir()
        dirs = (staging / "train", staging / "test", masks_staging)
        jobs = _plan_jobs(seed, subjects, images_per_subject, test, dirs, style)
        _write_test_subjects(jobs, subjects + 1, masks_staging)
        n_jobs = len(jobs)
        _execute(jobs, min(workers, n_jobs), progress)
        # rename into place: masks first, train last, so a complete train/ implies a complete set
        os.replace(masks_staging, masks_dir)
        os.replace(staging / "test", out_dir / "test")
        os.replace(staging / "train", out_dir / "train")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(masks_staging, ignore_errors=True)
