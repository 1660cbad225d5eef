"""Kaggle's own command-line client, run as a subprocess: the competition's data down, a submission up, and one's
submissions with their leaderboard scores read back.

The client (``pip install kaggle``) is an optional dependency: nothing else in nerveseg needs it, so it is never
imported, only found on ``PATH`` and run as a user would type it (``kaggle competitions download -c ...``). That
keeps its many versions' Python APIs out of this code, and lets the tests put a stand-in ``kaggle`` first on
``PATH`` that records what it was sent. Every failure (no client, no credentials, the client's own error, e.g.
the competition's rules not accepted) is a one-line ``KaggleError`` saying what to do.
"""

from __future__ import annotations

import csv
import io
import math
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nerveseg.errors import NervesegError

COMPETITION = "ultrasound-nerve-segmentation"
COMPETITION_URL = f"https://www.kaggle.com/c/{COMPETITION}"
CREDENTIALS_HINT = (
    "put your API token in ~/.kaggle/kaggle.json (kaggle.com > Settings > API > Create New Token) "
    "or set KAGGLE_USERNAME and KAGGLE_KEY"
)
INSTALL_HINT = f"install it with `pip install kaggle` (into this venv: .venv/bin/pip), then {CREDENTIALS_HINT}"
# what the client prints when it could not authenticate (versions 1.5 to 1.8)
_AUTH_WORDS = ("kaggle.json", "must authenticate", "401", "unauthorized", "invalid credentials")
_RULES_WORDS = ("403", "forbidden", "rules")
# what ``competitions submit`` prints, with exit status 0, when the upload failed (1.6 to 1.8)
_SUBMIT_FAILED = ("could not submit", "could not find competition")
_TAIL_CHARS = 64_000  # the client's output kept to find its message in


class KaggleError(NervesegError):
    """The Kaggle client is missing, not configured, or reported a failure; the message says what to do."""


@dataclass(frozen=True)
class KaggleSubmission:
    """One row of ``kaggle competitions submissions --csv``; a score is None until Kaggle has computed it."""

    file_name: str
    date: str
    description: str
    status: str
    public_score: float | None
    private_score: float | None


def kaggle_executable() -> str:
    """The ``kaggle`` command on ``PATH``; a one-line error saying how to install it when there is none."""
    found = shutil.which("kaggle")
    if found is None:
        raise KaggleError(f"the Kaggle client `kaggle` is not on PATH; {INSTALL_HINT}")
    return found


