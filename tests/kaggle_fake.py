"""A stand-in for Kaggle's command-line client, first on PATH: what nerveseg sends it is recorded, its answers canned.

Kaggle cannot be reached from the tests, so the client's side is played by a small script named ``kaggle``: it
appends its arguments (one JSON list per call) to ``calls.jsonl``, and answers as the real client does: ``competitions
download`` copies a prepared competition zip into ``-p DIR``, ``competitions submit`` prints the client's success
line, ``competitions submissions --csv`` prints a prepared table. ``fail`` makes every call print a message and exit
1, as the client does on an API error; ``answer`` replaces the submit answer (the client exits 0 even when an upload
failed).
"""

from __future__ import annotations

import csv
import io
import json
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

SCRIPT = """#!{python}
import json, os, shutil, sys
from pathlib import Path

here = Path(__file__).resolve().parent
args = sys.argv[1:]
with open(here / "calls.jsonl", "a") as log:
    log.write(json.dumps(args) + "\\n")
fail = here / "fail.txt"
if fail.exists():
    print(fail.read_text())
    sys.exit(1)
if args[:2] == ["competitions", "download"]:
    folder = Path(args[args.index("-p") + 1])
    folder.mkdir(parents=True, exist_ok=True)
    print(f"Downloading ultrasound-nerve-segmentation.zip to {{folder}}")
    print("100%|##########| 3.20M/3.20M [00:00<00:00, 90.1MB/s]")
    shutil.copy(here / "competition.zip", folder / "ultrasound-nerve-segmentation.zip")
elif args[:2] == ["competitions", "submit"]:
    print("100%|##########| 1.00k/1.00k [00:01<00:00, 1.00kB/s]")
    print((here / "answer.txt").read_text() if (here / "answer.txt").exists() else
          "Successfully submitted to Ultrasound Nerve Segmentation")
elif args[:2] == ["competitions", "submissions"]:
    sys.stdout.write((here / "submissions.csv").read_text())
"""


@dataclass
class FakeKaggle:
    """The stand-in's folder (on PATH first) and what it was sent."""

    folder: Path

    def calls(self) -> list[list[str]]:
        log = self.folder / "calls.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def fail(self, message: str) -> None:
        (self.folder / "fail.txt").write_text(message)

    def answer(self, text: str) -> None:
        (self.folder / "answer.txt").write_text(text)

    def serve_zip(self, zip_path: Path) -> None:
        (self.folder / "competition.zip").write_bytes(Path(zip_path).read_bytes())

    def serve_submissions(self, rows: list[tuple[str, str, str, str, str, str]], warning: str = "") -> None:
        header = "fileName,date,description,status,publicScore,privateScore"
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        (self.folder / "submissions.csv").write_text(
            (warning + "\n" if warning else "") + header + "\n" + buffer.getvalue()
        )


def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, credentials: bool = True) -> FakeKaggle:
    """Put the stand-in first on PATH; a HOME of its own, and credentials in the environment unless told not to."""
    folder = tmp_path / "kaggle-bin"
    folder.mkdir()
    script = folder / "kaggle"
    script.write_text(SCRIPT.format(python=sys.executable))
    script.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("PATH", f"{folder}:/usr/bin:/bin")
    monkeypatch.setenv("HOME", str(home))
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR", "KAGGLE_ENABLE_OAUTH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    if credentials:
        monkeypatch.setenv("KAGGLE_USERNAME", "tester")
        monkeypatch.setenv("KAGGLE_KEY", "0" * 32)
    return FakeKaggle(folder)


def competition_zip(
    raw_dir: Path, out: Path, *, nested: bool = False, top: str = "", extra: dict | None = None
) -> Path:
    """A zip of a raw folder as Kaggle packs it: train/, test/ and the CSVs directly, or (``nested``) inner
    ``train.zip``/``test.zip``/``<csv>.zip``; under ``top/`` when given; ``extra`` adds members (name or ZipInfo ->
    bytes)."""
    raw_dir = Path(raw_dir)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for part in ("train", "test"):
            files = sorted((raw_dir / part).glob("*.tif"))
            if nested:
                inner = out.with_name(f"{part}.zip")
                with zipfile.ZipFile(inner, "w", zipfile.ZIP_DEFLATED) as packed:
                    for path in files:
                        packed.write(path, f"{part}/{path.name}")
                archive.write(inner, f"{top}{part}.zip")
                inner.unlink()
            else:
                for path in files:
                    archive.write(path, f"{top}{part}/{path.name}")
        for csv_file in sorted(raw_dir.glob("*.csv")):
            if nested:
                archive.writestr(f"{top}{csv_file.name}.zip", _zipped(csv_file))
            else:
                archive.write(csv_file, f"{top}{csv_file.name}")
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return out


def _zipped(path: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.write(path, path.name)
    return buffer.getvalue()
