"""A full or small disk, and writes killed half-way (issue 18).

The full-disk cases use a real 2 MB tmpfs filled with ``dd`` (they skip, saying why, where mounting is not
permitted); the mount is always removed in the fixture's teardown. Each command case expects exit 2, one
``error:`` line naming the path or option and saying to free space, before any work where the size is known,
and an unchanged raw folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import (
    ROOT,
    assert_one_line_error,
    nerve_mask,
    run_script,
    tree_digest,
    write_set,
    write_tif,
)

DISK_BYTES = 2 << 20


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A fresh 2 MB tmpfs at ``tmp_path/disk``; skips where ``mount`` is missing or not permitted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: the full-disk cases need a small real file system")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}); needs CAP_SYS_ADMIN")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave_bytes: int = 0) -> None:
    """Fill ``disk`` with ``dd`` until it is full, then free ``leave_bytes`` again."""
    filler = disk / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True, check=False)
    if leave_bytes:
        os.truncate(filler, max(0, filler.stat().st_size - leave_bytes))
    assert shutil.disk_usage(disk).free <= leave_bytes + 4096


# ------------------------------------------------------------------------------------------- writers


def test_a_write_that_fills_the_disk_names_the_file_and_leaves_nothing(small_disk: Path) -> None:
    """The writer itself (called directly): ENOSPC at write/flush becomes one line naming the target."""
    from nerveseg.errors import NervesegError
    from nerveseg.io_utils import atomic_write_bytes

    fill(small_disk, leave_bytes=256 << 10)
    target = small_disk / "out" / "big.bin"
    with pytest.raises(NervesegError) as caught:
        atomic_write_bytes(target, bytes(1 << 20))
    message = str(caught.value)
    assert str(target) in message and "free space" in message and "\n" not in message
    assert sorted(p.name for p in (small_disk / "out").iterdir()) == []  # no temporary file left


@pytest.mark.slow  # runs the command in a subprocess
def test_prepare_data_on_a_full_cache_disk_is_one_line_naming_the_cache(small_disk: Path, tmp_path: Path) -> None:
    """A disk with one free page: the folder check passes, the cache write fails and names its file."""
    raw = write_set(tmp_path / "raw", subjects=(1, 2), images=(1, 2))
    cache = small_disk / "cache"
    cache.mkdir()
    fill(small_disk, leave_bytes=8192)
    before = tree_digest(raw)
    done = run_script(
        "prepare_data.py", "--raw-dir", raw, "--cache-dir", cache, "--folds-dir", tmp_path / "folds",
        "--height", 32, "--width", 40, "--folds", 2, "--workers", 1, "--no-progress",
    )  # fmt: skip
    assert_one_line_error(done, str(cache), ".npz", "free space")
    assert tree_digest(raw) == before
    assert not list(cache.iterdir())


@pytest.mark.slow  # runs the command in a subprocess
@pytest.mark.parametrize("leave_bytes", [0, 512 << 10])
def test_submit_refuses_a_full_or_too_small_out_dir_before_any_work(
    small_disk: Path, tmp_path: Path, leave_bytes: int
) -> None:
    """Full: the folder check's one-byte probe fails. Half a megabyte free: less than the estimated CSV
    (test images x 4 kB + 1 MiB margin). Both before a run is looked up or anything is predicted."""
    raw = write_set(tmp_path / "raw", subjects=(1,), images=(1,))
    fill(small_disk, leave_bytes)
    before = tree_digest(raw)
    done = run_script(
        "submit.py", "--run-id", "nope", "--raw-dir", raw, "--out-dir", small_disk / "subs",
        "--cache-dir", tmp_path / "cache",
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'absent' / 'mlflow.db'}"},
    )  # fmt: skip
    assert_one_line_error(done, "--out-dir", str(small_disk / "subs"), "free space")
    assert tree_digest(raw) == before
    assert not (small_disk / "subs").exists()


TINY_CONFIG = "height: 32\nwidth: 40\ndepth: 3\nbase_filters: 4\nbatch_size: 4\nepochs: 1\nfolds: 2\n"


@pytest.mark.slow  # runs the command in a subprocess
def test_a_cv_run_on_a_full_artifact_store_ends_failed_with_the_reason(
    small_disk: Path, tmp_path: Path, empty_db: Path
) -> None:
    """``cv_train.py`` whose experiment keeps its artifacts on a full disk: the parent run's first artifact
    fails, the run is FAILED with the reason in ``nerveseg.error`` (not RUNNING forever), one line, exit 2.
    Nothing is trained: the failure comes before the first fold."""
    from mlflow.tracking import MlflowClient

    from nerveseg.track.schema import ERROR_TAG

    db = tmp_path / "mlflow.db"
    shutil.copy(empty_db, db)
    uri = f"sqlite:///{db}"
    MlflowClient(uri).create_experiment("hostile", artifact_location=(small_disk / "artifacts").as_uri())
    raw = write_set(tmp_path / "raw", subjects=(1, 2), images=(1, 2, 3))
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    fill(small_disk)
    before = tree_digest(raw)
    done = run_script(
        "cv_train.py", "--config", config, "--raw-dir", raw, "--cache-dir", tmp_path / "cache",
        "--folds-dir", tmp_path / "folds", "--no-progress",
        env={"MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": "hostile"},
    )  # fmt: skip
    assert_one_line_error(done, "No space left on device", "free space")
    assert tree_digest(raw) == before
    runs = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("hostile").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "No space left on device" in runs[0].data.tags[ERROR_TAG]


# ------------------------------------------------------------------------------ killed writes


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from nerveseg.io_utils import _atomic_open
    with _atomic_open(sys.argv[1]) as handle:
        handle.write(b"half a file")
        handle.flush()
        print("writing", flush=True)
        time.sleep(60)
    """
)


