"""Fencing after a take-over: a holder stopped (SIGSTOP), taken over with --take-over and
then continued (SIGCONT) must stop at its next write with LeaseLost, applying nothing more,
while the new holder's result equals an uninterrupted run's.

The real scenario runs ``HANDRAIL_FENCING_TRIALS`` times (default 1) on SQLite, and once on
PostgreSQL; the unit tests check each fence alone: the journal, the SQLite and PostgreSQL
ledgers, the heartbeat, and a write request to an HTTP service.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from handrail import Runbook, RunStatus, SQLite
from handrail.engine.fencing import holding
from handrail.engine.journal import Heartbeat, Journal, Lease
from handrail.errors import LeaseLost
from handrail.steps.backfill import Backfill

from .digests import pg_digest, sqlite_digest
from .helpers import HANDRAIL, cli_proc, make_items_db, run_runbook, write

TRIALS = int(os.environ.get("HANDRAIL_FENCING_TRIALS", "1"))
ROWS = 3000
BATCH = 50

RUNBOOK = f"""
import os
import time
from pathlib import Path
from handrail import Runbook, SQLite
from handrail.steps.backfill import Backfill

DELAY = float(os.environ.get("FENCING_TEST_DELAY", "0"))
db = SQLite("db", Path(__file__).parent / "items.db")

def compute(row):
    return {{"status": "s" + str(row["id"] % 7), "score": row["id"] * 1.5}}

class SlowBackfill(Backfill):
    def apply_batch(self, ctx, batch, items):
        # Slow work between batches, outside their transactions: a stop caught here
        # leaves no lock behind for the new holder to wait on.
        time.sleep(DELAY)
        return super().apply_batch(ctx, batch, items)

runbook = Runbook("fence", steps=[SlowBackfill("mark", db, table="items", key="id",
    columns=["status", "score"], compute=compute, batch_size={BATCH})])
"""


# -- helpers ---------------------------------------------------------------------------------
def stale(journal_path: Path) -> None:
    """Make the current lease look stale (as if its heartbeat stopped long ago)."""
    conn = sqlite3.connect(journal_path, timeout=30)
    with conn:
        conn.execute("UPDATE leases SET heartbeat_at = heartbeat_at - 600, expires_at = 0")
    conn.close()


def taken_over(state: Path, key: str) -> tuple[Journal, Lease, Journal, Lease]:
    """Two holders of one runbook's lease: the old one (stale, taken over) and the new."""
    old_j = Journal(state)
    old = old_j.acquire_lease(key)
    stale(old_j.path)
    new_j = Journal(state)
    new = new_j.acquire_lease(key, take_over=True)
    return old_j, old, new_j, new


def events(journal_path: Path) -> int:
    conn = sqlite3.connect(journal_path, timeout=30)
    try:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    finally:
        conn.close()


def done_batches(journal_path: Path) -> int:
    try:
        conn = sqlite3.connect(journal_path, timeout=30)
        try:
            return int(
                conn.execute("SELECT count(*) FROM batches WHERE status='done'").fetchone()[0]
            )
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0


def lockable(path: Path, begin: str) -> bool:
    """Whether ``path`` can be locked for writing right now (nobody holds a lock on it)."""
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        conn.execute(begin)
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


def stop_between_writes(proc: subprocess.Popen[str], free: Callable[[], bool]) -> None:
    """SIGSTOP ``proc`` at an instant it holds no lock (``free``): stopped inside a write
    transaction it would block the new holder (who waits: there is nothing to fence)."""
    for _ in range(500):
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(0.01)  # let the stop land
        if free():
            return
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(random.uniform(0.001, 0.02))
    raise AssertionError("never caught the process outside a transaction")


