"""Small factories shared by several test modules (test modules do not import each other).

Kaggle-like TIFFs on disk (``write_set`` and its parts), a hand-made ``PreparedData``
(``fake_data``), disc masks for in-memory pipelines, and the source of an exact-N tuning worker.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from nerveseg.data.cache import FULL_PIXELS, PreparedData, block_histograms, resize_image
from nerveseg.paths import ORIG_HEIGHT, ORIG_WIDTH

# ------------------------------------------------------------------------------ Kaggle layout on disk

SHAPE = (ORIG_HEIGHT, ORIG_WIDTH)


def structured_image(seed: int) -> np.ndarray:
    """An ultrasound-like frame: blurred bright and dark blobs over a background, plus speckle."""
    rng = np.random.default_rng(seed)
    canvas = np.full(SHAPE, float(rng.integers(40, 90)), dtype=np.float32)
    for _ in range(12):
        center = (int(rng.integers(0, ORIG_WIDTH)), int(rng.integers(0, ORIG_HEIGHT)))
        axes = (int(rng.integers(20, 120)), int(rng.integers(10, 60)))
        cv2.ellipse(canvas, center, axes, float(rng.integers(0, 180)), 0, 360, float(rng.integers(0, 256)), -1)
    canvas = cv2.GaussianBlur(canvas, (0, 0), 3) + rng.normal(0, 8, SHAPE)
    return np.clip(canvas, 0, 255).astype(np.uint8)


def nerve_mask(empty: bool, shift: int = 0) -> np.ndarray:
    """A 0/255 mask with one ellipse (about 7,000 pixels, like a real nerve) unless ``empty``."""
    mask = np.zeros(SHAPE, dtype=np.uint8)
    if not empty:
        cv2.ellipse(mask, (330 + shift, 140), (45, 50), 0, 0, 360, 255, -1)
    return mask


def write_tif(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


def write_pair(train_dir: Path, subject: int, image: int, *, empty: bool = False, seed: int | None = None) -> None:
    """``<subject>_<image>.tif`` and its mask; the image content depends on ``seed`` (default: the name)."""
    seed = subject * 1000 + image if seed is None else seed
    write_tif(train_dir / f"{subject}_{image}.tif", structured_image(seed))
    write_tif(train_dir / f"{subject}_{image}_mask.tif", nerve_mask(empty, shift=image % 7))


def write_set(raw_dir: Path, subjects: tuple[int, ...] = (1, 2), images: tuple[int, ...] = (1, 2, 3)) -> Path:
    """A tiny valid train set (every third image empty) plus three test images; returns ``raw_dir``."""
    for subject in subjects:
        for image in images:
            write_pair(raw_dir / "train", subject, image, empty=image % 3 == 0)
    for test_id in (1, 2, 10):
        write_tif(raw_dir / "test" / f"{test_id}.tif", structured_image(100_000 + test_id))
    return raw_dir


def crafted_tiff_header(width: int, height: int) -> bytes:
    """A 130-byte little-endian TIFF whose only IFD claims ``width`` x ``height`` uncompressed 8-bit pixels
    (it holds none of them): what a hostile upload looks like, at no memory cost to the test."""
    tags = [  # (tag, type, count, value): type 3 = SHORT, 4 = LONG
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (273, 4, 1, 8),
        (277, 3, 1, 1),
        (278, 4, 1, height),
        (279, 4, 1, min(width * height, 2**32 - 1)),
    ]
    ifd = struct.pack("<H", len(tags))
    for tag, kind, count, value in tags:
        ifd += struct.pack("<HHI", tag, kind, count) + (
            struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        )
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time, to prove nothing was written."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


# ------------------------------------------------------------------------------------- in memory


def fake_data(
    subjects: np.ndarray,
    has_mask: np.ndarray,
    *,
    full_images: np.ndarray | None = None,
    fingerprint: str = "ab" * 32,
) -> PreparedData:
    """A hand-made PreparedData: ids "<subject>_<k>", one foreground pixel per non-empty full mask."""
    subjects, has_mask = np.asarray(subjects, dtype=np.int64), np.asarray(has_mask, dtype=bool)
    ids = np.array([f"{s}_{k}" for k, s in enumerate(subjects, start=1)])
    packed = np.zeros((len(ids), FULL_PIXELS // 8), dtype=np.uint8)
    packed[has_mask, 0] = 0b1000_0000
    images = np.zeros((len(ids), 8, 10), dtype=np.uint8)
    descriptors = None
    if full_images is not None:
        images = np.stack([resize_image(image, 8, 10) for image in full_images])
        descriptors = np.stack([block_histograms(image) for image in full_images])
    masks = np.zeros_like(images)
    return PreparedData(ids, subjects, images, masks, packed, fingerprint, descriptors)


def random_disc_masks(rng: np.random.Generator, n: int, height: int, width: int, max_radius: float) -> np.ndarray:
    """(n, height, width) uint8 {0, 1}: a disc (radius 4 to ``max_radius``) in every image but each third."""
    yy, xx = np.mgrid[:height, :width]
    masks = np.zeros((n, height, width), np.uint8)
    for i in range(n):
        if i % 3:
            cy, cx, r = rng.uniform(10, 22), rng.uniform(12, 28), rng.uniform(4, max_radius)
            masks[i] = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    return masks


# ------------------------------------------------------------------------------------------ exact N

_WORKER_HEAD = textwrap.dedent(
    """
    import random, sys, time
    import optuna
    from nerveseg.tune.storage import StudyLock, make_storage, optimize_exactly

    url, name, n_trials = sys.argv[1], sys.argv[2], int(sys.argv[3])
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    lock = StudyLock(url, name)
    with lock:
        study = optuna.create_study(study_name=name, storage=make_storage(url), direction="maximize",
                                    load_if_exists=True)
    """
)
_WORKER_TAIL = textwrap.dedent(
    """
    ran = optimize_exactly(study, objective, n_trials, lock)
    lock.close()
    print("ran", ran)
    """
)


def exact_n_worker(objective: str) -> str:
    """Source of a ``python -c`` worker (argv: storage URL, study name, N) that joins the study, runs
    ``objective`` (the source of ``def objective(trial): ...``) until the study holds exactly N
    trials, and prints ``ran <trials run here>``."""
    return _WORKER_HEAD + textwrap.dedent(objective) + _WORKER_TAIL


@contextlib.contextmanager
def read_only_folder(path: Path) -> Iterator[Path]:
    """``path`` created without write permission for the test, restored after; skips when running as root
    (root writes anyway, so nothing could be proven)."""
    path.mkdir(parents=True)
    path.chmod(0o500)
    try:
        if os.access(path, os.W_OK):
            pytest.skip("running as root: permissions are not enforced")
        yield path
    finally:
        path.chmod(0o700)


# ------------------------------------------------------------------------------------ as a user would

ROOT = Path(__file__).resolve().parents[1]


def run_script(script: str, *args: object, env: dict[str, str] | None = None, timeout: float = 180):
    """``python src/<script> ARGS`` from the repo root, as a user types it; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, str(ROOT / "src" / script), *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
    )


