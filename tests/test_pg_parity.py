"""Parity finds exactly the planted differences (SQLite<->PostgreSQL, PostgreSQL<->PostgreSQL,
SQLite<->SQLite), compares values after the mapping's conversions, and reconcile fixes them."""

from __future__ import annotations

import shutil
import sqlite3
from concurrent.futures import ProcessPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest

from handrail import parity as parity_module
from handrail.resources.postgres import Postgres
from handrail.resources.sqlite import SQLite
from handrail.tablecopy.copy import copy_table, reader_processes
from handrail.tablecopy.mapping import Column, TableMap, boolean, jsonb, timestamptz
from handrail.tablecopy.parity import PROCESS_MIN_ROWS, parity, reconcile

pytestmark = pytest.mark.postgres

TARGET = """
CREATE TABLE content (
    video_id text PRIMARY KEY, id bigint, title text, views integer, score double precision,
    published_at timestamptz, has_audio boolean, subcategories jsonb
)
"""

MAPPING = TableMap(
    "content",
    "content",
    key=["video_id"],
    columns=[
        Column("video_id"),
        Column("id"),
        Column("title"),
        Column("views"),
        Column("score"),
        Column("published_at", convert=timestamptz()),
        Column("has_audio", convert=boolean()),
        Column("subcategories", source="subcategories_json", convert=jsonb()),
    ],
)


def make_source(path: Path, n: int) -> SQLite:
    forms = [
        "2024-01-02 03:04:{s:02d}",
        "2024-01-02T03:04:{s:02d}Z",
        "2024-01-02T03:04:{s:02d}.250000+02:00",
        "170000{s:04d}",
    ]

    def rows() -> Any:
        for i in range(1, n + 1):
            published: Any = forms[i % 4].format(s=i % 60)
            if i % 4 == 3:
                published = 1_700_000_000 + i  # an integer epoch
            subs = ["", '{"b": [1, 2], "a": "x"}', "plain words", None][i % 4]
            yield (i, f"v{i:07d}", f"t{i}\u00e9", i * 3, i / 7, published, i % 2, subs)

    with closing(sqlite3.connect(path)) as conn:
        conn.execute(
            "CREATE TABLE content (id INTEGER PRIMARY KEY, video_id TEXT, title TEXT, "
            "views INTEGER, score REAL, published_at TEXT, has_audio INTEGER, "
            "subcategories_json TEXT)"
        )
        conn.executemany("INSERT INTO content VALUES (?,?,?,?,?,?,?,?)", rows())
        conn.commit()
    return SQLite("src", path)


def pg_target(dsn: str) -> Postgres:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TARGET)
    return Postgres("pg", dsn)


def run(dsn: str, sql: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.encode())


def test_planted_differences_in_100k_rows_sqlite_to_postgres(pg_dsn: str, tmp_path: Path) -> None:
    src = make_source(tmp_path / "s.db", 100_000)
    pg = pg_target(pg_dsn)
    copy_table(src, pg, MAPPING, run_id="r", step="copy", batch_size=20_000)
    clean = parity(src, pg, MAPPING)
    assert clean.equal, clean.samples
    assert clean.source_rows == clean.target_rows == 100_000
    run(
        pg_dsn,
        """
        UPDATE content SET published_at = published_at + interval '1 second'
            WHERE video_id = 'v0054321';
        DELETE FROM content WHERE video_id = 'v0000777';
        INSERT INTO content (video_id, id) VALUES ('v0099999x', -1);
        """,
    )
    report = parity(src, pg, MAPPING)
    assert report.missing == [("v0000777",)]
    assert report.extra == [("v0099999x",)]
    assert report.different == [("v0054321",)]
    (sample,) = report.samples
    assert list(sample.columns) == ["published_at"]
    assert report.segments_differing == 3
    assert report.segments > 90


def test_postgres_to_postgres_and_reconcile(pg_cluster: Any, pg_dsn: str, tmp_path: Path) -> None:
    src = make_source(tmp_path / "s.db", 5_000)
    a = pg_target(pg_dsn)
    copy_table(src, a, MAPPING, run_id="r", step="copy")
    b = Postgres("b", pg_cluster.create_database("parity_b"))
    try:
        run(b.dsn, TARGET)
        ident = TableMap("content", "content", key=["video_id"])
        copy_table(a, b, ident, run_id="r", step="copy")
        assert parity(a, b, ident).equal
        run(
            b.dsn,
            "UPDATE content SET subcategories = '{\"a\": \"y\"}' WHERE video_id = 'v0000010';"
            "UPDATE content SET score = NULL WHERE video_id = 'v0000011';"
            "DELETE FROM content WHERE video_id IN ('v0000020', 'v0004000');"
            "INSERT INTO content (video_id) VALUES ('extra1'), ('extra2'), ('extra3');",
        )
        dry = reconcile(a, b, ident, dry_run=True)
        assert (dry.inserts, dry.updates, dry.deletes) == (2, 2, 3)
        assert not parity(a, b, ident).equal  # the dry run wrote nothing
        done = reconcile(a, b, ident)
        assert (done.inserts, done.updates, done.deletes) == (2, 2, 3)
        assert done.after is not None
        assert done.after.equal
        assert (
            b.fingerprint().parts["rows:public.content"]
            == a.fingerprint().parts["rows:public.content"]
        )
    finally:
        pg_cluster.drop_database("parity_b")


