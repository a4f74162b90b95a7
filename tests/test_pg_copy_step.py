"""The copy as a runbook step: staged into PostgreSQL with its ledger, a parity gate,
rejects journalled, kill -9 and resume, and a rollback that empties what it filled."""

from __future__ import annotations

import signal
import sqlite3
import threading
from pathlib import Path

import psycopg
import pytest

from handrail import Gate, Runbook, RunStatus, SQLite
from handrail.engine.journal import CRASH_ENV
from handrail.resources.postgres import Postgres
from handrail.tablecopy.mapping import Column, TableMap, boolean, jsonb, timestamptz
from handrail.tablecopy.steps import CopyTable, Parity

from .helpers import cli_proc, make_executor, write

pytestmark = pytest.mark.postgres


def make_source(path: Path, n: int = 3000) -> SQLite:
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE content (id TEXT PRIMARY KEY, video_id TEXT, title TEXT, "
        "indexed_at TEXT, has_audio INTEGER, meta TEXT)"
    )
    conn.executemany(
        "INSERT INTO content VALUES (?,?,?,?,?,?)",
        [
            (
                f"c{i:05d}",
                f"v{i:05d}",
                f"title {i}",
                f"2024-05-{1 + i % 28:02d} 10:00:00",
                i % 2,
                f'{{"n": {i}}}' if i % 7 else "not json",
            )
            for i in range(n)
        ],
    )
    conn.execute("UPDATE content SET indexed_at = 'yesterday' WHERE id = 'c00042'")  # a reject
    conn.commit()
    conn.close()
    return SQLite("src", path)


def make_target(dsn: str) -> Postgres:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE content (video_id text PRIMARY KEY, id text UNIQUE, "
            "title text, indexed_at timestamptz, has_audio boolean, meta jsonb)"
        )
    return Postgres("pg", dsn)


MAPPING = TableMap(
    "content",
    "content",
    key=["video_id"],
    columns=[
        Column("video_id"),
        Column("id"),
        Column("title"),
        Column("indexed_at", convert=timestamptz()),
        Column("has_audio", convert=boolean()),
        Column("meta", convert=jsonb()),
    ],
)


def test_copy_step_parity_gate_and_rollback(pg_dsn: str, tmp_path: Path) -> None:
    src = make_source(tmp_path / "src.db")
    target = make_target(pg_dsn)
    before = target.fingerprint().digest
    step = CopyTable(
        "copy content",
        src,
        target,
        MAPPING,
        rows_per_batch=500,
        gates=[Gate("parity", checks=[Parity(src, target, MAPPING)])],
    )
    ex = make_executor(Runbook("copy", steps=[step]), tmp_path / ".h", key="k", auto_approve=True)
    result = ex.run()
    # the parity gate sees the one rejected row as missing in the target
    assert result.status is RunStatus.FAILED
    assert "1 missing" in result.message
    rejects = ex.journal.rejects(result.run_id)
    assert [r["key"] for r in rejects] == ["v00042"]
    assert target.query("SELECT count(*) FROM content") == [(2999,)]
    assert target.query("SELECT meta FROM content WHERE video_id = 'v00007'") == [
        ({"raw_text": "not json"},)
    ]
    undone = ex.rollback(result.run_id)
    assert undone.exit_code == 0
    assert target.fingerprint().digest == before


