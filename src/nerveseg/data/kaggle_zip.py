"""Kaggle's competition zip unpacked into the raw layout that ``data.raw`` reads, all or nothing.

``kaggle competitions download -c ultrasound-nerve-segmentation`` gives one zip. Depending on when and how Kaggle
packed it, it holds ``train/``, ``test/`` and the CSVs directly, or inner zips (``train.zip``, ``test.zip``,
``train_masks.csv.zip``...), possibly under one top folder. Both forms are read with Python's ``zipfile``.

Only what the pipeline reads is taken, and each file's place is built from its own name, never from the path the
zip gives: ``train/<subject>_<image>[_mask].tif``, ``test/<id>.tif`` (the names ``data.raw`` accepts),
``train_masks.csv`` and ``sample_submission.csv``. A member path such as ``../../.bashrc`` therefore cannot
place a file anywhere else (zip-slip), other members are skipped, and sizes are checked against the
declared ones before anything is written (no member larger than a raw TIFF can be, a bounded member count, free
space on the disk). Everything is unpacked into a hidden folder beside the target and renamed into place at the
end, so an interrupted or failed unpack leaves nothing half-written in ``data/raw``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from nerveseg.data.raw import (
    MAX_RAW_FILE_BYTES,
    TEST_IMAGE_RE,
    TRAIN_IMAGE_RE,
    TRAIN_MASK_RE,
    DataError,
    index_test,
    index_train,
)
from nerveseg.io_utils import check_free_space, current_umask, process_alive
from nerveseg.kaggle_client import COMPETITION

CSV_FILES = ("train_masks.csv", "sample_submission.csv")
INNER_ZIPS = ("train.zip", "test.zip", *(f"{name}.zip" for name in CSV_FILES))  # Kaggle's older packing
MAX_CSV_BYTES = 256 << 20  # Kaggle's train_masks.csv is about 9 MB
MAX_MEMBERS = 200_000  # the real data: 16,780 files
MAX_INNER_ZIP_BYTES = 32 << 30  # an inner train.zip is about 1 GB
_COPY_CHUNK = 1 << 20
_BAD_ZIP = (zipfile.BadZipFile, zlib.error, EOFError)  # what a truncated or damaged archive raises while read
STAGING_INFIX = ".unpacking."  # <raw parent>/.<raw name>.unpacking.<pid>.<random>: the hidden folder being filled


class KaggleZipError(DataError):
    """The zip is not Kaggle's competition zip, or it is damaged; the message names it and says what to do."""


@dataclass
class Found:
    """What a zip holds that the pipeline reads: target path (``train/1_1.tif``) -> where it is in the zip."""

    members: dict[str, tuple[str, zipfile.ZipInfo]] = field(default_factory=dict)  # target -> (zip label, info)
    inner_zips: list[zipfile.ZipInfo] = field(default_factory=list)
    skipped: int = 0


@dataclass(frozen=True)
class Unpacked:
    """What landed in the raw folder: counts for the summary a user reads."""

    raw_dir: Path
    train_pairs: int
    subjects: int
    test_images: int
    csv_files: tuple[str, ...]
    skipped: int  # members of the zip that are not part of the layout (other files, folders, macOS metadata)


def target_of(member: str, folder_hint: str = "") -> str | None:
    """Where a zip member goes in the raw layout (``train/1_1.tif``), or None when the pipeline does not read it.

    The target is built from the member's file name and the name of its folder (``folder_hint``, the inner zip's
    name such as ``train``, when the member sits at the zip's top), so no member path can escape the raw folder.
    """
    path = PurePosixPath(member.replace("\\", "/"))
    name = path.name
    if name.startswith(".") or "__MACOSX" in path.parts:
        return None
    if name in CSV_FILES:
        return name
    folder = path.parent.name or folder_hint
    if folder == "train" and (TRAIN_IMAGE_RE.fullmatch(name) or TRAIN_MASK_RE.fullmatch(name)):
        return f"train/{name}"
    if folder == "test" and TEST_IMAGE_RE.fullmatch(name):
        return f"test/{name}"
    return None


def _limit(target: str) -> int:
    return MAX_CSV_BYTES if target in CSV_FILES else MAX_RAW_FILE_BYTES