def test_reconcile_from_sqlite_honours_deletions(pg_dsn: str, tmp_path: Path) -> None:
    src = make_source(tmp_path / "s.db", 3_000)
    pg = pg_target(pg_dsn)
    copy_table(src, pg, MAPPING, run_id="r", step="copy")
    with closing(sqlite3.connect(src.path)) as conn:
        conn.execute("DELETE FROM content WHERE id IN (5, 6)")  # deleted at the source
        conn.execute("UPDATE content SET has_audio = 1 - has_audio WHERE id = 7")
        conn.commit()
    dry = reconcile(src, pg, MAPPING, dry_run=True)
    assert (dry.inserts, dry.updates, dry.deletes) == (0, 1, 2)
    done = reconcile(src, pg, MAPPING)
    assert done.after is not None
    assert done.after.equal


def test_sqlite_to_sqlite(tmp_path: Path) -> None:
    a = make_source(tmp_path / "a.db", 4_000)
    shutil.copy(a.path, tmp_path / "b.db")
    b = SQLite("b", tmp_path / "b.db")
    ident = TableMap("content", "content", key=["video_id"])
    assert parity(a, b, ident).equal
    with closing(sqlite3.connect(b.path)) as conn:
        conn.execute("UPDATE content SET score = score * 2 WHERE id = 100")
        conn.execute("DELETE FROM content WHERE id = 200")
        conn.execute("INSERT INTO content (id, video_id) VALUES (99999, 'zz')")
        conn.commit()
    report = parity(a, b, ident, segment_rows=200)
    assert (report.missing, report.extra, report.different) == (
        [("v0000200",)],
        [("zz",)],
        [("v0000100",)],
    )
    assert list(report.samples[0].columns) == ["score"]


def test_target_without_a_key_index(pg_dsn: str, tmp_path: Path) -> None:
    """Without a btree index on the key, PostgreSQL finds each row's segment with
    width_bucket in one pass instead of reading key ranges from the index."""
    src = make_source(tmp_path / "s.db", 5_000)
    pg = pg_target(pg_dsn)
    copy_table(src, pg, MAPPING, run_id="r", step="copy")
    run(pg_dsn, "ALTER TABLE content DROP CONSTRAINT content_pkey")
    assert parity(src, pg, MAPPING, segment_rows=300).equal
    run(pg_dsn, "UPDATE content SET score = score + 1 WHERE video_id = 'v0004321'")
    report = parity(src, pg, MAPPING, segment_rows=300)
    assert report.different == [("v0004321",)]
    assert list(report.samples[0].columns) == ["score"]


def test_reader_processes_give_the_same_report(
    pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above PROCESS_MIN_ROWS the SQLite source is hashed by forked reader processes (a run
    of segments each); the report equals the one hashed in this process, duplicate
    natural keys and planted differences included."""
    src = make_source(tmp_path / "s.db", 60_000)
    assert PROCESS_MIN_ROWS <= 60_000
    with closing(sqlite3.connect(src.path)) as conn:  # later rows win their natural key
        conn.execute(
            "INSERT INTO content SELECT id + 100000, video_id, 'again', views, score, "
            "published_at, has_audio, subcategories_json FROM content WHERE id % 5000 = 1"
        )
        conn.commit()
    pg = pg_target(pg_dsn)
    copy_table(src, pg, MAPPING, run_id="r", step="copy")
    run(
        pg_dsn,
        """
        UPDATE content SET title = 'changed' WHERE video_id IN ('v0000001', 'v0031234');
        DELETE FROM content WHERE video_id IN ('v0000002', 'v0059999');
        INSERT INTO content (video_id, id) VALUES ('v0030000x', -1);
        """,
    )
    forked: list[int] = []

    def counted(n: int) -> ProcessPoolExecutor:
        forked.append(n)
        return reader_processes(n)

    monkeypatch.setattr(parity_module, "reader_processes", counted)
    here = parity(src, pg, MAPPING, readers=1, segment_rows=500)
    assert forked == []
    forks = parity(src, pg, MAPPING, readers=2, segment_rows=500)
    assert forked == [2]
    assert forks == here
    assert forks.source_rows == 60_000
    assert forks.segments == 120
    assert forks.missing == [("v0000002",), ("v0059999",)]
    assert forks.extra == [("v0030000x",)]
    assert forks.different == [("v0000001",), ("v0031234",)]
    assert parity(src, pg, MAPPING, readers=2, segment_rows=70_000) == parity(
        src, pg, MAPPING, readers=1, segment_rows=70_000
    )
    assert forked == [2, 2]