def quiet_main(function: Callable[[list[str]], int], argv: list[str], err: io.StringIO | None = None) -> str:
    """A script's ``main(argv)`` in this process, which must return 0; its stdout (stderr goes to ``err``)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err or io.StringIO()):
        assert function(argv) == 0
    return out.getvalue()


def tree_digest(folder: Path) -> str:
    """SHA-256 over every entry under ``folder``: names, file bytes, link targets (a link loop is hashed as a
    link, never followed). Equal before and after a command proves it wrote nothing there."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        if path.is_symlink():
            digest.update(b"link " + os.readlink(path).encode())
        elif path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def assert_one_line_error(done: subprocess.CompletedProcess, *words: str) -> str:
    """Exit status 2 and exactly one stderr line, ``error: ...``, holding every one of ``words``."""
    lines = done.stderr.splitlines()
    assert done.returncode == 2, f"exit {done.returncode}, stderr:\n{done.stderr}"
    assert len(lines) == 1, f"expected one stderr line, got:\n{done.stderr}"
    assert lines[0].startswith("error: "), lines[0]
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    return lines[0]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for a server a test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's own PID, then make sure nothing of its process group (its workers) survives."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


# ------------------------------------------------------------------------------------- finished runs


def fake_local_run(
    root: Path,
    scores,
    *,
    name: str = "run",
    task: str = "nerve",
    fingerprint: str = "ab" * 32,
    status: str = "FINISHED",
) -> Path:
    """A LocalStore folder as a finished CV leaves it, as far as a comparison reads it: ``parent.json``,
    ``metrics.json`` and the per-image scores (``scores``, an ``evaluate.paired.ImageScores``)."""
    import json

    from nerveseg import names
    from nerveseg.run.fold_files import save_image_scores

    root.mkdir(parents=True)
    parent = {"status": status, "name": name, "params": {names.TASK_PARAM: task}, names.DATA_FINGERPRINT: fingerprint}
    (root / "parent.json").write_text(json.dumps(parent))
    (root / "metrics.json").write_text(json.dumps({scores.metric: float(scores.scores.mean())}))
    save_image_scores(root / names.IMAGE_SCORES_ARTIFACT, scores)
    return root