def test_a_target_with_rules_is_refused_before_anything_changes(
    pg_dsn: str, tmp_path: Path
) -> None:
    """COPY ignores rewrite rules and ON CONFLICT refuses them: the copy says so at plan
    time, naming the rule, instead of going past it."""
    make_source(tmp_path / "src.db", n=50)
    target = make_target(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE diverted (video_id text PRIMARY KEY, title text)")
        conn.execute(
            "CREATE RULE divert AS ON INSERT TO content WHERE NEW.title = 'title 1' "
            "DO INSTEAD INSERT INTO diverted VALUES (NEW.video_id, NEW.title)"
        )
    book = tmp_path / "book.py"
    book.write_text(RUNBOOK)
    proc = cli_proc("plan", str(book), env={"T_DSN": pg_dsn}, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "divert" in proc.stderr
    assert "ON CONFLICT" in proc.stderr
    # run: the preflight refuses it before any backup or row (exit 2)
    proc = cli_proc("run", str(book), "--yes", env={"T_DSN": pg_dsn}, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "step 'copy'" in proc.stdout + proc.stderr
    assert "INSERT or UPDATE rules (divert)" in proc.stdout + proc.stderr
    assert target.query("SELECT count(*) FROM content") == [(0,)]
    assert target.query("SELECT count(*) FROM diverted") == [(0,)]


RUNBOOK = """
import os
from pathlib import Path
from handrail import Runbook, SQLite
from handrail.tablecopy.steps import CopyTable
from handrail.resources.postgres import Postgres
from handrail.tablecopy.mapping import Column, TableMap, boolean, jsonb, timestamptz
src = SQLite("src", Path(__file__).parent / "src.db")
pg = Postgres("pg", os.environ["T_DSN"])
m = TableMap("content", "content", key=["video_id"], columns=[
    Column("video_id"), Column("id"), Column("title"),
    Column("indexed_at", convert=timestamptz()), Column("has_audio", convert=boolean()),
    Column("meta", convert=jsonb())])
runbook = Runbook("copy", steps=[CopyTable("copy", src, pg, m, rows_per_batch=300)])
"""


def test_killed_copy_resumes_exactly_once(pg_dsn: str, tmp_path: Path) -> None:
    make_source(tmp_path / "src.db")
    target = make_target(pg_dsn)
    rb = write(tmp_path / "rb.py", RUNBOOK)
    env = {"T_DSN": pg_dsn}
    killed = cli_proc("run", rb, "--yes", env={**env, CRASH_ENV: "26"})
    assert killed.returncode == -signal.SIGKILL
    done = target.query("SELECT count(*) FROM content")[0][0]
    assert 0 < done < 2999
    resumed = cli_proc("run", rb, "--yes", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert target.query("SELECT count(*) FROM content") == [(2999,)]
    dupes = target.query(
        "SELECT batch FROM _handrail.ledger GROUP BY run_id, step, batch HAVING count(*) > 1"
    )
    assert dupes == []


def test_step_resolves_duplicates_once_and_reads_ahead(
    pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One job serves all of a run's ranges: the GROUP BY for duplicate natural keys runs
    once, not once per range, and every range but the first was read ahead."""
    import handrail.tablecopy.copy as pgcopy

    src = make_source(tmp_path / "src.db", n=2000)
    with sqlite3.connect(tmp_path / "src.db") as conn:  # v00010 twice: the later row wins
        conn.execute("UPDATE content SET video_id = 'v00010' WHERE id = 'c01500'")
    target = make_target(pg_dsn)
    calls = {"losers": 0, "prepared": 0, "ahead": 0}
    real_losers, real_prepare = pgcopy.find_losers, pgcopy.CopyJob.prepare

    def counting_losers(*a: object, **k: object) -> object:
        calls["losers"] += 1
        return real_losers(*a, **k)  # type: ignore[arg-type]

    def counting_prepare(self: pgcopy.CopyJob, rng: pgcopy.KeyRange) -> pgcopy.Prepared:
        calls["prepared"] += 1
        if threading.current_thread().name.startswith("handrail-copy-reader"):
            calls["ahead"] += 1
        return real_prepare(self, rng)

    monkeypatch.setattr(pgcopy, "find_losers", counting_losers)
    monkeypatch.setattr(pgcopy.CopyJob, "prepare", counting_prepare)
    step = CopyTable("copy", src, target, MAPPING, rows_per_batch=250)
    ex = make_executor(
        Runbook("copy", steps=[step]),
        tmp_path / ".h",
        key="k",
        auto_approve=True,
        # the counts below are of this run's copy, not of the preflight's on a clone
        preflight=False,
    )
    assert ex.run().status is RunStatus.COMPLETED
    assert step._cached is None  # the job was closed after the last range
    assert calls["losers"] == 1
    assert calls["prepared"] == 9  # 2000 rows in ranges of 250: 8 full and an empty tail
    assert calls["ahead"] == 8
    assert target.query("SELECT id FROM content WHERE video_id = 'v00010'") == [("c01500",)]
    assert target.query("SELECT count(*) FROM content") == [(1998,)]