def _killed_write(target: Path) -> Path:
    """Start a write of ``target`` in another process, kill it with SIGKILL half-way; return its leftover."""
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(target)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )  # fmt: skip
    assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=30)
    (leftover,) = [p for p in target.parent.iterdir() if p.name.endswith(".tmp")]
    return leftover


@pytest.mark.slow  # runs the command in a subprocess
def test_the_next_run_in_a_folder_removes_a_killed_writes_leftover(tmp_path: Path) -> None:
    """The issue's case: a kill during a write leaves a hidden .tmp in the output folder; the next command
    writing there (score.py --per-image) removes it, and leaves the user's own hidden files alone."""
    out_dir = tmp_path / "submissions"
    out_dir.mkdir()
    leftover = _killed_write(out_dir / "old.csv")
    mine = out_dir / ".notes.tmp"  # hidden, .tmp, but not our name pattern: never touched
    mine.write_text("mine")
    masks = tmp_path / "masks"
    write_tif(masks / "1_mask.tif", nerve_mask(False))
    csv = tmp_path / "sub.csv"
    csv.write_text("img,pixels\n1,1 10\n")
    done = run_script("score.py", csv, "--masks", masks, "--per-image", out_dir / "scores.csv")
    assert done.returncode == 0, done.stderr
    assert not leftover.exists()
    assert sorted(p.name for p in out_dir.iterdir()) == [".notes.tmp", "scores.csv"]


@pytest.mark.slow  # runs the command in a subprocess
def test_only_leftovers_of_dead_or_idle_writers_are_removed(tmp_path: Path) -> None:
    """``remove_stale_temp_files`` directly: a live writer's fresh file stays, the same file idle for over
    an hour goes (its PID may have been reused), a dead writer's goes at once."""
    from nerveseg.io_utils import STALE_TEMP_AGE_S, remove_stale_temp_files

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        fresh = tmp_path / f".a.csv.{live.pid}.abcd1234.tmp"
        idle = tmp_path / f".b.csv.{live.pid}.abcd1234.tmp"
        for path in (fresh, idle):
            path.write_text("x")
        hour_ago = time.time() - STALE_TEMP_AGE_S - 60
        os.utime(idle, (hour_ago, hour_ago))
        dead = _killed_write(tmp_path / "sub" / "c.csv")
        assert remove_stale_temp_files(tmp_path) == [idle]
        assert fresh.exists()
        assert remove_stale_temp_files(dead.parent) == [dead]
    finally:
        live.kill()
        live.wait()


@pytest.mark.slow  # runs the command in a subprocess
def test_submit_name_refuses_an_existing_file_at_once(tmp_path: Path) -> None:
    raw = write_set(tmp_path / "raw", subjects=(1,), images=(1,))
    out_dir = tmp_path / "subs"
    out_dir.mkdir()
    (out_dir / "mine.csv").write_text("keep me")
    before = tree_digest(raw)
    done = run_script("submit.py", "--out-name", "mine.csv", "--raw-dir", raw, "--out-dir", out_dir)
    assert_one_line_error(done, "--out-name", str(out_dir / "mine.csv"), "never overwritten")
    assert (out_dir / "mine.csv").read_text() == "keep me"
    assert tree_digest(raw) == before


@pytest.mark.parametrize("name", ["../escape.csv", ".hidden.csv", "a/b.csv"])
def test_submit_name_must_be_a_plain_file_name(tmp_path: Path, name: str) -> None:
    """Checked by ``submission_path`` directly (through submit.py it needs a tracked run to get there)."""
    from nerveseg.errors import NervesegError
    from nerveseg.run.submit import submission_path

    assert submission_path(tmp_path, "run", file_name="final") == tmp_path / "final.csv"
    assert submission_path(tmp_path, "run", suffix=".tif", file_name="final.tif") == tmp_path / "final.tif"
    with pytest.raises(NervesegError, match="--out-name"):
        submission_path(tmp_path, "run", file_name=name)
