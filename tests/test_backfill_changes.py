"""Backfill's per-row work on real SQLite: which rows count as changed, what the undo log
keeps, batches read in several chunks, and the journal's count of items done."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from handrail import Backfill, BadInput, Journal, Runbook, RunStatus, SQLite

from .helpers import cli_proc, run_runbook, write


def one_row_db(path: Path, declared: str, stored: Any) -> SQLite:
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE t (k INTEGER PRIMARY KEY, v {declared}, w TEXT)")
    conn.execute("INSERT INTO t VALUES (1, ?, 'w')", (stored,))
    conn.commit()
    conn.close()
    return SQLite("db", path)


def changed(db: SQLite) -> int:
    """Rows the run changed, as its ledger inside the target recorded them."""
    return int(db.query("SELECT coalesce(sum(items), 0) FROM _handrail_ledger")[0][0])


@pytest.mark.parametrize(
    ("declared", "stored", "returns", "changes"),
    [
        ("TEXT", "a", {"v": "a"}, 0),
        ("TEXT", "a", {"v": "b"}, 1),
        ("TEXT", None, {"v": None}, 0),
        ("TEXT", None, {}, 0),
        ("TEXT", "a", None, 0),
        ("INTEGER", 1, {"v": 1}, 0),
        ("INTEGER", 1, {"v": 1.0}, 1),  # equal in Python, another type in SQLite
        ("INTEGER", 1, {"v": True}, 1),
        ("REAL", 1.5, {"v": 1.5}, 0),
        ("REAL", 2.0, {"v": 2}, 1),  # SQLite stores 2.0: the undo log records that
        ("TEXT", "5", {"v": 5}, 1),  # SQLite stores '5': likewise
        ("BLOB", b"x", {"v": b"x"}, 0),
        ("BLOB", b"x", {"v": "x"}, 1),
        ("", 3, {"v": "3"}, 1),
    ],
)
def test_which_rows_change_and_rollback_is_exact(
    tmp_path: Path, declared: str, stored: Any, returns: dict[str, Any] | None, changes: int
) -> None:
    db = one_row_db(tmp_path / "db.sqlite", declared, stored)
    before = db.fingerprint().digest
    step = Backfill("b", db, table="t", key="k", columns=["v", "w"], compute=lambda r: returns)
    ex, result = run_runbook(Runbook("t", steps=[step]), tmp_path / ".handrail", auto_approve=True)
    assert result.status is RunStatus.COMPLETED, result.message
    plan = ex.journal.step(result.run_id, "b").plan
    assert plan is not None
    assert plan["counts"]["change"] == changes  # the dry run and the run agree
    assert changed(db) == changes
    undone = ex.rollback(result.run_id)
    assert undone.exit_code == 0, undone.conflicts
    assert db.fingerprint().digest == before


def test_undo_log_keeps_the_row_as_read_when_compute_edits_its_dict(tmp_path: Path) -> None:
    db = one_row_db(tmp_path / "db.sqlite", "TEXT", "original")
    before = db.fingerprint().digest

    def meddle(row: dict[str, Any]) -> dict[str, Any]:
        row["v"] = "edited in place"
        row["w"] = "edited in place"
        return {"v": "new"}

    step = Backfill("b", db, table="t", key="k", columns=["v", "w"], compute=meddle)
    ex, result = run_runbook(Runbook("t", steps=[step]), tmp_path / ".handrail", auto_approve=True)
    assert result.status is RunStatus.COMPLETED, result.message
    assert db.query("SELECT v, w FROM t") == [("new", "w")]
    assert ex.rollback(result.run_id).exit_code == 0
    assert db.fingerprint().digest == before


def test_compute_returning_an_undeclared_column_fails_and_changes_nothing(tmp_path: Path) -> None:
    db = one_row_db(tmp_path / "db.sqlite", "TEXT", "a")
    before = db.fingerprint().digest
    step = Backfill("b", db, table="t", key="k", columns=["v"], compute=lambda r: {"w": "x"})
    # The preflight's forward run on a clone finds it: bad input, before any change.
    with pytest.raises(BadInput, match=r"compute returned columns it does not declare: \['w'\]"):
        run_runbook(Runbook("t", steps=[step]), tmp_path / ".handrail", auto_approve=True)
    assert db.fingerprint().digest == before


def many_rows_db(path: Path, n: int) -> SQLite:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE docs (id TEXT PRIMARY KEY, words INTEGER, label TEXT, n REAL)")
    conn.executemany(
        "INSERT INTO docs VALUES (?,?,?,NULL)",
        [(f"d{i:05d}", i * 7 % 100, "x" if i % 3 else None) for i in range(n)],
    )
    conn.commit()
    conn.close()
    return SQLite("db", path)


def label(row: dict[str, Any]) -> dict[str, Any] | None:
    assert set(row) == {"id", "words", "label", "n"}
    if row["words"] % 5 == 0:
        return None
    return {"label": "long" if row["words"] >= 50 else "short", "n": row["words"] / 2}


def test_batches_wider_than_one_read_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    db = many_rows_db(tmp_path / "db.sqlite", 2500)  # batches of 2000 read in 900s
    before = db.fingerprint().digest
    step = Backfill(
        "b",
        db,
        table="docs",
        key="id",
        columns=["label", "n"],
        compute=label,
        read=["words"],
        batch_size=2000,
    )
    ex, result = run_runbook(
        Runbook("t", steps=[step]), tmp_path / "one" / ".handrail", auto_approve=True
    )
    assert result.status is RunStatus.COMPLETED, result.message
    assert changed(db) == 2000  # the rows whose words are not a multiple of 5
    assert db.query("SELECT label, count(*), sum(n) FROM docs GROUP BY 1 ORDER BY 1") == [
        (None, 167, None),
        ("long", 1000, 37500.0),
        ("short", 1000, 12500.0),
        ("x", 333, None),
    ]
    assert db.query("SELECT typeof(n) FROM docs WHERE id='d00001'") == [("real",)]
    step2 = Backfill(
        "b", db, table="docs", key="id", columns=["label", "n"], compute=label, read=["words"]
    )
    ex2, again = run_runbook(
        Runbook("t", steps=[step2]), tmp_path / "two" / ".handrail", auto_approve=True
    )
    assert again.status is RunStatus.COMPLETED, again.message
    assert ex2.journal.step(again.run_id, "b").items_done == 2500
    assert db.query("SELECT sum(items) FROM _handrail_ledger WHERE run_id=?", (again.run_id,)) == [
        (0,)
    ]
    assert ex2.rollback(again.run_id).exit_code == 0
    assert ex.rollback(result.run_id).exit_code == 0
    assert db.fingerprint().digest == before


def test_items_done_counts_each_batch_once(tmp_path: Path) -> None:
    journal = Journal(tmp_path / ".handrail")
    db = many_rows_db(tmp_path / "db.sqlite", 250)
    step = Backfill("b", db, table="docs", key="id", columns=["label"], compute=lambda r: None)
    _, result = run_runbook(Runbook("t", steps=[step]), journal, key="k")
    run_id = result.run_id
    assert journal.step(run_id, "b").items_done == 250
    journal.batch_done(run_id, "b", 0, 0)  # told twice, as after a crash: counted once
    assert journal.step(run_id, "b").items_done == 250


RUNBOOK = """
from pathlib import Path
from handrail import Backfill, Runbook, SQLite
db = SQLite("db", Path(__file__).parent / "db.sqlite")
def label(row):
    return {"label": "long" if row["words"] >= 50 else "short"}
runbook = Runbook("bf", steps=[Backfill("b", db, table="docs", key="id", columns=["label"],
    compute=label, batch_size=100)])
"""


@pytest.mark.parametrize("crash_at", [7, 12])
def test_items_done_after_kill_and_resume(tmp_path: Path, crash_at: int) -> None:
    from handrail.engine.journal import CRASH_ENV

    many_rows_db(tmp_path / "db.sqlite", 1000)
    rb = write(tmp_path / "rb.py", RUNBOOK)
    killed = cli_proc("run", rb, "--yes", env={CRASH_ENV: str(crash_at)})
    assert killed.returncode < 0
    assert cli_proc("run", rb, "--yes").returncode == 0
    journal = Journal(tmp_path / ".handrail")
    (run,) = journal.runs()
    assert journal.step(run.id, "b").items_done == 1000
