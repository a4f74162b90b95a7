"""Backfill on real SQLite: staged batches, exact rollback from the undo log, conflicts,
affinity, a dry-run distribution gate, and kill -9 in the middle."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from handrail import Backfill, Gate, Runbook, RunStatus, SQLite
from handrail.checks import PlanDistribution
from handrail.engine.journal import CRASH_ENV

from .helpers import cli_proc, run_runbook, write


def make_docs(path: Path, n: int = 2000) -> SQLite:
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE documents (hash TEXT PRIMARY KEY, status TEXT, words INTEGER, "
        "domain TEXT, domain_status TEXT)"
    )
    conn.executemany(
        "INSERT INTO documents VALUES (?,?,?,NULL,NULL)",
        [(f"h{i:05d}", "catalogued" if i % 10 else "failed", i * 7 % 1000) for i in range(n)],
    )
    conn.commit()
    conn.close()
    return SQLite("recon", path)


def classify(row: dict[str, Any]) -> dict[str, Any]:
    words = row["words"]
    if words < 100:
        return {"domain_status": "needs_reprocess"}
    return {"domain": "Medical" if words % 2 else "Water Systems", "domain_status": "assigned"}


def backfill(db: SQLite, **kw: Any) -> Backfill:
    return Backfill(
        "assign",
        db,
        table="documents",
        key="hash",
        columns=["domain", "domain_status"],
        compute=classify,
        where="status = 'catalogued'",
        **kw,
    )


def test_backfill_writes_in_stages_and_rolls_back_exactly(tmp_path: Path) -> None:
    db = make_docs(tmp_path / "recon.db")
    before = db.fingerprint().digest
    step = backfill(db, stages=[100, 1000, None], batch_size=250, gates=[Gate("g", at="stage")])
    ex, result = run_runbook(Runbook("t", steps=[step]), tmp_path / ".handrail", auto_approve=True)
    assert result.status is RunStatus.COMPLETED
    rows = dict(db.query("SELECT domain_status, count(*) FROM documents GROUP BY 1"))
    assert rows == {None: 200, "assigned": 1620, "needs_reprocess": 180}
    sizes = [len(items) for _, _, items, _ in ex.journal.batches(result.run_id, "assign")]
    assert sizes == [100, 250, 250, 250, 250, 250, 250, 200]
    undone = ex.rollback(result.run_id)
    assert undone.exit_code == 0
    assert db.fingerprint().digest == before
    assert not [
        n for (n,) in db.query("SELECT name FROM sqlite_master") if n.startswith("_handrail")
    ]


def test_rollback_leaves_rows_changed_since_and_force_overwrites(tmp_path: Path) -> None:
    db = make_docs(tmp_path / "recon.db", n=300)
    ex, result = run_runbook(
        Runbook("t", steps=[backfill(db)]), tmp_path / ".handrail", auto_approve=True
    )
    conn = sqlite3.connect(db.path)
    conn.execute(
        "UPDATE documents SET domain='Navigation', domain_status='manual_assigned' "
        "WHERE hash='h00151'"
    )
    conn.commit()
    conn.close()
    undone = ex.rollback(result.run_id)
    assert undone.exit_code == 1
    assert undone.conflicts == ["documents hash='h00151'"]
    left = dict(db.query("SELECT hash, domain FROM documents WHERE domain IS NOT NULL"))
    assert left == {"h00151": "Navigation"}  # only their edit remains
    forced = ex.rollback(result.run_id, force=True)
    assert forced.exit_code == 0
    assert db.query("SELECT count(*) FROM documents WHERE domain IS NOT NULL")[0][0] == 0


def test_rows_the_step_never_touched_are_not_undone(tmp_path: Path) -> None:
    db = make_docs(tmp_path / "recon.db", n=300)
    ex, result = run_runbook(
        Runbook("t", steps=[backfill(db)]), tmp_path / ".handrail", auto_approve=True
    )
    conn = sqlite3.connect(db.path)
    conn.execute("UPDATE documents SET domain='by hand' WHERE hash='h00150'")  # status failed
    conn.commit()
    conn.close()
    undone = ex.rollback(result.run_id)
    assert undone.exit_code == 0
    assert undone.warnings == [
        "recon: rows:documents: changed since step 'assign' ran; kept (not this run's change)"
    ]
    assert db.query("SELECT domain FROM documents WHERE hash='h00150'") == [("by hand",)]
    assert db.query("SELECT count(*) FROM documents WHERE domain_status IS NOT NULL") == [(0,)]


def test_affinity_conversion_is_not_a_conflict(tmp_path: Path) -> None:
    db = make_docs(tmp_path / "recon.db", n=50)
    before = db.fingerprint().digest
    step = Backfill(
        "ints",
        db,
        table="documents",
        key="hash",
        columns=["domain"],
        compute=lambda r: {"domain": r["words"]},
    )  # int into a TEXT column
    ex, result = run_runbook(Runbook("t", steps=[step]), tmp_path / ".handrail", auto_approve=True)
    assert db.query("SELECT typeof(domain) FROM documents LIMIT 1")[0][0] == "text"
    undone = ex.rollback(result.run_id)
    assert undone.exit_code == 0, undone.conflicts
    assert db.fingerprint().digest == before


def test_dry_run_distribution_gate_stops_before_any_write(tmp_path: Path) -> None:
    db = make_docs(tmp_path / "recon.db")
    before = db.fingerprint().digest
    gate = Gate(
        "benchmarks",
        at="plan",
        checks=[PlanDistribution("domain_status", {"assigned": 50.0, "needs_reprocess": 50.0})],
    )
    ex, result = run_runbook(
        Runbook("t", steps=[backfill(db, gates=[gate])]), tmp_path / ".handrail", auto_approve=True
    )
    assert result.status is RunStatus.FAILED
    assert "assigned: 90.0% vs 50.0%" in result.message
    assert db.fingerprint().digest == before
    plan = ex.journal.step(result.run_id, "assign").plan
    assert plan is not None
    assert plan["counts"] == {"rows": 1800, "change": 1800, "unchanged": 0}
    ok_gate = Gate(
        "benchmarks",
        at="plan",
        checks=[PlanDistribution("domain_status", {"assigned": 88.0, "needs_reprocess": 12.0})],
    )
    _, ok = run_runbook(
        Runbook("t2", steps=[backfill(db, gates=[ok_gate])]),
        tmp_path / "b" / ".handrail",
        auto_approve=True,
    )
    assert ok.status is RunStatus.COMPLETED


RUNBOOK = """
from pathlib import Path
from handrail import Backfill, Runbook, SQLite
db = SQLite("recon", Path(__file__).parent / "recon.db")
def classify(row):
    w = row["words"]
    return {"domain": "Medical" if w % 2 else "Water", "domain_status": "assigned"}
