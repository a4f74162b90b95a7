"""PostgreSQL steps through the executor: SQL with its inverse, lock timeouts that give up
instead of stalling the application, exact rollback to the fingerprint."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from handrail import Runbook, RunStatus
from handrail.resources.postgres import Postgres
from handrail.steps.pg_sql import PgSQL

from .helpers import run_runbook

pytestmark = pytest.mark.postgres


def test_pg_sql_applies_and_rolls_back_exactly(pg_dsn: str, tmp_path: Path) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text)")
        conn.execute("INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 50) g")
    db = Postgres("pg", pg_dsn)
    before = db.fingerprint().digest
    step = PgSQL(
        "add column",
        db,
        up=[
            "ALTER TABLE items ADD COLUMN status text",
            "CREATE INDEX items_status ON items (status)",
            "UPDATE items SET status = 'new'",
        ],
        down=["DROP INDEX items_status", "ALTER TABLE items DROP COLUMN status"],
        verify="SELECT count(*) = 50 FROM items WHERE status = 'new'",
    )
    ex, result = run_runbook(Runbook("pg", steps=[step]), tmp_path / ".handrail", auto_approve=True)
    assert result.status is RunStatus.COMPLETED, result.message
    assert db.fingerprint().digest != before
    assert ex.rollback(result.run_id).exit_code == 0
    assert db.fingerprint().digest == before


def test_ddl_gives_up_on_a_held_lock_and_changes_nothing(pg_dsn: str, tmp_path: Path) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY)")
    db = Postgres("pg", pg_dsn)
    before = db.fingerprint().digest
    step = PgSQL(
        "add column",
        db,
        up="ALTER TABLE items ADD COLUMN x int",
        down="ALTER TABLE items DROP COLUMN x",
        lock_timeout="300ms",
    )
    with psycopg.connect(pg_dsn) as app:  # the application holds a lock in a transaction
        app.execute("LOCK TABLE items IN ACCESS SHARE MODE")
        _, result = run_runbook(
            Runbook("pg", steps=[step]), tmp_path / ".handrail", auto_approve=True
        )
    assert result.status is RunStatus.FAILED
    assert "lock_timeout=300ms" in result.message
    assert db.fingerprint().digest == before
