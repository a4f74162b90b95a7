"""SQLite resource: logical fingerprints, consistent snapshots, exact restores, clear errors."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from handrail.errors import BackupError, ResourceError
from handrail.resources import SQLite, verify_backup
from handrail.resources.sqlite import LEDGER_PREFIX

from .helpers import make_items_db


def test_fingerprint_ignores_insertion_order_and_file_layout(tmp_path: Path) -> None:
    a = make_items_db(tmp_path / "a.db")
    b = tmp_path / "b.db"
    conn = sqlite3.connect(b)
    conn.execute(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, status TEXT, score REAL)"
    )
    rows = [(i, f"item {i}", "new" if i % 3 else "old", i / 7) for i in range(50, 0, -1)]
    conn.executemany("INSERT INTO items VALUES (?,?,?,?)", rows)
    conn.commit()
    conn.execute("VACUUM")
    conn.close()
    assert SQLite("a", a).fingerprint().digest == SQLite("b", b).fingerprint().digest


@pytest.mark.parametrize(
    ("sql", "part"),
    [
        ("UPDATE items SET name='x' WHERE id=3", "rows:items"),
        ("UPDATE items SET score=score+1e-15 WHERE id=40", "rows:items"),  # exact REAL
        ("CREATE INDEX i ON items(status)", "schema:index:i"),
        ("ALTER TABLE items ADD COLUMN extra TEXT", "schema:table:items"),
    ],
)
def test_fingerprint_sees_every_change_and_names_it(tmp_path: Path, sql: str, part: str) -> None:
    db = SQLite("db", make_items_db(tmp_path / "x.db"))
    before = db.fingerprint()
    conn = sqlite3.connect(db.path)
    conn.execute(sql)
    conn.commit()
    conn.close()
    after = db.fingerprint()
    assert after.digest != before.digest
    assert any(d.startswith(part) for d in before.diff(after)), before.diff(after)


def test_fingerprint_distinguishes_storage_types(tmp_path: Path) -> None:
    fps = []
    for value in (2, 2.0, "2", b"2"):
        path = tmp_path / f"t{len(fps)}.db"
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE t (v)")  # no affinity: the value keeps its type
        conn.execute("INSERT INTO t VALUES (?)", (value,))
        conn.commit()
        conn.close()
        fps.append(SQLite("t", path).fingerprint().digest)
    assert len(set(fps)) == 4


def test_fingerprint_ignores_handrail_ledger_tables(tmp_path: Path) -> None:
    db = SQLite("db", make_items_db(tmp_path / "x.db"))
    before = db.fingerprint()
    conn = sqlite3.connect(db.path)
    conn.execute(f"CREATE TABLE {LEDGER_PREFIX}ledger (x)")
    conn.execute(f"INSERT INTO {LEDGER_PREFIX}ledger VALUES (1)")
    conn.commit()
    conn.close()
    assert db.fingerprint().digest == before.digest


def test_snapshot_verify_restore_roundtrip(tmp_path: Path) -> None:
    db = SQLite("db", make_items_db(tmp_path / "x.db", n=500))
    before = db.fingerprint()
    backup = db.snapshot(tmp_path / "backups")
    assert backup.fingerprint.digest == before.digest
    evidence = verify_backup(db, backup, tmp_path / "scratch")
    assert evidence["fingerprint"] == before.digest
    assert not (tmp_path / "scratch").exists()
    conn = sqlite3.connect(db.path)
    conn.execute("DELETE FROM items WHERE id > 10")
    conn.execute("CREATE TABLE later (x)")
    conn.commit()
    conn.close()
    assert db.fingerprint().digest != before.digest
    db.restore(backup)
    assert db.fingerprint().digest == before.digest


def test_damaged_backup_is_refused(tmp_path: Path) -> None:
    db = SQLite("db", make_items_db(tmp_path / "x.db"))
    backup = db.snapshot(tmp_path / "backups")
    assert backup.path is not None
    with backup.path.open("r+b") as f:
        f.seek(200)
        f.write(b"\x00garbage\x00")
    with pytest.raises(BackupError, match="does not match its checksum"):
        verify_backup(db, backup, tmp_path / "scratch")
    with pytest.raises(BackupError):
        db.restore(backup)


def test_absent_database_snapshot_restores_to_absent(tmp_path: Path) -> None:
    db = SQLite("db", tmp_path / "new.db", create=True)
    backup = db.snapshot(tmp_path / "b")
    assert backup.absent
    make_items_db(db.path)
    db.restore(backup)
    assert not db.path.exists()


def test_missing_database_is_an_error_unless_created(tmp_path: Path) -> None:
    with pytest.raises(ResourceError, match="does not exist"):
        SQLite("db", tmp_path / "nope.db").validate()
    SQLite("db", tmp_path / "nope.db", create=True).validate()


def test_corrupt_database_is_a_clear_error(tmp_path: Path) -> None:
    path = make_items_db(tmp_path / "x.db", n=2000)
    data = bytearray(path.read_bytes())
    data[4096:8192] = b"\xff" * 4096
    path.write_bytes(bytes(data))
    with pytest.raises(ResourceError, match=r"x\.db"):
        SQLite("db", path).validate()
    not_db = tmp_path / "text.db"
    not_db.write_text("hello, I am not a database\n" * 100)
    with pytest.raises(ResourceError, match="not a usable SQLite database"):
        SQLite("db", not_db).validate()


def test_clone_is_independent(tmp_path: Path) -> None:
    db = SQLite("db", make_items_db(tmp_path / "x.db"))
    clone = db.clone(tmp_path / "scratch")
    assert clone.path != db.path
    assert clone.fingerprint().digest == db.fingerprint().digest
    conn = sqlite3.connect(clone.path)
    conn.execute("DELETE FROM items")
    conn.commit()
    conn.close()
    assert clone.fingerprint().digest != db.fingerprint().digest


def test_snapshot_is_consistent_while_another_process_writes(tmp_path: Path) -> None:
    """A writer keeps two tables in lockstep; every snapshot must show them equal."""
    path = tmp_path / "busy.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript("CREATE TABLE a (n INTEGER); CREATE TABLE b (n INTEGER);")
    conn.commit()
    conn.close()
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import sqlite3, time
        c = sqlite3.connect({str(path)!r}, timeout=30, isolation_level=None)
        deadline = time.time() + 3
        i = 0
        while time.time() < deadline:
            c.execute("BEGIN IMMEDIATE")
            c.executemany("INSERT INTO a VALUES (?)", [(i,)] * 50)
            c.executemany("INSERT INTO b VALUES (?)", [(i,)] * 50)
            c.execute("COMMIT")
            i += 1
    """),
        ]
    )
    try:
        db = SQLite("db", path)
        deadline = time.monotonic() + 20
        while db.query("SELECT count(*) FROM a")[0][0] == 0:
            assert time.monotonic() < deadline, "the writer never started"
            time.sleep(0.01)
        counts = []
        for n in range(6):
            backup = db.snapshot(tmp_path / f"b{n}")
            assert backup.path is not None
            c = sqlite3.connect(backup.path)
            a, b = c.execute("SELECT (SELECT count(*) FROM a), (SELECT count(*) FROM b)").fetchone()
            c.close()
            assert a == b
            counts.append(a)
            time.sleep(0.05)
    finally:
        writer.wait(timeout=30)
    assert counts[0] > 0
    assert counts[-1] > counts[0]  # the writer really was writing during the snapshots
