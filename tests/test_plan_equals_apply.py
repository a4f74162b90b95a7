"""A dry run decides with the same function as the run: for Backfill, PgBackfill and
ImportRecords, the plan's counts equal what the run then reports and what plain SQL, read
without handrail, sees changed; rollback then brings the data back (digests.py).

The data carries the edge cases where two separate decisions used to drift apart: a value
whose type the column's affinity changes (an int into a TEXT column), NULLs written over
values and over NULLs, rows computed equal to what they hold, duplicate keys in an
import's input and a record the mapper rejects.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest

from handrail import Backfill, Executor, Journal, Runbook, RunOptions, RunStatus, SQLite
from handrail.model import Plan
from handrail.resources.postgres import Postgres
from handrail.steps.json_import import ImportRecords, RecordError, SourceRecord
from handrail.steps.pg_backfill import PgBackfill
from handrail.steps.sql import CreateSchema

from .digests import pg_digest, sqlite_digest


def executor(rb: Runbook, tmp: Path) -> Executor:
    return Executor(
        rb,
        Journal(tmp / ".handrail"),
        runbook_key=str(tmp / "rb"),
        options=RunOptions(auto_approve=True),
    )


def dry_run(rb: Runbook, tmp: Path) -> Plan:
    """The plan of the runbook's one step, as `handrail plan` computes it."""
    ((_, plan),) = executor(rb, tmp).plan()
    return plan


def run(rb: Runbook, tmp: Path, step: str) -> tuple[Executor, str, int]:
    """Run the runbook; its run id and the changes its batches reported to the journal."""
    ex = executor(rb, tmp)
    result = ex.run()
    assert result.status is RunStatus.COMPLETED, result.message
    (reported,) = ex.journal.conn.execute(
        "SELECT sum(changed) FROM batches WHERE run_id=? AND step=?", (result.run_id, step)
    ).fetchone()
    return ex, result.run_id, int(reported)


