"""get_data.py: Kaggle's competition zip (given, or downloaded by a stand-in client) into the raw layout, all or
nothing, and one line for every bad input."""

from __future__ import annotations

import runpy
import stat
import zipfile
from pathlib import Path

import pytest

from helpers import tree_digest
from kaggle_fake import competition_zip, install
from nerveseg.data.kaggle_zip import target_of, unpack_competition_zip
from nerveseg.data.raw import index_test, index_train

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = b"img,pixels\n1,\n2,\n"


@pytest.fixture(scope="module")
def get_data_main():
    return runpy.run_path(str(ROOT / "src" / "get_data.py"))["main"]


@pytest.fixture()
def source(synthetic_root: Path) -> Path:
    return synthetic_root / "raw"


def _raw(tmp_path: Path) -> Path:
    """A raw folder as a fresh clone has it: empty but for .gitkeep."""
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    (raw / ".gitkeep").write_text("")
    return raw


def _same_files(raw: Path, source: Path) -> None:
    for part in ("train", "test"):
        assert tree_digest(raw / part) == tree_digest(source / part)


def _no_leftovers(raw: Path) -> None:
    """Nothing half-unpacked: the raw folder holds only its .gitkeep, no hidden staging folder beside it."""
    assert sorted(p.name for p in raw.iterdir()) == [".gitkeep"]
    assert [p.name for p in raw.parent.iterdir()] == ["raw"]


@pytest.mark.parametrize(
    "target",
    [
        ("train/1_2.tif", "train/1_2.tif"),
        ("ultrasound-nerve-segmentation/train/10_100_mask.tif", "train/10_100_mask.tif"),
        ("test/5508.tif", "test/5508.tif"),
        ("../../../train/1_1.tif", "train/1_1.tif"),  # zip-slip: the place is built from names only
        ("train/../../../etc/1_1.tif", None),
        ("../../.bashrc", None),
        ("sub/train_masks.csv", "train_masks.csv"),
        ("__MACOSX/train/._1_1.tif", None),
        ("train/1_1.png", None),
        ("test/01.tif", None),
    ],
    ids=lambda t: t[0],
)
def test_a_member_lands_only_where_its_name_says(target: tuple[str, str | None]) -> None:
    assert target_of(target[0]) == target[1]
    assert target_of("1_1.tif", folder_hint="train") == "train/1_1.tif"  # an inner train.zip without its folder


def test_a_flat_zip_fills_the_raw_folder_and_keeps_gitkeep(tmp_path: Path, source: Path) -> None:
    raw = _raw(tmp_path)
    archive = competition_zip(source, tmp_path / "c.zip", extra={"sample_submission.csv": SAMPLE, "readme.txt": b"x"})
    found = unpack_competition_zip(archive, raw)
    _same_files(raw, source)
    assert (raw / ".gitkeep").is_file() and (raw / "sample_submission.csv").read_bytes() == SAMPLE
    assert (found.train_pairs, found.subjects) == (len(index_train(source)), 6)
    assert found.test_images == len(index_test(source)) and found.csv_files == ("sample_submission.csv",)
    assert found.skipped == 1 and [p.name for p in raw.parent.iterdir()] == ["raw"]


def test_a_nested_zip_under_a_top_folder_gives_the_same_layout(tmp_path: Path, source: Path) -> None:
    """Kaggle's older packing: train.zip, test.zip and <csv>.zip inside the competition zip, here under a folder."""
    raw = tmp_path / "fresh"  # a missing raw folder is created by the final rename
    extra = {"__MACOSX/._train.zip": b"junk"}
    archive = competition_zip(
        source, tmp_path / "c.zip", nested=True, top="ultrasound-nerve-segmentation/", extra=extra
    )
    with zipfile.ZipFile(archive) as packed:
        assert any(name.endswith("train.zip") for name in packed.namelist())
    found = unpack_competition_zip(archive, raw)
    _same_files(raw, source)
    assert sorted(p.name for p in raw.iterdir()) == ["test", "train"] and found.subjects == 6


