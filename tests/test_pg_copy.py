"""Table copies into real PostgreSQL: conversions, rejects, duplicate keys, re-runs, and a
copy killed with SIGKILL that resumes without applying any batch twice."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from handrail.model import Reject
from handrail.resources.postgres import Postgres
from handrail.resources.sqlite import SQLite
from handrail.tablecopy.copy import CopyJob, CopySpec, copy_table
from handrail.tablecopy.mapping import Column, TableMap, boolean, jsonb, timestamptz
from handrail.tablecopy.parity import parity

pytestmark = pytest.mark.postgres

TARGET = """
CREATE TABLE content (
    video_id text PRIMARY KEY,
    id bigint,
    title text CHECK (title <> 'forbidden'),
    published_at timestamptz,
    has_audio boolean,
    topics jsonb,
    score double precision
)
"""

MAPPING = TableMap(
    "content",
    "content",
    key=["video_id"],
    order_by=["indexed_at"],
    columns=[
        Column("video_id"),
        Column("id"),
        Column("title"),
        Column("published_at", convert=timestamptz()),
        Column("has_audio", convert=boolean()),
        Column("topics", source="key_topics", convert=jsonb()),
        Column("score"),
    ],
)


def make_source(path: Path, rows: list[tuple[Any, ...]]) -> SQLite:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(
            "CREATE TABLE content (id INTEGER PRIMARY KEY, video_id TEXT, title TEXT, "
            "published_at TEXT, indexed_at TEXT, has_audio INTEGER, key_topics TEXT, score REAL)"
        )
        conn.executemany("INSERT INTO content VALUES (?,?,?,?,?,?,?,?)", rows)
        conn.commit()
    return SQLite("src", path)


def generated(n: int) -> list[tuple[Any, ...]]:
    return [
        (
            i,
            f"v{i:06d}",
            f"title {i}",
            f"2024-01-{1 + i % 28:02d} 10:00:{i % 60:02d}",
            "2024-02-01 00:00:00",
            i % 2,
            f'{{"n": {i}, "tags": ["a", "b"]}}',
            i / 3,
        )
        for i in range(1, n + 1)
    ]


def target(dsn: str) -> Postgres:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TARGET)
    return Postgres("pg", dsn)


def fetch(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql.encode()).fetchall()


def test_conversions_rejects_and_duplicates(pg_dsn: str, tmp_path: Path) -> None:
    src = make_source(
        tmp_path / "s.db",
        [
            (1, "a", "naive", "2024-03-01 12:00:00", "2024-01-01", 1, '{"b": 1, "a": [1]}', 1.5),
            (2, "b", "zoned", "2024-03-01T12:00:00+02:00", "2024-01-01", 0, "", None),
            (3, "c", "epoch", 1709294400, "2024-01-01", None, "not json", 2.0),
            (4, "d", "bad time", "yesterday", "2024-01-01", 1, None, 0.0),
            (5, "e", "bad bool", "2024-03-01", "2024-01-01", 7, None, 0.0),
            (6, "f", "forbidden", "2024-03-01", "2024-01-01", 1, None, 0.0),
            (7, "a", "newer a", "2024-03-02 00:00:00", "2024-06-01", 1, "[]", 3.0),
            (8, "a", "older a", "2024-03-03 00:00:00", "2023-01-01", 0, "[]", 4.0),
            (9, "g", "nul\x00byte", "2024-03-01", "2024-01-01", 1, None, 0.0),
        ],
    )
    pg = target(pg_dsn)
    seen: list[tuple[int, int, list[Reject]]] = []
    res = copy_table(
        src, pg, MAPPING, run_id="r1", step="copy", batch_size=4,
        on_batch=lambda b, n, rej: seen.append((b, n, rej)),
    )  # fmt: skip
    got = {r[0]: r[1:] for r in fetch(pg_dsn, "SELECT * FROM content ORDER BY video_id")}
    assert set(got) == {"a", "b", "c"}
    utc = UTC
    assert got["a"][2] == datetime(2024, 3, 2, tzinfo=utc)  # the last by indexed_at won
    assert got["a"][1] == "newer a"
    assert got["b"][2] == datetime(2024, 3, 1, 10, tzinfo=utc)
    assert got["c"][2] == datetime(2024, 3, 1, 12, tzinfo=utc)
    assert got["b"][4] is None  # empty JSON text is NULL
    assert got["c"][4] == {"raw_text": "not json"}
    assert got["c"][3] is None
    assert [got[k][3] for k in "ab"] == [True, False]
    reasons = {r.key: r.reason for r in res.rejects}
    assert set(reasons) == {"d", "e", "f", "g"}
    assert "published_at" in reasons["d"]
    assert "has_audio" in reasons["e"]
    assert "check constraint" in reasons["f"]  # refused by the database, isolated by bisection
    assert "NUL" in reasons["g"]
    assert len(res.duplicates) == 2
    assert all(d.key == "a" for d in res.duplicates)
    assert res.inserted == 3
    assert sum(n for _, n, _ in seen) == res.read == 9
    # the rejects travel with the ledger, so a resumed run still reports them
    assert {r["key"] for r in pg.ledger_rejects("r1", "copy")} == {"d", "e", "f", "g"}


def test_rerun_changes_nothing_and_updates_only_what_changed(pg_dsn: str, tmp_path: Path) -> None:
    src = make_source(tmp_path / "s.db", generated(500))
    pg = target(pg_dsn)
    first = copy_table(src, pg, MAPPING, run_id="r1", step="copy", batch_size=100)
    assert (first.inserted, first.updated, first.batches) == (500, 0, 6)  # 5 + open end
    with closing(sqlite3.connect(src.path)) as conn:
        conn.execute("UPDATE content SET title = 'edited' WHERE id IN (10, 20)")
        conn.commit()
    again = copy_table(src, pg, MAPPING, run_id="r2", step="copy", batch_size=100)
    assert (again.inserted, again.updated, again.unchanged) == (0, 2, 498)
    same = copy_table(src, pg, MAPPING, run_id="r2", step="copy", batch_size=100)
    assert same.skipped_batches == same.batches  # the ledger knew every batch
    keep = copy_table(src, pg, CopySpec(MAPPING, on_conflict="nothing"), run_id="r3", step="copy")
    assert keep.inserted == keep.updated == 0
    assert parity(src, pg, MAPPING).equal


def test_missing_unique_key_is_a_clear_error(pg_dsn: str, tmp_path: Path) -> None:
    src = make_source(tmp_path / "s.db", generated(3))
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE content (video_id text, id bigint, title text)")
    spec = TableMap("content", "content", key=["video_id"])
    with pytest.raises(Exception, match="no unique index on its natural key"):
        copy_table(src, Postgres("pg", pg_dsn), spec, run_id="r", step="s")


def test_postgres_to_postgres(pg_cluster: Any, pg_dsn: str, tmp_path: Path) -> None:
    src = make_source(tmp_path / "s.db", generated(300))
    pg = target(pg_dsn)
    copy_table(src, pg, MAPPING, run_id="r1", step="copy")
    other = Postgres("pg2", pg_cluster.create_database("copy_target_pg2"))
    try:
        with psycopg.connect(other.dsn, autocommit=True) as conn:
            conn.execute(TARGET)
        spec = TableMap("content", "content", key=["video_id"])
        res = copy_table(pg, other, spec, run_id="r1", step="copy", batch_size=64)
        assert res.inserted == 300
        assert parity(pg, other, spec).equal
        # a filter with '%' in it: the source's queries without parameters stay literal
        like = TableMap("content", "content", key=["video_id"], where="title LIKE '%1%'")
        again = copy_table(pg, other, like, run_id="r2", step="copy", batch_size=64)
        with psycopg.connect(pg.dsn) as conn:
            (n,) = conn.execute("SELECT count(*) FROM content WHERE title LIKE '%%1%%'").fetchone()
        assert again.read == again.unchanged == n > 0
        assert parity(pg, other, like).source_rows == n
    finally:
        pg_cluster.drop_database("copy_target_pg2")


KILLED_COPY = """
import sys, time
from handrail.tablecopy.copy import copy_table
from handrail.resources.postgres import Postgres
from handrail.resources.sqlite import SQLite
from handrail.tablecopy.mapping import Column, TableMap, boolean, jsonb, timestamptz
sys.path.insert(0, {tests!r})
from test_pg_copy import MAPPING
def slow(batch, rows, rejects):
    print(batch, flush=True)
    time.sleep(0.05)
