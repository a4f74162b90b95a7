"""SQL steps on SQLite: idempotent schema changes whose rollback removes only what the run
added, free SQL with up/down/verify, and the exactly-once ledger."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from handrail import (
    SQL,
    AddColumns,
    BadInput,
    CreateIndex,
    CreateSchema,
    Runbook,
    RunStatus,
    SQLite,
)
from handrail.steps.sql import split_sql

from .helpers import make_items_db, run_runbook


def columns(db: SQLite, table: str) -> list[str]:
    return db.schema()[table]["columns"]


def test_add_columns_is_idempotent_and_rollback_drops_only_its_own(tmp_path: Path) -> None:
    db = SQLite("db", make_items_db(tmp_path / "x.db"))
    conn = sqlite3.connect(db.path)
    conn.execute("ALTER TABLE items ADD COLUMN domain TEXT")  # already there before the run
    conn.commit()
    conn.close()
    before = db.fingerprint().digest
    step = AddColumns(
        "cols",
        db,
        table="items",
        columns={"domain": "TEXT", "domain_status": "TEXT", "pushed_at": "TEXT"},
    )
    ex, result = run_runbook(Runbook("t", steps=[step]), tmp_path / ".handrail", auto_approve=True)
    assert result.status is RunStatus.COMPLETED, result.message
    assert columns(db, "items")[-3:] == ["domain", "domain_status", "pushed_at"]
    assert ex.journal.step(result.run_id, "cols").state["added"] == ["domain_status", "pushed_at"]
    # A second run adds nothing and its rollback drops nothing.
    ex2, again = run_runbook(
        Runbook("t", steps=[step]), tmp_path / "second" / ".handrail", auto_approve=True
    )
    assert again.status is RunStatus.COMPLETED, again.message
    assert ex2.journal.step(again.run_id, "cols").state["added"] == []
    ex2.rollback(again.run_id)
    assert "domain_status" in columns(db, "items")
    ex.rollback(result.run_id)
    assert columns(db, "items")[-1] == "domain"  # the pre-existing column stays
    assert db.fingerprint().digest == before


def test_create_index_rollback_only_if_created(tmp_path: Path) -> None:
    db = SQLite("db", make_items_db(tmp_path / "x.db"))
    before = db.fingerprint().digest
    step = CreateIndex("idx", db, index="idx_status", table="items", columns=["status"])
    ex, result = run_runbook(Runbook("t", steps=[step]), tmp_path / ".handrail", auto_approve=True)
    assert result.status is RunStatus.COMPLETED, result.message
    assert db.schema()["idx_status"]["type"] == "index"
    ex.rollback(result.run_id)
    assert "idx_status" not in db.schema()
    assert db.fingerprint().digest == before


def test_create_schema_creates_the_file_and_rollback_removes_it(tmp_path: Path) -> None:
    db = SQLite("db", tmp_path / "new.db", create=True)
    step = CreateSchema(
        "schema",
        db,
        ddl="""
        CREATE TABLE IF NOT EXISTS a (id INTEGER PRIMARY KEY AUTOINCREMENT, x TEXT);
        CREATE INDEX IF NOT EXISTS a_x ON a(x);
    """,
    )
    ex, result = run_runbook(Runbook("t", steps=[step]), tmp_path / ".handrail", auto_approve=True)
    assert result.status is RunStatus.COMPLETED, result.message
    assert set(db.schema()) == {"a", "a_x"}
    ex.rollback(result.run_id)
    assert not db.path.exists()


def test_sql_up_down_verify(tmp_path: Path) -> None:
    db = SQLite("db", make_items_db(tmp_path / "x.db"))
    before = db.fingerprint().digest
    step = SQL(
        "rename status",
        db,
        up="UPDATE items SET status='legacy' WHERE status='old'; -- comment ; here\n"
        "UPDATE items SET score = -1 WHERE id = 1;",
        down="UPDATE items SET status='old' WHERE status='legacy';\n"
        "UPDATE items SET score = 1.0/7 WHERE id = 1;",
        verify="SELECT count(*) = 0 FROM items WHERE status = 'old'",
    )
    ex, result = run_runbook(Runbook("t", steps=[step]), tmp_path / ".handrail", auto_approve=True)
    assert result.status is RunStatus.COMPLETED, result.message
    assert db.query("SELECT count(*) FROM items WHERE status='legacy'")[0][0] == 16
    ex.rollback(result.run_id)
    assert db.fingerprint().digest == before


def test_failing_verify_stops_the_run(tmp_path: Path) -> None:
    db = SQLite("db", make_items_db(tmp_path / "x.db"))
    step = SQL(
        "noop",
        db,
        up="UPDATE items SET status=status",
        down="SELECT 1",
        verify="SELECT count(*) = 0 FROM items",
    )
    _, result = run_runbook(Runbook("t", steps=[step]), tmp_path / ".h", key="k")
    assert result.status is RunStatus.FAILED
    assert "did not verify" in result.message


def test_a_failing_statement_leaves_nothing_behind(tmp_path: Path) -> None:
    db = SQLite("db", make_items_db(tmp_path / "x.db"))
    before = db.fingerprint().digest
    step = SQL(
        "half", db, up="UPDATE items SET status='x'; INSERT INTO nope VALUES (1);", down="SELECT 1"
    )
    rb = Runbook("t", steps=[step])
    with pytest.raises(BadInput, match="no such table: nope"):  # compiled before any change
        run_runbook(rb, tmp_path / ".h", key="k")
    # Without the preflight, the statement fails mid-step and its transaction goes whole.
    _, result = run_runbook(rb, tmp_path / ".h", key="k", preflight=False)
    assert result.status is RunStatus.FAILED
    assert "no such table: nope" in result.message
    assert db.fingerprint().digest == before  # the first statement was rolled back too


@pytest.mark.parametrize(
    ("script", "count"),
    [("SELECT 1", 1), ("SELECT 1; SELECT 2;", 2), ("SELECT ';'; -- x;\nSELECT 2", 2), ("", 0)],
)
def test_split_sql(script: str, count: int) -> None:
    assert len(split_sql(script)) == count
