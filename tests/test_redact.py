"""Secrets never reach logs, the journal or reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from handrail import Journal
from handrail.redact import redact, register_secret


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("postgresql://app:s3cr3t-pw@db.local:5432/prod", "s3cr3t-pw"),
        ("host=db user=app password=hunter22 dbname=prod", "hunter22"),
        ("host=db password='two words' dbname=prod", "two words"),
        ("Authorization: Bearer abc.def.ghi", "abc.def.ghi"),
        ("https://api.local/v1/videos?access_token=tok123&x=1", "tok123"),
    ],
)
def test_redact_masks_known_secret_shapes(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out
    assert "***" in out


def test_registered_secrets_never_reach_the_journal(tmp_path: Path) -> None:
    register_secret("tok-very-secret-42")
    journal = Journal(tmp_path)
    journal.event(
        None,
        "test",
        "pushing with tok-very-secret-42",
        data={"dsn": "postgresql://u:pw-in-dsn@h/db", "token": "tok-very-secret-42"},
    )
    journal.close()
    raw = (tmp_path / "journal.sqlite").read_bytes()
    wal = tmp_path / "journal.sqlite-wal"
    raw += wal.read_bytes() if wal.exists() else b""
    assert b"tok-very-secret-42" not in raw
    assert b"pw-in-dsn" not in raw
