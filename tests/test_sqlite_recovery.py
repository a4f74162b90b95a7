"""A kill -9 inside a SQLite commit leaves a hot journal (or, in WAL mode, a -wal). `plan`,
`run` and `fingerprint` keep a copy of it beside the database, let SQLite roll it back,
and go on: the data is what it was before the interrupted transaction, judged by
tests/digests.py, and a resumed run ends exactly where an uninterrupted one ends."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
from pathlib import Path

import pytest

from handrail.resources import SQLite
from handrail.resources.sqlite import CRASH_IN_COMMIT_ENV

from .digests import sqlite_digest
from .helpers import cli_proc, make_items_db, write
from .sqlite_faults import is_hot, kill_inside_transaction

RUNBOOK = """
from pathlib import Path
from handrail import Backfill, Runbook, SQLite
db = SQLite("db", Path(__file__).parent / "x.db")
def rename(row):
    return {"name": row["name"] + " renamed" * 20, "status": "done"}
runbook = Runbook("recovery", steps=[Backfill("rename", db, table="items", key="id",
                                              columns=["name", "status"], compute=rename,
                                              batch_size=300)])
"""
DEAD_WRITER = "UPDATE items SET name = name || ' by a writer that died', status = 'dead'"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def evidence(db: Path, side: str = "journal") -> list[Path]:
    return sorted(db.parent.glob(f"{db.name}-{side}.handrail-*"))


@pytest.fixture
def hot(tmp_path: Path) -> tuple[Path, dict[str, object], str]:
    """A database with a hot journal; its digest before the dead transaction; the journal's
    sha256 as the crash left it."""
    db = make_items_db(tmp_path / "x.db", n=3000)
    write(tmp_path / "rb.py", RUNBOOK)
    before = sqlite_digest(db)
    kill_inside_transaction(db, DEAD_WRITER)
    assert is_hot(db)
    return db, before, sha(Path(f"{db}-journal"))


@pytest.mark.parametrize("command", ["plan", "fingerprint"])
def test_hot_journal_is_kept_then_rolled_back(
    hot: tuple[Path, dict[str, object], str], command: str
) -> None:
    db, before, journal_sha = hot
    args = ["plan", db.parent / "rb.py"] if command == "plan" else ["fingerprint", db]
    done = cli_proc(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "restore it from a backup" not in done.stdout + done.stderr
    assert not Path(f"{db}-journal").exists()
    assert sqlite_digest(db) == before  # the dead writer's half transaction is gone
    [kept] = evidence(db)
    assert sha(kept) == journal_sha  # the evidence is the journal exactly as found


def test_fingerprint_after_recovery_equals_the_data_before(
    hot: tuple[Path, dict[str, object], str], tmp_path: Path
) -> None:
    db, _, _ = hot
    # The pre-crash content, rebuilt independently: the same maker, same rows.
    clean = make_items_db(tmp_path / "clean.db", n=3000)
    assert SQLite("a", db).fingerprint() == SQLite("b", clean).fingerprint()


def _reference(tmp_path: Path, wal: bool) -> tuple[dict[str, object], dict[str, object]]:
    """(digest before, digest after) of an uninterrupted run, without handrail's tables."""
    root = tmp_path / "reference"
    db = _project(root, wal)
    before = sqlite_digest(db, include_handrail=False)
    done = cli_proc("run", root / "rb.py", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    return before, sqlite_digest(db, include_handrail=False)


def _project(root: Path, wal: bool) -> Path:
    root.mkdir(parents=True)
    db = make_items_db(root / "x.db", n=3000)
    if wal:
        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
        conn.close()
    write(root / "rb.py", RUNBOOK)
    return db


@pytest.mark.parametrize("wal", [False, True], ids=["rollback-journal", "wal"])
@pytest.mark.parametrize("at", [1, 4, 10])
def test_run_killed_inside_a_commit_resumes_to_the_uninterrupted_result(
    tmp_path: Path, wal: bool, at: int
) -> None:
    before, after = _reference(tmp_path, wal)
    root = tmp_path / "crashed"
    db = _project(root, wal)
    killed = cli_proc("run", root / "rb.py", "--yes", env={CRASH_IN_COMMIT_ENV: str(at)})
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    if wal:
        assert Path(f"{db}-wal").stat().st_size > 0  # uncommitted frames left behind
    else:
        assert is_hot(db)
    resumed = cli_proc("run", root / "rb.py", "--yes")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert sqlite_digest(db, include_handrail=False) == after
    # A WAL left by a crash reads fine (its uncommitted frames are ignored): no copy needed.
    assert bool(evidence(db)) is not wal, "a hot journal's copy is kept"
    undone = cli_proc("rollback", root / "rb.py")
    assert undone.returncode == 0, undone.stdout + undone.stderr
    assert sqlite_digest(db, include_handrail=False) == before


def test_wal_left_by_a_crash_without_its_shm_is_recovered_with_a_copy(tmp_path: Path) -> None:
    """What validation does when the read-only open of a WAL database fails (e.g. its -shm
    is gone and cannot be made read-only): the -wal is copied aside, then a read-write open
    rebuilds the index and the uncommitted frames are dropped."""
    db = _project(tmp_path / "w", wal=True)
    before = sqlite_digest(db)
    kill_inside_transaction(db, DEAD_WRITER)
    Path(f"{db}-shm").unlink()
    assert Path(f"{db}-wal").stat().st_size > 0
    recovered = SQLite("db", db).recover_after_crash(wal=True)
    assert [p.name for p in recovered] == [p.name for p in evidence(db, "wal")]
    assert sqlite_digest(db) == before


def test_zero_byte_database_validates_and_fingerprints(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    SQLite("db", empty).validate()  # a zero-byte file is a valid empty database
    done = cli_proc("fingerprint", "--kind", "sqlite", empty, "--parts")
    assert done.returncode == 0, done.stdout + done.stderr
    other = tmp_path / "other.db"
    sqlite3.connect(other).close()
    assert SQLite("a", empty).fingerprint() == SQLite("b", other).fingerprint()
    assert empty.stat().st_size == 0  # reading it did not write it


def test_a_live_writer_is_not_mistaken_for_a_crash(tmp_path: Path) -> None:
    """A journal whose writer is alive is its transaction in progress: no copy, no
    rollback; the writer spilled into the file, so it holds the exclusive lock, and the
    answer is "locked by" this very process (the test), exit 2."""
    db = make_items_db(tmp_path / "x.db", n=3000)
    before = sqlite_digest(db)
    writer = sqlite3.connect(db, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute(DEAD_WRITER)
        writer.execute("PRAGMA cache_size=1")
        writer.execute("CREATE TABLE pad (b BLOB)")
        writer.execute("INSERT INTO pad VALUES (zeroblob(1048576))")  # spill into the file
        assert Path(f"{db}-journal").stat().st_size > 0
        done = cli_proc("fingerprint", db)
        assert done.returncode == 2, done.stdout + done.stderr
        assert f"locked by pid {os.getpid()}" in done.stderr
        assert not evidence(db)
        assert Path(f"{db}-journal").exists()
        writer.execute("ROLLBACK")
    finally:
        writer.close()
    assert sqlite_digest(db) == before