def sqlite_rows(path: Path, table: str, key: str) -> dict[Any, tuple[Any, ...]]:
    """Every row by key, each value with its storage class (so 1 and '1' differ)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
        typed = ", ".join(f'typeof("{c}"), quote("{c}")' for c in cols)
        return {r[0]: r[1:] for r in conn.execute(f'SELECT "{key}", {typed} FROM "{table}"')}
    finally:
        conn.close()


def changed(
    before: dict[Any, tuple[Any, ...]], after: dict[Any, tuple[Any, ...]]
) -> tuple[set[Any], set[Any]]:
    """Keys inserted, and keys whose row differs, between two reads."""
    return set(after) - set(before), {k for k in before if k in after and before[k] != after[k]}


# -- Backfill ------------------------------------------------------------------------------


def make_table(path: Path, n: int = 40) -> SQLite:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, label TEXT, n INTEGER, note TEXT)")
    conn.executemany(
        "INSERT INTO t VALUES (?,?,?,?)",
        [
            (i, f"L{i}", None if i % 3 == 0 else i, "x" if i % 2 == 0 else None)
            for i in range(1, n + 1)
        ],
    )
    conn.commit()
    conn.close()
    return SQLite("db", path)


def compute(row: dict[str, Any]) -> dict[str, Any] | None:
    i = row["id"]
    match i % 7:
        case 0:
            return None  # left alone
        case 1:
            return {"label": i * 10}  # an int into a TEXT column: stored as '10', was 'L1'
        case 2:
            return {"note": None}  # NULL over 'x' changes; NULL over NULL does not
        case 3:
            return {"note": row["note"]}  # what it holds: unchanged
        case 4:
            return {"n": None if row["n"] is None else row["n"] + 1}  # NULL stays NULL
        case 5:
            return {"label": row["label"], "note": "x"}  # one of two columns may change
        case _:
            return {"n": row["n"]}


def test_backfill_plan_counts_what_the_run_writes(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    db = make_table(path)
    step = Backfill(
        "fill",
        db,
        table="t",
        key="id",
        columns=["label", "n", "note"],
        compute=compute,
        where="id <= 37",
        batch_size=6,
    )
    rb = Runbook("t", steps=[step])
    plan = dry_run(rb, tmp_path)
    digest, rows = sqlite_digest(path), sqlite_rows(path, "t", "id")
    ex, run_id, reported = run(rb, tmp_path, "fill")
    inserted, updated = changed(rows, sqlite_rows(path, "t", "id"))
    assert not inserted
    assert plan.counts == {"rows": 37, "change": len(updated), "unchanged": 37 - len(updated)}
    assert reported == len(updated) > 0
    assert ex.journal.step(run_id, "fill").plan["counts"] == plan.counts  # type: ignore[index]
    # Every sampled change is a row plain SQL sees changed, with the value it now holds.
    assert {s["id"] for s in plan.samples} <= updated
    assert sqlite_rows(path, "t", "id")[1][2:4] == ("text", "'10'")  # label, as plain SQL sees it
    assert ex.rollback(run_id).exit_code == 0
    assert sqlite_digest(path) == digest


# -- PgBackfill ----------------------------------------------------------------------------


def test_pg_backfill_plan_counts_what_the_run_writes(tmp_path: Path, pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id integer PRIMARY KEY, label text, n integer, note text)")
        for i in range(1, 41):
            conn.execute(
                "INSERT INTO t VALUES (%s, %s, %s, %s)",
                (i, f"L{i}", None if i % 3 == 0 else i, "x" if i % 2 == 0 else None),
            )

    def pg_compute(row: dict[str, Any]) -> dict[str, Any] | None:
        if row["id"] % 7 == 1:
            return {"label": f"{row['id'] * 10}"}  # PostgreSQL refuses an int for text
        return compute(row)

    def pg_rows() -> dict[Any, tuple[Any, ...]]:
        with psycopg.connect(pg_dsn) as conn:
            return {r[0]: r[1:] for r in conn.execute("SELECT id, label, n, note FROM t")}

    step = PgBackfill(
        "fill",
        Postgres("pg", pg_dsn),
        table="public.t",
        key="id",
        columns=["label", "n", "note"],
        compute=pg_compute,
        where="id <= 37",
        batch_size=6,
    )
    rb = Runbook("t", steps=[step])
    plan = dry_run(rb, tmp_path)
    digest, rows = pg_digest(pg_dsn), pg_rows()
    ex, run_id, reported = run(rb, tmp_path, "fill")
    inserted, updated = changed(rows, pg_rows())
    assert not inserted
    assert plan.counts == {"rows": 37, "change": len(updated), "unchanged": 37 - len(updated)}
    assert reported == len(updated) > 0
    assert {s["id"] for s in plan.samples} <= updated
    assert ex.rollback(run_id).exit_code == 0
    assert pg_digest(pg_dsn) == digest


# -- ImportRecords -------------------------------------------------------------------------

# (record key, row): the table holds ids 1-6 before the import.
RECORDS: list[tuple[str, Any]] = [
    ("r1", {"id": 1, "name": "a", "qty": 1, "note": None}),  # what it holds: unchanged
    ("r2", {"id": 2, "qty": 20}),  # one value: update
    ("r3", {"id": 3, "name": 33}),  # an int into a TEXT column ('c' -> '33'): update
    ("r4", {"id": 4, "note": None}),  # NULL over 'n': update
    ("r5", {"id": 5, "note": None}),  # NULL over NULL: unchanged
    ("r10", {"id": 10, "name": "new", "qty": 1}),  # insert
    ("r11a", {"id": 11, "name": "first", "qty": 1}),  # a key twice: one insert, merged
    ("r11b", {"id": 11, "qty": 2}),
    ("r2b", {"id": 2, "name": "bb"}),  # a key twice: one update, merged
    ("r6a", {"id": 6, "name": "f"}),  # a key twice, both as held: unchanged once
    ("r6b", {"id": 6, "qty": 6}),
    ("bad", "not a row"),  # rejected by the mapper
]


def make_items(path: Path) -> SQLite:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, note TEXT)")
    conn.executemany(
        "INSERT INTO items VALUES (?,?,?,?)",
        [
            (1, "a", 1, None),
            (2, "b", 2, None),
            (3, "c", 3, None),
            (4, "d", 4, "n"),
            (5, "e", 5, None),
            (6, "f", 6, None),
        ],
    )
    conn.commit()
    conn.close()
    return SQLite("db", path)


def read(ctx: Any) -> list[SourceRecord]:
    return [SourceRecord("records.json", key, value) for key, value in RECORDS]


def mapper(rec: SourceRecord) -> dict[str, Any]:
    if not isinstance(rec.value, dict):
        raise RecordError(f"not an object: {rec.value!r}")
    return rec.value


def test_import_plan_counts_what_the_run_writes(tmp_path: Path) -> None:
    path = tmp_path / "items.db"
    db = make_items(path)
    step = ImportRecords("import", read=read, db=db, table="items", key="id", mapper=mapper)
    rb = Runbook("t", steps=[step])
    plan = dry_run(rb, tmp_path)
    digest, rows = sqlite_digest(path), sqlite_rows(path, "items", "id")
    ex, run_id, reported = run(rb, tmp_path, "import")
    inserted, updated = changed(rows, sqlite_rows(path, "items", "id"))
    assert (inserted, updated) == ({10, 11}, {2, 3, 4})
    assert plan.counts == {
        "records": len(RECORDS),
        "rejects": 1,
        "insert": len(inserted),
        "update": len(updated),
        "unchanged": 3,
    }
    assert reported == plan.items == len(inserted) + len(updated)
    assert [r["key"] for r in ex.journal.rejects(run_id, "import")] == ["bad"]
    # Rows sharing a key were merged in order, whether the key was new or not.
    after = dict(db.query("SELECT id, name || '/' || qty FROM items WHERE id IN (2, 11)"))
    assert after == {2: "bb/20", 11: "first/2"}
    assert ex.rollback(run_id).exit_code == 0
    assert sqlite_digest(path) == digest


def test_import_plan_into_a_table_an_earlier_step_creates(tmp_path: Path) -> None:
    """No table yet: every key is new, each counted once, as the run will insert it."""
    path = tmp_path / "items.db"
    sqlite3.connect(path).close()
    db = SQLite("db", path)
    create = CreateSchema(
        "create", db, ddl="CREATE TABLE items (id INTEGER PRIMARY KEY, name, qty, note)"
    )
    step = ImportRecords("import", read=read, db=db, table="items", key="id", mapper=mapper)
    plans = dict(executor(Runbook("t", steps=[create, step]), tmp_path).plan())
    plan = plans[step]
    keys = {row["id"] for _, row in RECORDS if isinstance(row, dict)}
    assert plan.counts["insert"] == len(keys)
    assert plan.counts["update"] == plan.counts["unchanged"] == 0


@pytest.mark.parametrize("batch_size", [1, 4])
def test_import_in_small_batches_reports_what_the_plan_counted(
    tmp_path: Path, batch_size: int
) -> None:
    """However the batches fall, the run reports the changes the plan counted."""
    path = tmp_path / "items.db"
    db = make_items(path)
    records = [(k, v) for k, v in RECORDS if k not in ("r11b", "r2b", "r6b")]
    step = ImportRecords(
        "import",
        read=lambda ctx: [SourceRecord("records.json", k, v) for k, v in records],
        db=db,
        table="items",
        key="id",
        mapper=mapper,
        batch_size=batch_size,
    )
    rb = Runbook("t", steps=[step])
    plan = dry_run(rb, tmp_path)
    rows = sqlite_rows(path, "items", "id")
    _, _, reported = run(rb, tmp_path, "import")
    inserted, updated = changed(rows, sqlite_rows(path, "items", "id"))
    assert reported == plan.items == len(inserted) + len(updated) == 5