def scan(archive: zipfile.ZipFile, label: str, found: Found, folder_hint: str = "") -> None:
    """Add ``archive``'s layout members to ``found`` (inner zips are only listed); refuse absurd or hostile entries."""
    infos = archive.infolist()
    if len(infos) + len(found.members) > MAX_MEMBERS:
        raise KaggleZipError(f"{label}: lists over {MAX_MEMBERS} files; it is not Kaggle's competition zip")
    for info in infos:
        if info.is_dir():
            continue
        path = PurePosixPath(info.filename)
        if path.name in INNER_ZIPS and "__MACOSX" not in path.parts and not folder_hint:
            found.inner_zips.append(info)
            continue
        target = target_of(info.filename, folder_hint)
        if target is None:
            found.skipped += 1
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            raise KaggleZipError(f"{label}: {info.filename} is a symbolic link, not a file; use Kaggle's own zip")
        if info.file_size > _limit(target):
            raise KaggleZipError(
                f"{label}: {info.filename} claims {info.file_size / 1e6:.1f} MB, more than any such file of the "
                "competition can be; download the zip again from Kaggle"
            )
        if target in found.members:
            raise KaggleZipError(
                f"{label}: holds {target} twice ({found.members[target][1].filename} and {info.filename}); "
                "use Kaggle's own zip, unchanged"
            )
        found.members[target] = (label, info)


@contextmanager
def _reading(label: str) -> Iterator[None]:
    """A damaged or truncated archive, or one packed with a method ``zipfile`` cannot read, as one line."""
    try:
        yield
    except _BAD_ZIP as err:
        raise KaggleZipError(
            f"{label}: damaged or truncated zip ({type(err).__name__}: {err}); download it again "
            "(kaggle competitions download -c ultrasound-nerve-segmentation) and rerun"
        ) from None
    except NotImplementedError as err:
        raise KaggleZipError(
            f"{label}: packed with a compression method Python's zipfile cannot read ({err}); unpack it with "
            "unzip or 7z and copy its train/ and test/ into the raw folder"
        ) from None


def _copy(source: IO[bytes], destination: Path, limit: int) -> None:
    """Copy at most ``limit`` bytes (the declared size: zipfile stops there and checks the CRC at the end)."""
    written = 0
    with open(destination, "xb") as out:
        while chunk := source.read(_COPY_CHUNK):
            written += len(chunk)
            if written > limit:
                raise zipfile.BadZipFile(f"{destination.name} is larger than its declared size")
            out.write(chunk)


def _extract(archive: zipfile.ZipFile, info: zipfile.ZipInfo, destination: Path, limit: int) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    with archive.open(info) as source:
        _copy(source, destination, min(limit, info.file_size))


def _unpack_inner(outer: zipfile.ZipFile, label: str, info: zipfile.ZipInfo, staging: Path) -> int:
    """An inner zip (``train.zip``...) copied out of the outer one, then its layout members unpacked; the members
    skipped."""
    if info.file_size > MAX_INNER_ZIP_BYTES:
        raise KaggleZipError(f"{label}: inner {info.filename} claims {info.file_size / 1e9:.1f} GB; not Kaggle's zip")
    inner_label = f"{label} > {info.filename}"
    copy = staging / f".inner{len(list(staging.glob('.inner*')))}.zip"
    check_free_space(staging, info.file_size, "the raw folder's disk")
    with _reading(label):
        _extract(outer, info, copy, info.file_size)
    try:
        with _reading(inner_label), zipfile.ZipFile(copy) as inner:
            found = Found()
            scan(inner, inner_label, found, folder_hint=PurePosixPath(info.filename).name.split(".")[0])
            _unpack_members(inner, found, staging)
    finally:
        copy.unlink(missing_ok=True)
    return found.skipped


def _unpack_members(archive: zipfile.ZipFile, found: Found, staging: Path) -> None:
    existing = [target for target in found.members if (staging / target).exists()]
    if existing:
        raise KaggleZipError(f"{found.members[existing[0]][0]}: {existing[0]} appears twice (two inner zips hold it)")
    check_free_space(staging, sum(info.file_size for _, info in found.members.values()), "the raw folder's disk")
    for target, (label, info) in found.members.items():
        with _reading(f"{label} ({info.filename})"):
            _extract(archive, info, staging / target, _limit(target))


def unpack_into(zip_path: Path, staging: Path) -> int:
    """Unpack the layout members of ``zip_path`` (and of its inner zips) into ``staging``; the members skipped."""
    label = str(zip_path)
    with _reading(label), zipfile.ZipFile(zip_path) as archive:
        found = Found()
        scan(archive, label, found)
        _unpack_members(archive, found, staging)
        inner_skipped = [_unpack_inner(archive, label, info, staging) for info in found.inner_zips]
    return found.skipped + sum(inner_skipped)


