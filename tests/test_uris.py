"""The URI helpers that tracking (MLflow) and tuning (Optuna) share."""

from __future__ import annotations

from pathlib import Path

import pytest

from nerveseg.uris import redact_uri, sqlite_path


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        (
            "postgresql+psycopg2://nobody:secret@127.0.0.1:9/optuna",
            "postgresql+psycopg2://nobody:***@127.0.0.1:9/optuna",
        ),
        ("http://user:pw@host:5000", "http://user:***@host:5000"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    ],
)
def test_redact_uri_hides_only_the_password(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("sqlite:///relative.db", Path("relative.db")),
        ("sqlite:////abs/dir/x.db", Path("/abs/dir/x.db")),
        ("sqlite:///x.db?timeout=5", Path("x.db")),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("postgresql://h/db", None),
        ("not a uri", None),
    ],
)
def test_sqlite_path(uri: str, path: Path | None) -> None:
    assert sqlite_path(uri) == path


def test_the_shared_helpers_import_neither_mlflow_nor_optuna() -> None:
    import subprocess
    import sys

    probe = (
        "import sys, nerveseg.uris; print(sorted(m for m in ('mlflow', 'optuna', 'sqlalchemy') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", probe], cwd=root, env={"PYTHONPATH": str(root / "src")},
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert done.stdout.strip() == "[]"