def test_download_goes_through_the_client_and_says_what_to_run_next(
    tmp_path: Path, source: Path, monkeypatch: pytest.MonkeyPatch, get_data_main, capsys: pytest.CaptureFixture[str]
) -> None:
    kaggle = install(tmp_path, monkeypatch)
    kaggle.serve_zip(competition_zip(source, tmp_path / "c.zip", nested=True))
    raw, downloads = _raw(tmp_path), tmp_path / "downloads"
    assert get_data_main(["--raw-dir", str(raw), "--download-dir", str(downloads)]) == 0
    assert kaggle.calls() == [["competitions", "download", "-c", "ultrasound-nerve-segmentation", "-p", str(downloads)]]
    _same_files(raw, source)
    out = capsys.readouterr().out
    assert "Downloading ultrasound-nerve-segmentation.zip" in out  # the client's own progress is shown
    assert f"train: {len(index_train(source))} image/mask pairs of 6 subjects" in out
    assert f"python src/prepare_data.py --raw-dir {raw}" in out and "--predict-subjects" in out
    assert (downloads / "ultrasound-nerve-segmentation.zip").is_file()  # kept: the client skips a fresh download


def _one_line(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    for word in words:
        assert word in err[0], (word, err[0])
    return err[0]


def test_no_client_on_path_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, get_data_main, capsys: pytest.CaptureFixture[str]
) -> None:
    install(tmp_path, monkeypatch)
    monkeypatch.setenv("PATH", str(tmp_path / "home"))  # no kaggle anywhere
    raw = _raw(tmp_path)
    assert get_data_main(["--raw-dir", str(raw), "--download-dir", str(tmp_path / "d")]) == 2
    _one_line(capsys, "pip install kaggle", "~/.kaggle/kaggle.json", "KAGGLE_USERNAME")
    _no_leftovers(raw)


def test_no_credentials_say_where_they_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, get_data_main, capsys: pytest.CaptureFixture[str]
) -> None:
    kaggle = install(tmp_path, monkeypatch, credentials=False)
    raw = _raw(tmp_path)
    assert get_data_main(["--raw-dir", str(raw), "--download-dir", str(tmp_path / "d")]) == 2
    _one_line(capsys, "no credentials", "~/.kaggle/kaggle.json", "KAGGLE_KEY")
    assert kaggle.calls() == []  # refused before the client was run
    (tmp_path / "home" / ".kaggle").mkdir()
    (tmp_path / "home" / ".kaggle" / "kaggle.json").write_text('{"username": "u", "key": "k"}')
    kaggle.fail("403 - Forbidden - You must accept this competition's rules before you'll be able to download files")
    assert get_data_main(["--raw-dir", str(raw), "--download-dir", str(tmp_path / "d")]) == 2
    line = _one_line(capsys, "kaggle competitions download", "exit 1", "403 - Forbidden", "rules")
    assert "https://www.kaggle.com/c/ultrasound-nerve-segmentation/rules" in line
    _no_leftovers(raw)