runbook = Runbook("bf", steps=[Backfill("assign", db, table="documents", key="hash",
    columns=["domain", "domain_status"], compute=classify, batch_size=100)])
"""


@pytest.mark.parametrize("crash_at", [6, 9, 14, 21])
def test_kill_during_backfill_then_resume(tmp_path: Path, crash_at: int) -> None:
    ref = tmp_path / "ref"
    ref.mkdir()
    make_docs(ref / "recon.db", n=1000)
    write(ref / "rb.py", RUNBOOK)
    work = tmp_path / "work"
    work.mkdir()
    db = make_docs(work / "recon.db", n=1000)
    original = db.fingerprint().digest
    write(work / "rb.py", RUNBOOK)
    assert cli_proc("run", ref / "rb.py", "--yes").returncode == 0
    killed = cli_proc("run", work / "rb.py", "--yes", env={CRASH_ENV: str(crash_at)})
    assert killed.returncode == -signal.SIGKILL
    resumed = cli_proc("run", work / "rb.py", "--yes")
    assert resumed.returncode == 0, resumed.stderr
    assert db.fingerprint().digest == SQLite("r", ref / "recon.db").fingerprint().digest
    assert cli_proc("rollback", work / "rb.py").returncode == 0
    assert db.fingerprint().digest == original


# -- PostgreSQL --------------------------------------------------------------------------


def make_pg_videos(dsn: str, n: int = 1500) -> Any:
    import psycopg

    from handrail.resources.postgres import Postgres

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE video (id serial PRIMARY KEY, uuid uuid UNIQUE NOT NULL, name text, "
            'category integer, "channelId" integer, score numeric(10,3), tags jsonb)'
        )
        with conn.cursor() as cur:
            cur.executemany(
                'INSERT INTO video (uuid, name, category, "channelId", score, tags) '
                "VALUES (gen_random_uuid(), %s, %s, %s, %s, %s)",
                [
                    (
                        f"video {i}",
                        (i % 18) + 1 if i % 4 == 0 else None,
                        i % 7,
                        i / 3,
                        '{"a": [1, 2]}' if i % 5 == 0 else None,
                    )
                    for i in range(n)
                ],
            )
    return Postgres("peertube", dsn)


def categorize(row: dict[str, Any]) -> dict[str, Any]:
    return {"category": 100 + row["id"] % 18, "score": None}


@pytest.mark.postgres
def test_pg_backfill_stages_and_exact_rollback(pg_dsn: str, tmp_path: Path) -> None:
    from handrail.steps.pg_backfill import PgBackfill

    db = make_pg_videos(pg_dsn)
    before = db.fingerprint()
    step = PgBackfill(
        "categories",
        db,
        table="video",
        key="id",
        columns=["category", "score"],
        compute=categorize,
        where='"channelId" <> 3',
        stages=[100, 1000, None],
        batch_size=300,
        gates=[Gate("g", at="stage")],
    )
    ex, result = run_runbook(Runbook("pg", steps=[step]), tmp_path / ".handrail", auto_approve=True)
    assert result.status is RunStatus.COMPLETED, result.message
    counts = dict(db.query("SELECT category >= 100, count(*) FROM video GROUP BY 1"))
    assert counts[True] == sum(1 for i in range(1500) if i % 7 != 3)
    # Someone edits one video the backfill wrote; rollback leaves it and reports it.
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("UPDATE video SET category = 7 WHERE id = 10")
    undone = ex.rollback(result.run_id)
    assert undone.exit_code == 1
    assert undone.conflicts == ["video id=10"]
    assert db.query("SELECT category FROM video WHERE id = 10") == [(7,)]
    forced = ex.rollback(result.run_id, force=True)
    assert forced.exit_code == 0
    assert db.fingerprint().digest == before.digest


PG_RUNBOOK = """
import os
from handrail import Runbook
from handrail.steps.pg_backfill import PgBackfill
from handrail.resources.postgres import Postgres
db = Postgres("peertube", os.environ["PT_DSN"])
runbook = Runbook("pgbf", steps=[PgBackfill("categories", db, table="video", key="id",
    columns=["category"], compute=lambda row: {"category": 100 + row["id"] % 18},
    batch_size=100)])
"""


@pytest.mark.postgres
@pytest.mark.parametrize("crash_at", [7, 12])
def test_pg_backfill_kill_and_resume(pg_dsn: str, tmp_path: Path, crash_at: int) -> None:
    db = make_pg_videos(pg_dsn, n=800)
    original = db.fingerprint().digest
    rb = write(tmp_path / "rb.py", PG_RUNBOOK)
    env = {"PT_DSN": pg_dsn}
    killed = cli_proc("run", rb, "--yes", env={**env, CRASH_ENV: str(crash_at)})
    assert killed.returncode == -signal.SIGKILL
    resumed = cli_proc("run", rb, "--yes", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert db.query("SELECT count(*) FROM video WHERE category >= 100") == [(800,)]
    ledger = db.query("SELECT batch, count(*) FROM _handrail.ledger GROUP BY 1 HAVING count(*) > 1")
    assert ledger == []  # no batch applied twice
    assert cli_proc("rollback", rb, env=env).returncode == 0
    assert db.fingerprint().digest == original
