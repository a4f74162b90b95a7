"""The Postgres resource on a real throwaway cluster: fingerprints, snapshots, restores,
clones, lock timeouts, the ledger, and passwords kept out of everything shown."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from handrail.errors import ResourceError
from handrail.resources.base import verify_backup
from handrail.resources.postgres import LockTimeout, Postgres

pytestmark = pytest.mark.postgres

SETUP = """
CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL, score double precision,
                    at timestamptz DEFAULT '2024-01-01T00:00:00Z', doc jsonb);
CREATE INDEX items_name ON items (name);
INSERT INTO items SELECT g, 'item ' || g, g / 7.0,
    '2024-01-01'::timestamptz + g * interval '1 hour', jsonb_build_object('n', g)
    FROM generate_series(1, 3000) g;
CREATE SCHEMA app;
CREATE TABLE app.notes (id serial PRIMARY KEY, body text);
INSERT INTO app.notes (body) VALUES ('a'), ('b');
CREATE TABLE bag (x int, y text);
INSERT INTO bag VALUES (1, 'a'), (1, 'a'), (2, NULL);
"""


def run(dsn: str, sql: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.encode())


def rows(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql.encode()).fetchall()


@pytest.fixture
def db(pg_dsn: str) -> Postgres:
    run(pg_dsn, SETUP)
    return Postgres("app", pg_dsn)


def test_fingerprint_is_stable_and_names_the_changed_table(db: Postgres, pg_dsn: str) -> None:
    fp = db.fingerprint()
    assert fp == db.fingerprint()
    assert {"rows:public.items", "schema:public.items", "rows:app.notes", "rows:public.bag"} <= set(
        fp.parts
    )
    assert fp.parts["rows:public.items"].startswith("3000:")
    run(pg_dsn, "UPDATE items SET score = score + 1e-9 WHERE id = 1234")
    after = db.fingerprint()
    assert fp.diff(after) == ["rows:public.items: changed"]
    run(pg_dsn, "CREATE INDEX items_score ON items (score)")
    assert "schema:public.items: changed" in after.diff(db.fingerprint())


def test_fingerprint_ignores_handrail_bookkeeping(db: Postgres, pg_dsn: str) -> None:
    fp = db.fingerprint()
    with db.connect() as conn, conn.transaction():
        Postgres.ledger_mark(conn, "run1", "copy", 0, 10)
    run(pg_dsn, "CREATE TABLE _handrail_undo (x int); INSERT INTO _handrail_undo VALUES (1)")
    assert db.fingerprint() == fp


def test_snapshot_verifies_by_restoring_into_a_scratch_database(
    db: Postgres, tmp_path: Path
) -> None:
    backup = db.snapshot(tmp_path / "backups")
    assert backup.path is not None
    assert backup.path.exists()
    assert backup.size > 0
    assert backup.fingerprint == db.fingerprint()
    evidence = verify_backup(db, backup, tmp_path / "scratch")
    assert evidence["restore_test"] == "restored into scratch copy; fingerprint equal"
    assert evidence["fingerprint"] == backup.fingerprint.digest


def test_restore_after_changes_gives_back_the_exact_fingerprint(
    db: Postgres, pg_dsn: str, tmp_path: Path
) -> None:
    backup = db.snapshot(tmp_path)
    run(
        pg_dsn,
        """
        UPDATE items SET name = 'changed' WHERE id < 100;
        DELETE FROM items WHERE id > 2900;
        ALTER TABLE items ADD COLUMN extra text;
        DROP TABLE bag;
        CREATE TABLE created_later (id int);
        CREATE SCHEMA later; CREATE TABLE later.t (x int);
        CREATE VIEW v AS SELECT id FROM items;
        INSERT INTO app.notes (body) VALUES ('c');
        """,
    )
    assert db.fingerprint() != backup.fingerprint
    db.restore(backup)
    assert db.fingerprint() == backup.fingerprint
    assert rows(pg_dsn, "SELECT to_regclass('created_later'), to_regclass('later.t')") == [
        (None, None)
    ]
    assert rows(pg_dsn, "SELECT nextval('app.notes_id_seq')") == [(3,)]


def test_restore_is_one_transaction(db: Postgres, pg_dsn: str, tmp_path: Path) -> None:
    backup = db.snapshot(tmp_path)
    run(pg_dsn, "UPDATE items SET name = 'changed' WHERE id = 1")
    changed = db.fingerprint()
    # a session holding a lock on items makes the restore fail part-way: nothing applies
    holder = psycopg.connect(pg_dsn)
    holder.execute("LOCK TABLE items IN ACCESS SHARE MODE")
    slow = Postgres("app", pg_dsn, lock_timeout="300ms")
    with pytest.raises(Exception, match="lock"):
        slow.restore(backup)
    holder.close()
    assert db.fingerprint() == changed


def test_schema_scope_restores_only_that_schema(pg_dsn: str, tmp_path: Path) -> None:
    run(pg_dsn, SETUP)
    scoped = Postgres("notes", pg_dsn, schemas=["app"])
    fp = scoped.fingerprint()
    assert all(":app." in k for k in fp.parts)
    backup = scoped.snapshot(tmp_path)
    run(pg_dsn, "DELETE FROM app.notes; CREATE TABLE app.new (x int); DELETE FROM items")
    scoped.restore(backup)
    assert scoped.fingerprint() == fp
    assert rows(pg_dsn, "SELECT count(*) FROM items") == [(0,)]  # outside the scope


def test_clone_uses_the_template_and_discard_drops_it(db: Postgres, tmp_path: Path) -> None:
    fp = db.fingerprint()
    copy = db.clone(tmp_path)
    try:
        assert copy.clone_method == "template"
        assert copy.dbname != db.dbname
        assert copy.fingerprint() == fp
    finally:
        copy.discard()
    assert not copy.exists()
    with pytest.raises(ResourceError, match="did not create"):
        db.discard()


def test_clone_falls_back_to_a_dump_when_others_are_connected(
    db: Postgres, pg_dsn: str, tmp_path: Path
) -> None:
    fp = db.fingerprint()
    with psycopg.connect(pg_dsn):
        copy = db.clone(tmp_path)
    try:
        assert copy.clone_method == "dump"
        assert copy.fingerprint() == fp
    finally:
        copy.discard()


def test_passwords_never_show(pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run(pg_dsn, SETUP)
    secret = "s3cr3t-pw"
    dsn = pg_dsn.replace("postgres@", f"postgres:{secret}@")
    db = Postgres("app", dsn)
    assert secret not in db.location()
    assert "***" in db.location()
    assert secret not in repr(db)
    argv: list[list[str]] = []
    real = subprocess.run

    def recording(cmd: Any, *a: Any, **kw: Any) -> Any:
        argv.append([str(x) for x in cmd])
        return real(cmd, *a, **kw)

    monkeypatch.setattr(subprocess, "run", recording)
    backup = db.snapshot(tmp_path)
    db.restore(backup)
    assert argv
    assert not any(secret in " ".join(cmd) for cmd in argv)
    assert secret not in str(backup.meta)
    bad = Postgres("app", dsn.replace(pg_dsn.rsplit(":", 1)[1].split("/")[0], "1"))
    with pytest.raises(ResourceError) as err:
        bad.validate()
    assert secret not in str(err.value)
    assert "cannot connect" in str(err.value)
    kv = Postgres("kv", f"host=127.0.0.1 port=1 dbname=x password={secret}")
    assert secret not in kv.location()


def test_ddl_gives_up_on_a_held_lock(db: Postgres, pg_dsn: str) -> None:
    holder = psycopg.connect(pg_dsn)
    holder.execute("LOCK TABLE items IN ACCESS SHARE MODE")
    try:
        with pytest.raises(LockTimeout, match="lock_timeout=200ms"):
            db.run_ddl("ALTER TABLE items ADD COLUMN blocked text", lock_timeout="200ms")
    finally:
        holder.close()
    db.run_ddl(["ALTER TABLE items ADD COLUMN added text", "CREATE INDEX ON items (added)"])
    assert rows(pg_dsn, "SELECT count(*) FROM items WHERE added IS NULL") == [(3000,)]


def test_ledger_marks_commit_with_the_batch_and_only_once(db: Postgres) -> None:
    assert db.ledger_batches("r1", "copy") == set()
    with db.connect() as conn:
        with conn.transaction():
            conn.execute("UPDATE items SET name = 'b0' WHERE id = 1")
            Postgres.ledger_mark(conn, "r1", "copy", 0, 1, [{"key": "7", "reason": "bad"}])
        with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
            Postgres.ledger_mark(conn, "r1", "copy", 0, 1)
        try:
            with conn.transaction():
                conn.execute("UPDATE items SET name = 'b1' WHERE id = 2")
                Postgres.ledger_mark(conn, "r1", "copy", 1, 1)
                raise RuntimeError("crash before commit")
        except RuntimeError:
            pass
    assert db.ledger_batches("r1", "copy") == {0}
    assert db.ledger_rejects("r1", "copy") == [{"key": "7", "reason": "bad"}]
    assert rows(db.dsn, "SELECT name FROM items WHERE id IN (1, 2) ORDER BY id") == [
        ("b0",),
        ("item 2",),
    ]
    db.ledger_clear("r1", "copy")
    assert db.ledger_batches("r1", "copy") == set()


def test_absent_database(pg_cluster: Any, tmp_path: Path) -> None:
    ghost = Postgres("ghost", pg_cluster.dsn("no_such_db"))
    assert not ghost.exists()
    assert ghost.fingerprint().absent
    backup = ghost.snapshot(tmp_path)
    assert backup.absent