def check_zip_file(zip_path: Path) -> None:
    """A readable zip file, or a one-line error saying what the path is instead."""
    if not zip_path.is_file():
        what = "is a folder" if zip_path.is_dir() else "does not exist"
        raise KaggleZipError(
            f"--zip {zip_path} {what}; pass the zip that `kaggle competitions download -c ultrasound-nerve-"
            "segmentation` wrote, or leave --zip out to download it"
        )
    if not zipfile.is_zipfile(zip_path):
        raise KaggleZipError(
            f"{zip_path}: not a zip file (or truncated before its table of contents); download it again from Kaggle"
        )


def raw_dir_leftovers(raw_dir: Path) -> list[Path]:
    """The hidden files of an otherwise empty raw folder (``.gitkeep``); a one-line refusal when it holds data:
    nothing in a raw folder is ever replaced."""
    if not raw_dir.exists():
        return []
    if not raw_dir.is_dir():
        raise KaggleZipError(f"--raw-dir {raw_dir} is a file, not a folder; pass a folder path")
    entries = sorted(raw_dir.iterdir())
    visible = [p for p in entries if not p.name.startswith(".") or not p.is_file() or p.is_symlink()]
    if visible:
        raise KaggleZipError(
            f"--raw-dir {raw_dir} is not empty (it holds {visible[0].name}); nothing there is ever overwritten: "
            "move it away, or pass another --raw-dir"
        )
    return entries


def remove_stale_staging(raw_dir: Path) -> None:
    """Hidden unpacking folders that a killed unpack left beside ``raw_dir`` (their process is gone)."""
    prefix = f".{raw_dir.name}{STAGING_INFIX}"
    for folder in raw_dir.parent.glob(prefix + "*"):
        pid = folder.name[len(prefix) :].split(".")[0]
        if folder.is_dir() and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def check_layout(staging: Path, zip_path: Path, skipped: int) -> Unpacked:
    """What was unpacked, checked with the raw data's own index (names, image/mask pairs)."""
    if not (staging / "train").is_dir():
        raise KaggleZipError(
            f"{zip_path}: holds no train/<subject>_<image>.tif files; it is not the {COMPETITION} zip "
            f"(get it with `kaggle competitions download -c {COMPETITION}`)"
        )
    try:
        train = index_train(staging)
        test_count = len(index_test(staging)) if (staging / "test").is_dir() else 0
    except DataError as err:  # names a file of the hidden folder being filled: name it inside the zip instead
        detail = str(err).replace(f"{staging}/", "").split(";")[0]
        raise KaggleZipError(f"{zip_path}: {detail}; the zip is incomplete, download it again") from None
    csvs = tuple(name for name in CSV_FILES if (staging / name).is_file())
    return Unpacked(staging, len(train), int(train["subject"].nunique()), test_count, csvs, skipped)


def unpack_competition_zip(zip_path: Path, raw_dir: Path) -> Unpacked:
    """Unpack Kaggle's competition zip into ``raw_dir`` (missing, or empty but for hidden files), all or nothing.

    Everything goes into a hidden sibling folder first and is renamed to ``raw_dir`` at the end; any failure
    removes that folder and leaves ``raw_dir`` as it was. A bad zip, a full disk or a non-empty ``raw_dir`` is a
    one-line ``KaggleZipError`` (or ``NervesegError``) saying what to do.
    """
    zip_path, raw_dir = Path(zip_path), Path(raw_dir)
    if raw_dir.is_symlink():  # a link to another disk: unpack beside its target, which is what gets filled
        raw_dir = raw_dir.resolve()
    leftovers = raw_dir_leftovers(raw_dir)
    check_zip_file(zip_path)
    raw_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(raw_dir)
    staging = Path(tempfile.mkdtemp(prefix=f".{raw_dir.name}{STAGING_INFIX}{os.getpid()}.", dir=raw_dir.parent))
    try:
        found = check_layout(staging, zip_path, unpack_into(zip_path, staging))
        _move_into_place(staging, raw_dir, leftovers)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dataclasses.replace(found, raw_dir=raw_dir)


def _move_into_place(staging: Path, raw_dir: Path, leftovers: list[Path]) -> None:
    """One rename makes the unpacked folder ``raw_dir``; an existing, empty-but-hidden-files ``raw_dir`` gives its
    files (``.gitkeep``) to the new folder first (rename replaces an empty folder, never a non-empty one)."""
    staging.chmod(0o777 & ~current_umask())  # mkdtemp makes 0700 folders; give the raw folder the usual permissions
    for path in leftovers:
        shutil.copy2(path, staging / path.name)
    for path in leftovers:
        path.unlink()
    os.replace(staging, raw_dir)


__all__ = ["KaggleZipError", "Unpacked", "target_of", "unpack_competition_zip"]
