"""CopyTable's dry run counts the rows its conversions reject exactly as the copy then
rejects them: the plan reads and converts every range with the copy's own code."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import psycopg
import pytest

from handrail import Executor, Journal, Runbook, RunOptions, RunStatus, SQLite
from handrail.resources.postgres import Postgres
from handrail.tablecopy import Column, CopyTable, TableMap, boolean, integer, jsonb, timestamptz

from .digests import pg_digest, unchanged

pytestmark = pytest.mark.postgres

MAPPING = TableMap(
    "content",
    "content",
    key=["video_id"],
    order_by=["id"],
    columns=[
        Column("video_id"),
        Column("id", convert=integer()),
        Column("indexed_at", convert=timestamptz()),
        Column("has_audio", convert=boolean()),
        Column("meta", convert=jsonb()),
    ],
)

#: (column, bad value, how many rows get it): each is a reject of its conversion
#: (jsonb() keeps text that is not JSON as {"raw_text": ...}: not a reject)
BAD = [("indexed_at", "yesterday", 3), ("has_audio", 7, 2), ("has_audio", "maybe", 4)]


def make_source(path: Path, n: int) -> SQLite:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(
            "CREATE TABLE content (id INTEGER PRIMARY KEY, video_id TEXT, indexed_at TEXT, "
            "has_audio INTEGER, meta TEXT)"
        )
        conn.executemany(
            "INSERT INTO content VALUES (?, ?, ?, ?, ?)",
            [(i, f"v{i:05d}", "2024-05-01 10:00:00", i % 2, f'{{"n": {i}}}') for i in range(n)],
        )
        row = 100
        for col, value, times in BAD:
            for _ in range(times):
                conn.execute(f"UPDATE content SET {col} = ? WHERE id = ?", (value, row))
                row += 97
        # two rows superseded by a later row with the same natural key (not rejects)
        conn.execute("UPDATE content SET video_id = 'v00010' WHERE id IN (11, 12)")
        conn.commit()
    return SQLite("src", path)


def make_target(dsn: str) -> Postgres:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE content (video_id text PRIMARY KEY, id integer, "
            "indexed_at timestamptz, has_audio boolean, meta jsonb)"
        )
    return Postgres("pg", dsn)


@pytest.mark.parametrize("rows_per_batch", [250, 5000])
def test_plan_counts_the_rejects_the_run_journals(
    pg_dsn: str, tmp_path: Path, rows_per_batch: int
) -> None:
    src = make_source(tmp_path / "src.db", 3000)
    target = make_target(pg_dsn)
    step = CopyTable("copy", src, target, MAPPING, rows_per_batch=rows_per_batch)
    ex = Executor(
        Runbook("copy", steps=[step]),
        Journal(tmp_path / ".h"),
        runbook_key="k",
        options=RunOptions(auto_approve=True),
    )
    before = pg_digest(pg_dsn)
    with unchanged(tmp_path / "src.db"):
        ((_, plan),) = ex.plan()
    assert pg_digest(pg_dsn) == before  # the dry run wrote nothing
    assert step._cached is None  # and closed its job
    expected = sum(times for _, _, times in BAD)
    assert plan.counts["rejects"] == expected
    assert plan.counts["duplicates"] == 2
    assert f"{expected} row(s) would be rejected" in plan.summary

    result = ex.run()
    assert result.status is RunStatus.COMPLETED
    journalled = ex.journal.rejects(result.run_id)
    assert len(journalled) == plan.counts["rejects"]
    assert ex.journal.step(result.run_id, "copy").plan["counts"]["rejects"] == expected
    with closing(psycopg.connect(pg_dsn)) as conn:
        (n,) = conn.execute("SELECT count(*) FROM content").fetchone() or (0,)
    assert n == 3000 - 2 - expected


def test_plan_before_the_target_exists_counts_no_rejects(pg_dsn: str, tmp_path: Path) -> None:
    """An earlier step creates the table: the plan says what it knows (no conversions
    without the target's types) and the run plans again before applying."""
    src = make_source(tmp_path / "src.db", 300)
    step = CopyTable("copy", src, Postgres("pg", pg_dsn), MAPPING)
    ex = Executor(Runbook("copy", steps=[step]), Journal(tmp_path / ".h"), runbook_key="k")
    ((_, plan),) = ex.plan()
    assert "rejects" not in plan.counts
    assert "not created yet" in plan.summary
