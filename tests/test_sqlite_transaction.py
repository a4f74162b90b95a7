"""SQLite.transaction: commit on success; on any exception (the COMMIT's own included)
roll back and re-raise the original error; a busy database fails before the block runs."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from handrail import SQLite
from handrail.resources.sqlite import connect

from .digests import sqlite_digest


def make(path: Path) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(
            "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
            "CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER "
            "REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);"
            "INSERT INTO parent VALUES (1);"
        )


def test_commits_what_the_block_wrote(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    make(path)
    with closing(connect(path)) as conn, SQLite.transaction(conn):
        conn.execute("INSERT INTO child VALUES (1, 1)")
    with closing(sqlite3.connect(path)) as other:
        assert other.execute("SELECT * FROM child").fetchall() == [(1, 1)]


def test_an_error_in_the_block_rolls_back_and_is_raised(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    make(path)
    before = sqlite_digest(path)
    with closing(connect(path)) as conn:

        def write_then_fail() -> None:
            with SQLite.transaction(conn):
                conn.execute("INSERT INTO child VALUES (1, 1)")
                raise KeyError("boom")

        with pytest.raises(KeyError, match="boom"):
            write_then_fail()
        assert not conn.in_transaction
    assert sqlite_digest(path) == before


def test_a_failed_commit_rolls_back_and_its_error_is_raised(tmp_path: Path) -> None:
    """A deferred foreign key fails at COMMIT, which leaves the transaction open."""
    path = tmp_path / "t.db"
    make(path)
    before = sqlite_digest(path)
    with closing(connect(path)) as conn:
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"), SQLite.transaction(conn):
            conn.execute("INSERT INTO child VALUES (1, 99)")
        assert not conn.in_transaction
    assert sqlite_digest(path) == before


def test_a_busy_database_fails_before_the_block_runs(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    make(path)
    ran = False
    with closing(connect(path)) as holder, closing(connect(path, timeout=0.1)) as conn:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError, match="locked"), SQLite.transaction(conn):
            ran = True
        holder.execute("ROLLBACK")
    assert not ran