def credential_sources(env: Mapping[str, str] | None = None, home: Path | None = None) -> list[str]:
    """Where the client would find credentials (what it reads, versions 1.5 to 1.8), as names for a message.

    Environment variables KAGGLE_USERNAME + KAGGLE_KEY or KAGGLE_API_TOKEN; ``kaggle.json`` in $KAGGLE_CONFIG_DIR,
    ``~/.kaggle`` or ``$XDG_CONFIG_HOME/kaggle``; an ``access_token`` file in ``~/.kaggle``. An empty list: none.
    """
    env = os.environ if env is None else env
    home = Path.home() if home is None else home
    found = [name for name in ("KAGGLE_API_TOKEN",) if env.get(name)]
    if env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY"):
        found.append("KAGGLE_USERNAME/KAGGLE_KEY")
    folders = [Path(env["KAGGLE_CONFIG_DIR"])] if env.get("KAGGLE_CONFIG_DIR") else []
    folders += [home / ".kaggle", Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle"]
    files = [folder / "kaggle.json" for folder in folders]
    files += [home / ".kaggle" / "access_token", home / ".kaggle" / "access_token.txt"]
    return found + [str(path) for path in files if path.is_file()]


def check_credentials(env: Mapping[str, str] | None = None, home: Path | None = None) -> None:
    """Refuse, before anything is run, when there is no client or it could find no credentials
    (``KAGGLE_ENABLE_OAUTH``: the client's own ``kaggle auth login`` store, not looked into here, is trusted)."""
    kaggle_executable()
    env = os.environ if env is None else env
    if not credential_sources(env, home) and env.get("KAGGLE_ENABLE_OAUTH", "").lower() not in ("1", "true", "yes"):
        raise KaggleError(f"the Kaggle client has no credentials; {CREDENTIALS_HINT}")


def message_line(output: str) -> str:
    """The client's own message in its output: the last line that is not a progress bar or part of a traceback's
    stack (a traceback's last line is the error itself), or a note that it printed nothing."""
    lines = [line.strip() for line in output.replace("\r", "\n").splitlines()]
    lines = [line for line in lines if line and "%|" not in line and not line.startswith(("File ", "Traceback"))]
    return lines[-1][:300] if lines else "(the client printed nothing)"


def failure_hint(message: str) -> str:
    """What to do about the client's message: credentials, the competition's rules, or read its message."""
    lowered = message.lower()
    if any(word in lowered for word in _AUTH_WORDS):
        return CREDENTIALS_HINT
    if any(word in lowered for word in _RULES_WORDS):
        return f"accept the competition's rules at {COMPETITION_URL}/rules with the account of your token"
    return "see the client's message; `kaggle --version` shows which client runs"


def run_kaggle(args: list[str], *, echo: bool = False, timeout: float | None = None) -> str:
    """Run ``kaggle ARGS``; return what it printed (stdout and stderr together). With ``echo`` its output is also
    shown as it comes (a download's progress). A non-zero exit is a ``KaggleError`` naming the command, the
    client's message line and what to do."""
    command = [kaggle_executable(), *args]
    shown = "kaggle " + " ".join(args[:2])
    try:
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as process:
            output = _collect(process, echo, timeout)
            status = process.wait()
    except subprocess.TimeoutExpired:
        raise KaggleError(f"`{shown}` gave no answer in {timeout:.0f} s; check the connection and run again") from None
    except OSError as err:
        raise KaggleError(f"`{shown}` could not be started ({err.strerror}); {INSTALL_HINT}") from err
    if status != 0:
        message = message_line(output)
        raise KaggleError(f"`{shown}` failed (exit {status}): {message}; {failure_hint(message)}")
    return output


def _collect(process: subprocess.Popen[bytes], echo: bool, timeout: float | None) -> str:
    """The process's output (its last ``_TAIL_CHARS``), shown as it comes when ``echo``; stopped after ``timeout``."""
    if not echo:
        try:
            out, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        return out.decode("utf-8", "replace")[-_TAIL_CHARS:]
    assert process.stdout is not None
    tail = ""
    while chunk := os.read(process.stdout.fileno(), 4096):
        text = chunk.decode("utf-8", "replace")
        sys.stdout.write(text)
        sys.stdout.flush()
        tail = (tail + text)[-_TAIL_CHARS:]
    return tail


def download_competition(folder: Path) -> Path:
    """``kaggle competitions download -c ultrasound-nerve-segmentation -p FOLDER`` with its progress shown; the
    zip it wrote (the client skips a download that is already there and up to date)."""
    check_credentials()
    folder.mkdir(parents=True, exist_ok=True)
    run_kaggle(["competitions", "download", "-c", COMPETITION, "-p", str(folder)], echo=True)
    expected = folder / f"{COMPETITION}.zip"
    if expected.is_file():
        return expected
    zips = sorted(folder.glob("*.zip"), key=lambda path: path.stat().st_mtime)
    if not zips:
        raise KaggleError(f"`kaggle competitions download` wrote no zip into {folder}; run it by hand to see why")
    return zips[-1]


def submit(csv_path: Path, message: str) -> str:
    """``kaggle competitions submit -c ultrasound-nerve-segmentation -f CSV -m MESSAGE``; a line with its answer.

    The client exits 0 even when the upload failed ("Could not submit to competition"), so that answer is read too.
    Any failure (no client, no credentials, the client's error) is one line that ends saying how to upload by hand.
    """
    try:
        check_credentials()
        output = run_kaggle(["competitions", "submit", "-c", COMPETITION, "-f", str(csv_path), "-m", message])
        answer = message_line(output)
        if any(word in answer.lower() for word in _SUBMIT_FAILED):
            raise KaggleError(f"`kaggle competitions submit` did not submit {csv_path.name}: {answer}")
    except KaggleError as err:
        raise KaggleError(f"{err}. {hand_upload(csv_path, message)}") from None
    return f"uploaded {csv_path.name} to Kaggle: {answer} (message: {message})"


def hand_upload(csv_path: Path, message: str) -> str:
    """How to upload a kept submission by hand, in one sentence."""
    return (
        f"The file is kept: upload it by hand with `kaggle competitions submit -c {COMPETITION} -f {csv_path} "
        f"-m {shlex.quote(message)}` or on {COMPETITION_URL}/submit"
    )


def list_submissions() -> list[KaggleSubmission]:
    """One's submissions to the competition, newest first (the client shows the 20 newest), with their scores."""
    check_credentials()
    return parse_submissions(run_kaggle(["competitions", "submissions", "-c", COMPETITION, "--csv"]))


SUBMISSIONS_HEADER = ("fileName", "date", "description", "status", "publicScore", "privateScore")


def parse_submissions(output: str) -> list[KaggleSubmission]:
    """The rows of ``kaggle competitions submissions --csv`` (its header is found below any warning lines the
    client prints first); "No submissions found" gives an empty list."""
    lines = output.replace("\r\n", "\n").split("\n")
    start = next((i for i, line in enumerate(lines) if line.startswith(SUBMISSIONS_HEADER[0] + ",")), None)
    if start is None:
        if any("no submissions found" in line.lower() for line in lines):
            return []
        raise KaggleError(
            f"`kaggle competitions submissions --csv` printed no table ({message_line(output)}); "
            "type the scores in with --public and --private"
        )
    rows = list(csv.DictReader(io.StringIO("\n".join(lines[start:]))))
    missing = set(SUBMISSIONS_HEADER) - set(rows[0] if rows else SUBMISSIONS_HEADER)
    if missing:
        raise KaggleError(f"the client's submissions table lacks {sorted(missing)}; type the scores in with --public")
    return [_submission(row) for row in rows]


def _submission(row: dict[str, str]) -> KaggleSubmission:
    scores = _score(row["publicScore"]), _score(row["privateScore"])
    return KaggleSubmission(row["fileName"], row["date"], row["description"], row["status"], *scores)


def _score(text: str | None) -> float | None:
    """A leaderboard score as the client prints it; None for a pending or missing one ("", "None", "nan")."""
    try:
        value = float(text or "")
    except ValueError:
        return None
    return value if math.isfinite(value) else None


__all__ = [
    "COMPETITION",
    "KaggleError",
    "KaggleSubmission",
    "check_credentials",
    "credential_sources",
    "download_competition",
    "kaggle_executable",
    "list_submissions",
    "message_line",
    "parse_submissions",
    "run_kaggle",
    "submit",
]