copy_table(SQLite("src", {src!r}), Postgres("pg", {dsn!r}), MAPPING, run_id="killed",
           step="copy", batch_size=200, on_batch=slow, arrow={arrow!r})
"""


@pytest.mark.parametrize("reader", ["arrow", "sql"])
def test_copy_killed_mid_way_resumes_without_applying_a_batch_twice(
    pg_dsn: str, tmp_path: Path, reader: str
) -> None:
    """Killed while batches go straight into the target (binary COPY with the Arrow
    reader, CSV with the SQL reader), then resumed by the other reader."""
    n = 12_000
    src = make_source(tmp_path / "s.db", generated(n))
    pg = target(pg_dsn)
    with CopyJob(src, pg, MAPPING, arrow=reader == "arrow") as job:
        assert job.reader == reader
    script = KILLED_COPY.format(
        tests=str(Path(__file__).parent), src=str(src.path), dsn=pg_dsn, arrow=reader == "arrow"
    )
    err = tmp_path / "stderr.txt"
    with (
        err.open("w") as errf,
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.DEVNULL, stderr=errf
        ) as proc,
    ):
        deadline = time.monotonic() + 60
        while len(pg.ledger_batches("killed", "copy")) < 8:
            assert proc.poll() is None, err.read_text()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # nothing of the killed copy (its reader processes included) keeps its session open:
    # an open COPY would hold the keys its resume is about to insert
    deadline = time.monotonic() + 20
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()"
    )
    while fetch(pg_dsn, query) != [(0,)]:
        assert time.monotonic() < deadline, fetch(pg_dsn, "SELECT * FROM pg_stat_activity")
        time.sleep(0.1)
    before = pg.ledger_batches("killed", "copy")
    total = n // 200 + 1
    assert 8 <= len(before) < total
    res = copy_table(
        src, pg, MAPPING, run_id="killed", step="copy", batch_size=200, arrow=reader != "arrow"
    )
    assert res.skipped_batches == len(before)
    assert res.batches == total
    ledger = fetch(
        pg_dsn,
        "SELECT count(*), count(DISTINCT batch), sum(items) FROM _handrail.ledger "
        "WHERE run_id = 'killed'",
    )
    # one ledger row per batch; every row inserted exactly once across both processes
    assert ledger == [(total, total, n)]
    assert fetch(pg_dsn, "SELECT count(*) FROM content") == [(n,)]
    assert parity(src, pg, MAPPING).equal