def _corrupt(path: Path, member: str) -> None:
    """Flip bytes inside one member's compressed data: the zip's table is intact, the member's CRC is not."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for i in range(start + 10, start + 40):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _link(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def _slip_zip(source: Path, out: Path) -> Path:
    competition_zip(source, out, extra={"../../evil.txt": b"owned", "../../../train/evil_mask.tif": b"x"})
    return out


BAD_ZIPS = {
    "not a zip": (lambda s, p: _write(p, b"PK but not really"), ["not a zip file", "download it again"]),
    "truncated": (
        lambda s, p: _write(p, competition_zip(s, p).read_bytes()[:-4000]),
        ["not a zip file", "truncated"],
    ),
    "damaged member": (
        lambda s, p: _corrupt(competition_zip(s, p), "train/1_1.tif") or p,
        ["damaged or truncated zip", "download it again"],
    ),
    "wrong zip": (
        lambda s, p: competition_zip(s / "test", p, extra={"data/x.csv": b"a,b\n"}),
        ["holds no train/", "kaggle competitions download -c ultrasound-nerve-segmentation"],
    ),
    "absurd member": (
        lambda s, p: competition_zip(s, p, extra={"other/train/99_1.tif": bytes(5_000_000)}),
        ["99_1.tif claims 5.0 MB", "download the zip again"],
    ),
    "symbolic link": (
        lambda s, p: competition_zip(s, p, extra={_link("other/train/98_1.tif"): b"/etc/passwd"}),
        ["98_1.tif is a symbolic link"],
    ),
    "image without mask": (
        lambda s, p: competition_zip(s, p, extra={"train/99_1.tif": b"II*\x00"}),
        ["train/99_1.tif", "mask 99_1_mask.tif is missing", "download it again"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_ZIPS))
def test_a_bad_zip_is_one_line_and_leaves_nothing(
    case: str, tmp_path: Path, source: Path, get_data_main, capsys: pytest.CaptureFixture[str]
) -> None:
    make, words = BAD_ZIPS[case]
    archive = make(source, tmp_path / "c.zip")
    raw = _raw(tmp_path)
    assert get_data_main(["--zip", str(archive), "--raw-dir", str(raw)]) == 2
    _one_line(capsys, *words)
    _no_leftovers(raw)


def test_zip_slip_members_never_write_outside(tmp_path: Path, source: Path) -> None:
    work = tmp_path / "deep" / "er"
    work.mkdir(parents=True)
    raw = _raw(work)
    unpack_competition_zip(_slip_zip(source, work / "c.zip"), raw)
    assert not list(tmp_path.rglob("evil*"))  # skipped, not written anywhere
    _same_files(raw, source)


def test_a_raw_folder_with_data_is_refused_untouched(
    tmp_path: Path, source: Path, get_data_main, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = _raw(tmp_path)
    (raw / "train").mkdir()
    (raw / "train" / "1_1.tif").write_bytes(b"mine")
    before = tree_digest(raw)
    archive = competition_zip(source, tmp_path / "c.zip")
    assert get_data_main(["--zip", str(archive), "--raw-dir", str(raw)]) == 2
    _one_line(capsys, "is not empty", "holds train", "ever overwritten")
    assert tree_digest(raw) == before and [p.name for p in raw.parent.iterdir()] == ["raw"]


def test_a_missing_zip_path_is_one_line(tmp_path: Path, get_data_main, capsys: pytest.CaptureFixture[str]) -> None:
    raw = _raw(tmp_path)
    assert get_data_main(["--zip", str(tmp_path / "nope.zip"), "--raw-dir", str(raw)]) == 2
    _one_line(capsys, "nope.zip does not exist", "leave --zip out to download it")


def test_an_interrupted_unpack_leaves_the_raw_folder_as_it_was(
    tmp_path: Path, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in the middle of unpacking: the hidden folder is removed, data/raw keeps only its .gitkeep."""
    import nerveseg.data.kaggle_zip as kaggle_zip

    calls = {"n": 0}
    real = kaggle_zip._copy

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(kaggle_zip, "_copy", interrupted)
    raw = _raw(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        unpack_competition_zip(competition_zip(source, tmp_path / "c.zip"), raw)
    _no_leftovers(raw)


def test_a_stale_staging_folder_of_a_killed_unpack_is_removed(tmp_path: Path, source: Path) -> None:
    raw = _raw(tmp_path)
    stale = raw.parent / ".raw.unpacking.999999999.abc"
    (stale / "train").mkdir(parents=True)
    unpack_competition_zip(competition_zip(source, tmp_path / "c.zip"), raw)
    assert not stale.exists()