def start(rb: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    full = os.environ | {"COLUMNS": "200", "NO_COLOR": "1"} | env
    return subprocess.Popen(
        [*HANDRAIL, "run", str(rb), "--yes", "--no-input"],
        env=full,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_for(cond: Callable[[], bool], proc: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + 120
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"exited before {what}: {proc.communicate()}")
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def stopped_taken_over_continued(
    rb: Path, env: dict[str, str], free: Callable[[], bool], data: Callable[[], Any]
) -> tuple[subprocess.CompletedProcess[str], str, int]:
    """The scenario: run, stop mid-step, take over to completion, continue the first.
    Returns the take-over's result and the first's stderr and exit code; asserts the first
    changed nothing (``data``, the journal's events) after it was continued."""
    journal = rb.parent / ".handrail" / "journal.sqlite"
    first = start(rb, env)
    try:
        wait_for(lambda: done_batches(journal) >= 5, first, "five batches")
        stop_between_writes(first, lambda: free() and lockable(journal, "BEGIN IMMEDIATE"))
        assert done_batches(journal) < ROWS // BATCH, "the run finished before the stop"
        stale(journal)
        taker = env | {"FENCING_TEST_DELAY": "0"}
        second = cli_proc("run", rb, "--yes", "--take-over", env=taker, timeout=300)
        assert second.returncode == 0, second.stdout + second.stderr
        before, seen = data(), events(journal)
    finally:
        os.kill(first.pid, signal.SIGCONT)
        _, err = first.communicate(timeout=120)
    assert data() == before, "the stale holder changed data after the take-over"
    assert events(journal) == seen, "the stale holder wrote to the journal"
    return second, err, first.returncode


# -- the real scenario on SQLite -----------------------------------------------------------
@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same runbook on the same input, run once without interruption."""
    root = tmp_path_factory.mktemp("fencing-reference")
    make_items_db(root / "items.db", n=ROWS)
    rb = write(root / "rb.py", RUNBOOK)
    done = cli_proc("run", rb, "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    return sqlite_digest(root / "items.db", include_handrail=False)


@pytest.mark.parametrize("trial", range(TRIALS))
def test_stopped_holder_is_fenced_out_after_take_over(
    tmp_path: Path, reference: dict[str, Any], trial: int
) -> None:
    db = make_items_db(tmp_path / "items.db", n=ROWS)
    original = sqlite_digest(db, include_handrail=False)
    rb = write(tmp_path / "rb.py", RUNBOOK)
    second, err, code = stopped_taken_over_continued(
        rb,
        {"FENCING_TEST_DELAY": "0.05"},
        free=lambda: lockable(db, "BEGIN EXCLUSIVE"),
        data=lambda: sqlite_digest(db),
    )
    assert second.returncode == 0, second.stdout + second.stderr
    assert code == 1, err
    assert "lost its lease (generation 1) to generation 2" in err, err
    assert "applied nothing more" in err
    assert "Traceback" not in err
    result = sqlite_digest(db, include_handrail=False)
    assert result == reference
    assert result != original
    journal = Journal(tmp_path / ".handrail")
    try:
        (run,) = journal.runs()
        assert run.status is RunStatus.COMPLETED  # the stale holder did not mark it failed
        assert journal.lease(str(rb.resolve())) is None
    finally:
        journal.close()


# -- the real scenario on PostgreSQL ---------------------------------------------------------
PG_RUNBOOK = """
import os
import time
from handrail import Runbook
from handrail.steps.pg_backfill import PgBackfill
from handrail.resources.postgres import Postgres

DELAY = float(os.environ.get("FENCING_TEST_DELAY", "0"))
db = Postgres("pg", os.environ["FENCING_TEST_DSN"])

def compute(row):
    return {"category": 100 + row["id"] % 18, "score": row["id"] / 4}

class SlowBackfill(PgBackfill):
    def apply_batch(self, ctx, batch, items):
        time.sleep(DELAY)  # outside the batch's transaction
        return super().apply_batch(ctx, batch, items)

runbook = Runbook("pgfence", steps=[SlowBackfill("categories", db, table="video", key="id",
    columns=["category", "score"], compute=compute, batch_size=50)])
"""


def make_videos(dsn: str, n: int) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE video (id serial PRIMARY KEY, name text, category integer, "
            "score numeric(10,3))"
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO video (name, category, score) VALUES (%s, %s, %s)",
                [(f"video {i}", i % 5 or None, i / 3) for i in range(n)],
            )


def idle_in_transaction(dsn: str) -> bool:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state <> 'idle'"
        ).fetchone()
    return bool(row and row[0])


@pytest.mark.postgres
def test_stopped_holder_is_fenced_out_on_postgres(pg_dsn: str, tmp_path: Path) -> None:
    make_videos(pg_dsn, ROWS)
    original = pg_digest(pg_dsn)
    ref_root, root = tmp_path / "ref", tmp_path / "w"
    rb = write(root / "rb.py", PG_RUNBOOK)
    env = {"FENCING_TEST_DSN": pg_dsn, "FENCING_TEST_DELAY": "0.05"}
    second, err, code = stopped_taken_over_continued(
        rb,
        env,
        free=lambda: not idle_in_transaction(pg_dsn),
        data=lambda: pg_digest(pg_dsn) | {"handrail": pg_digest(pg_dsn, "_handrail")},
    )
    assert second.returncode == 0, second.stdout + second.stderr
    assert code == 1, err
    assert "lost its lease (generation 1) to generation 2" in err, err
    fenced = pg_digest(pg_dsn)
    assert fenced != original
    # An uninterrupted run on a copy of the same input gives the same table.
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE video")
        conn.execute("DROP SCHEMA _handrail CASCADE")
    make_videos(pg_dsn, ROWS)
    assert pg_digest(pg_dsn) == original
    write(ref_root / "rb.py", PG_RUNBOOK)
    done = cli_proc("run", ref_root / "rb.py", "--yes", env=env | {"FENCING_TEST_DELAY": "0"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert pg_digest(pg_dsn) == fenced


# -- unit: the journal and the heartbeat --------------------------------------------------------
def test_every_acquisition_gets_a_higher_generation(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "s")
    first = journal.acquire_lease("rb")
    journal.release_lease(first)
    second = journal.acquire_lease("rb")
    stale(journal.path)
    third = Journal(tmp_path / "s").acquire_lease("rb", take_over=True)
    assert (first.generation, second.generation, third.generation) == (1, 2, 3)
    assert journal.lease("rb")["generation"] == 3  # type: ignore[index]
    assert journal.acquire_lease("other").generation == 1  # per runbook


def test_journal_refuses_writes_from_an_old_generation(tmp_path: Path) -> None:
    old_j, old, new_j, new = taken_over(tmp_path / "s", "rb")
    run_id = new_j.create_run("rb", "rb", "h", {"steps": []})
    seen = events(old_j.path)
    with pytest.raises(LeaseLost) as lost:
        old_j.event(run_id, "late", "a write from the stale holder")
    assert "generation 2 held by" in str(lost.value)
    assert f"pid {os.getpid()}" in str(lost.value)
    with pytest.raises(LeaseLost):
        old_j.set_run_status(run_id, RunStatus.FAILED)
    assert events(old_j.path) == seen
    assert new_j.run(run_id).status is RunStatus.SNAPSHOTTING  # type: ignore[union-attr]
    # Letting go is allowed, and leaves the new holder's lease alone.
    old_j.release_lease(old)
    assert new_j.lease("rb")["token"] == new.token  # type: ignore[index]
    new_j.event(run_id, "fine", "the new holder writes")
    assert events(old_j.path) == seen + 1


def test_heartbeat_finding_the_lease_taken_stops_the_next_write(tmp_path: Path) -> None:
    old_j, old, new_j, new = taken_over(tmp_path / "s", "rb")
    with Heartbeat(old_j, old, ttl=0.15):
        time.sleep(0.4)  # several beats
    row = new_j.lease("rb")
    assert row is not None
    assert row["token"] == new.token  # not taken back
    assert row["expires_at"] > time.time() + 30  # the new holder's expiry, not 0.15 s
    with pytest.raises(LeaseLost):
        old_j.event(None, "late", "after the beat")


def test_heartbeat_finding_the_lease_gone_stops_the_next_write(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "s")
    lease = journal.acquire_lease("rb")
    other = sqlite3.connect(journal.path, timeout=30)
    with other:
        other.execute("DELETE FROM leases")  # removed by hand: no newer generation
    other.close()
    journal.event(None, "still", "before any beat, the generation is still ours")
    with Heartbeat(journal, lease, ttl=0.15):
        time.sleep(0.4)
    assert journal.lease("rb") is None  # not re-taken
    with pytest.raises(LeaseLost, match="taken away"):
        journal.event(None, "late", "after the beat")


def test_check_stops_a_stale_holder_before_an_untransacted_write(tmp_path: Path) -> None:
    from handrail import fencing

    old_j, old, new_j, new = taken_over(tmp_path / "s", "rb")
    fencing.check()  # outside a run: nothing to check
    with holding(new_j.fence(new)):
        fencing.check()
    with holding(old_j.fence(old)), pytest.raises(LeaseLost, match="generation 2"):
        fencing.check()


# -- unit: the SQLite ledger -----------------------------------------------------------------
def batch(db: Path, status: str, batch_no: int) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("UPDATE items SET status=? WHERE id <= 10", (status,))
            SQLite.ledger_mark(conn, "run", "step", batch_no, 10)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()


def test_sqlite_ledger_refuses_a_batch_from_an_old_generation(tmp_path: Path) -> None:
    db = make_items_db(tmp_path / "items.db", n=30)
    old_j, old, new_j, new = taken_over(tmp_path / "s", "rb")
    with holding(new_j.fence(new)):
        batch(db, "new-holder", 0)
    after_new = sqlite_digest(db)
    with holding(old_j.fence(old)), pytest.raises(LeaseLost) as lost:
        batch(db, "stale-holder", 1)
    assert f"database {db}" in str(lost.value)
    assert sqlite_digest(db) == after_new  # the whole batch rolled back, ledger row too
    assert SQLite("db", db).ledger_batches("run", "step") == {0}
    # Before the take-over, the old generation wrote freely; a newer one still can.
    with holding(new_j.fence(new)):
        batch(db, "new-holder", 2)
    assert SQLite("db", db).ledger_batches("run", "step") == {0, 2}


def test_old_generation_before_any_newer_write_is_allowed_then_overtaken(tmp_path: Path) -> None:
    db = make_items_db(tmp_path / "items.db", n=30)
    old_j, old, new_j, new = taken_over(tmp_path / "s", "rb")
    # The target has not heard of generation 2 yet: the journal is the first fence.
    with holding(old_j.fence(old)):
        batch(db, "old", 0)
    with holding(new_j.fence(new)):
        batch(db, "new", 1)
    with holding(old_j.fence(old)), pytest.raises(LeaseLost):
        batch(db, "old-again", 2)
    assert SQLite("db", db).ledger_batches("run", "step") == {0, 1}


def test_new_holder_reading_the_ledger_fences_the_target_first(tmp_path: Path) -> None:
    # The old holder has not heard of the take-over, and the new one has not applied a
    # batch yet: its ledger read (what committed before it took over) already closes the
    # target, so no batch of the old holder can commit after that answer.
    db = make_items_db(tmp_path / "items.db", n=30)
    old_j, old, new_j, new = taken_over(tmp_path / "s", "rb")
    with holding(old_j.fence(old)):
        batch(db, "old", 0)
    with holding(new_j.fence(new)):
        assert SQLite("db", db).ledger_batches("run", "step") == {0}
    before = sqlite_digest(db)
    with holding(old_j.fence(old)), pytest.raises(LeaseLost):
        batch(db, "old-after-the-read", 1)
    assert sqlite_digest(db) == before


def test_reading_the_ledger_outside_a_run_writes_nothing(tmp_path: Path) -> None:
    db = make_items_db(tmp_path / "items.db", n=30)
    before = sqlite_digest(db)
    assert SQLite("db", db).ledger_batches("run", "step") == set()
    assert sqlite_digest(db) == before


def test_rollback_leaves_no_fence_table(tmp_path: Path) -> None:
    db = make_items_db(tmp_path / "items.db", n=120)
    original = sqlite_digest(db)  # with handrail's tables: there must be none left
    step = Backfill(
        "mark",
        SQLite("db", db),
        table="items",
        key="id",
        columns=["status"],
        compute=lambda r: {"status": f"x{r['id'] % 3}"},
        batch_size=25,
    )
    ex, result = run_runbook(
        Runbook("rb", steps=[step]), tmp_path / "s", key="rb", auto_approve=True
    )
    assert result.status is RunStatus.COMPLETED, result.message
    fences = sqlite3.connect(db).execute("SELECT generation FROM _handrail_fence").fetchall()
    assert fences == [(1,)]
    undone = ex.rollback(result.run_id)
    assert undone.exit_code == 0, undone.message
    assert sqlite_digest(db) == original


# -- unit: the PostgreSQL ledger --------------------------------------------------------------
@pytest.mark.postgres
def test_postgres_ledger_refuses_a_batch_from_an_old_generation(
    pg_dsn: str, tmp_path: Path
) -> None:
    import psycopg

    from handrail.resources.postgres import Postgres

    make_videos(pg_dsn, 30)
    old_j, old, new_j, new = taken_over(tmp_path / "s", "rb")

    def pg_batch(category: int, batch_no: int) -> None:
        with psycopg.connect(pg_dsn) as conn, conn.transaction():
            conn.execute("UPDATE video SET category = %s WHERE id <= 10", (category,))
            Postgres.ledger_mark(conn, "run", "step", batch_no, 10)

    with holding(new_j.fence(new)):
        pg_batch(101, 0)
    after_new = pg_digest(pg_dsn) | {"handrail": pg_digest(pg_dsn, "_handrail")}
    with holding(old_j.fence(old)), pytest.raises(LeaseLost, match="generation 2"):
        pg_batch(666, 1)
    assert pg_digest(pg_dsn) | {"handrail": pg_digest(pg_dsn, "_handrail")} == after_new
    assert Postgres("pg", pg_dsn).ledger_batches("run", "step") == {0}


# -- unit: an external service ------------------------------------------------------------------
@pytest.mark.postgres
def test_fenced_out_holder_sends_no_write_request(pg_dsn: str, tmp_path: Path) -> None:
    from handrail.resources.http import HTTPService
    from handrail.testing.peertube import PeerTubeServer, categories_of, create_schema, seed_videos

    create_schema(pg_dsn)
    uuids = seed_videos(pg_dsn, 3)
    old_j, old, new_j, new = taken_over(tmp_path / "s", "rb")
    with PeerTubeServer(pg_dsn, token="t0k") as server:
        os.environ["HANDRAIL_TEST_FENCE_TOKEN"] = "t0k"
        try:
            svc = HTTPService("pt", server.url, token_env="HANDRAIL_TEST_FENCE_TOKEN")
            with svc.client() as client:
                path = f"/api/v1/videos/{uuids[0]}"
                with holding(old_j.fence(old)):
                    svc.send(client, "GET", path)  # reading is harmless
                    with pytest.raises(LeaseLost):
                        svc.send(client, "PUT", path, json={"category": 111})
                assert [r.method for r in server.requests] == ["GET"]
                with holding(new_j.fence(new)):
                    svc.send(client, "PUT", path, json={"category": 112})
        finally:
            del os.environ["HANDRAIL_TEST_FENCE_TOKEN"]
        assert [r.method for r in server.writes()] == ["PUT"]
    assert categories_of(pg_dsn)[uuids[0]] == 112


# -- a journal from before fencing ----------------------------------------------------------
#: the leases table as handrail wrote it before lease generations
OLD_LEASES = """
CREATE TABLE leases (
    runbook_key TEXT PRIMARY KEY,
    run_id TEXT, owner TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
    token TEXT NOT NULL, acquired_at TEXT NOT NULL, heartbeat_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
"""

GATED = (
    RUNBOOK.replace(
        "compute=compute, batch_size", "compute=compute, stages=[500, None], batch_size"
    )
    .replace(
        "from handrail import Runbook, SQLite",
        "from handrail import Gate, Runbook, SQLite",
    )
    .replace("batch_size=50)", "batch_size=50, gates=[Gate('look', at='stage', approval=True)])")
)


def downgrade(journal_path: Path, key: str, dead_pid: int) -> None:
    """Turn a journal into one written before fencing, holding a dead process's lease."""
    conn = sqlite3.connect(journal_path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DROP TABLE fences")
        conn.execute("DROP TABLE leases")
        conn.execute(OLD_LEASES)
        conn.execute(
            "INSERT INTO leases VALUES (?, NULL, 'ann', ?, ?, 't', 'x', 0, 0)",
            (key, socket.gethostname(), dead_pid),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


def test_old_journal_is_upgraded_in_place_and_its_run_resumes(
    tmp_path: Path, reference: dict[str, Any]
) -> None:
    db = make_items_db(tmp_path / "items.db", n=ROWS)
    rb = write(tmp_path / "rb.py", GATED)
    paused = cli_proc("run", rb, "--no-input")
    assert paused.returncode == 3, paused.stdout + paused.stderr
    journal_path = tmp_path / ".handrail" / "journal.sqlite"
    dead = subprocess.Popen(["true"])
    dead.wait()
    downgrade(journal_path, str(rb.resolve()), dead.pid)
    done = cli_proc("run", rb, "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert sqlite_digest(db, include_handrail=False) == reference
    journal = Journal(tmp_path / ".handrail")
    try:
        (run,) = journal.runs()
        assert run.status is RunStatus.COMPLETED
        assert "resume" in [e["kind"] for e in journal.events(run.id)]
        taken = journal.conn.execute("SELECT message FROM events WHERE kind='lease'").fetchall()
        assert [m for (m,) in taken] == [
            f"lease taken from ann@{socket.gethostname()} pid {dead.pid}"
        ]
        cols = [r[1] for r in journal.conn.execute("PRAGMA table_info(leases)")]
        assert "generation" in cols
        gen = journal.conn.execute("SELECT generation FROM fences").fetchone()[0]
        assert gen == 1  # the first lease with a generation
    finally:
        journal.close()


def test_two_state_directories_never_compare_generations(tmp_path: Path) -> None:
    db = make_items_db(tmp_path / "items.db", n=30)
    busy = Journal(tmp_path / "a")
    for _ in range(3):
        busy.release_lease(busy.acquire_lease("rb"))
    lease = busy.acquire_lease("rb")  # generation 4
    other = Journal(tmp_path / "b")
    fresh = other.acquire_lease("rb")  # generation 1 in its own journal
    with holding(busy.fence(lease)):
        batch(db, "a", 0)
    with holding(other.fence(fresh)):
        batch(db, "b", 1)  # not refused: a different lease
    assert SQLite("db", db).ledger_batches("run", "step") == {0, 1}
