"""The journal: one SQLite file in the state directory recording every run, step, stage,
batch, check, approval, backup and event, and the lease that allows one run at a time.

Durability: WAL with ``synchronous=FULL``, so a record that ``commit`` returned for
survives kill -9 and power loss. Every write below is its own short transaction unless a
caller groups several with :meth:`Journal.transaction`.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import LeaseHeld, ResourceError
from ..model import RunStatus, StepStatus
from ..redact import redact, redact_obj
from .diskfull import disk_full, is_disk_full
from .fencing import Fence, lease_lost

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    runbook_key TEXT NOT NULL,       -- absolute path of the runbook file (or a name)
    runbook_name TEXT NOT NULL,
    plan_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    mode TEXT NOT NULL DEFAULT 'run',  -- run | rehearsal
    started_at TEXT NOT NULL,
    finished_at TEXT,
    started_by TEXT NOT NULL,
    paused_gate TEXT,                -- gate key when status = paused
    clock TEXT,                      -- the run's logical time, for values steps stamp
    definition TEXT NOT NULL         -- the runbook's describe() as JSON, redacted
);
CREATE INDEX IF NOT EXISTS runs_by_runbook ON runs(runbook_key, started_at);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL REFERENCES runs(id),
    name TEXT NOT NULL,
    position INTEGER NOT NULL,
    tier TEXT NOT NULL,
    status TEXT NOT NULL,
    plan TEXT,                       -- Plan as JSON
    state TEXT NOT NULL DEFAULT '{}',-- the step's own persisted state
    items_total INTEGER,
    items_done INTEGER NOT NULL DEFAULT 0,
    started_at TEXT, applied_at TEXT, finished_at TEXT,
    apply_seconds REAL, rollback_seconds REAL,
    pre_fingerprints TEXT,           -- {resource: digest} before the step's first batch
    error TEXT,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS batches (
    run_id TEXT NOT NULL, step TEXT NOT NULL, batch INTEGER NOT NULL,
    stage INTEGER NOT NULL,
    items TEXT NOT NULL,             -- the batch's item keys as JSON
    size INTEGER NOT NULL,
    status TEXT NOT NULL,            -- pending | done
    changed INTEGER, done_at TEXT,
    PRIMARY KEY (run_id, step, batch)
);
CREATE TABLE IF NOT EXISTS checks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL, step TEXT NOT NULL, gate TEXT NOT NULL,
    name TEXT NOT NULL, outcome TEXT NOT NULL, message TEXT NOT NULL,
    evidence TEXT NOT NULL, at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS baselines (
    run_id TEXT NOT NULL, check_key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (run_id, check_key)
);
CREATE TABLE IF NOT EXISTS approvals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL, gate TEXT NOT NULL, decision TEXT NOT NULL,
    who TEXT NOT NULL, at TEXT NOT NULL, plan_hash TEXT NOT NULL, comment TEXT NOT NULL,
    automatic INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS backups (
    run_id TEXT NOT NULL, resource TEXT NOT NULL, kind TEXT NOT NULL,
    path TEXT, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    fingerprint TEXT NOT NULL, meta TEXT NOT NULL,
    taken_at TEXT NOT NULL, verified_at TEXT, evidence TEXT,
    host TEXT,                       -- where it was taken; NULL in journals from before
    PRIMARY KEY (run_id, resource)
);
CREATE TABLE IF NOT EXISTS rejects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL, step TEXT NOT NULL, source TEXT NOT NULL,
    key TEXT NOT NULL, reason TEXT NOT NULL,
    UNIQUE (run_id, step, source, key, reason)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT, at TEXT NOT NULL, kind TEXT NOT NULL, step TEXT,
    message TEXT NOT NULL, data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS gates (
    run_id TEXT NOT NULL, gate TEXT NOT NULL, outcome TEXT NOT NULL, at TEXT NOT NULL,
    PRIMARY KEY (run_id, gate)
);
CREATE TABLE IF NOT EXISTS leases (
    runbook_key TEXT PRIMARY KEY,
    run_id TEXT, owner TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
    token TEXT NOT NULL, acquired_at TEXT NOT NULL, heartbeat_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0  -- the fencing token: see fences
);
-- One row per runbook, never deleted: the last lease generation handed out, so a holder
-- that lost its lease finds a greater number here even after the new holder released it.
CREATE TABLE IF NOT EXISTS fences (
    runbook_key TEXT PRIMARY KEY,
    generation INTEGER NOT NULL,
    holder TEXT NOT NULL,            -- owner@host pid N
    acquired_at TEXT NOT NULL
);
"""

#: Test-only hook: kill this process with SIGKILL right after the N-th event is committed.
CRASH_ENV = "HANDRAIL_TEST_CRASH_AT_EVENT"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def whoami() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid{os.getuid()}"


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def _dumps(value: Any) -> str:
    return json.dumps(redact_obj(value), sort_keys=True, default=str)


@dataclass(frozen=True)
class RunRow:
    id: str
    runbook_key: str
    runbook_name: str
    plan_hash: str
    status: RunStatus
    mode: str
    started_at: str
    finished_at: str | None
    started_by: str
    paused_gate: str | None
    clock: str = ""  # the run's logical time (its start, unless a rehearsal pins it)


@dataclass(frozen=True)
class StepRow:
    name: str
    position: int
    tier: str
    status: StepStatus
    plan: dict[str, Any] | None
    state: dict[str, Any]
    items_total: int | None
    items_done: int
    apply_seconds: float | None
    rollback_seconds: float | None
    pre_fingerprints: dict[str, Any] | None
    error: str | None


@dataclass(frozen=True)
class Lease:
    runbook_key: str
    token: str
    owner: str
    host: str
    pid: int
    generation: int = 0  # the fencing token: one more than the lease it replaced

    @property
    def holder(self) -> str:
        return f"{self.owner}@{self.host} pid {self.pid}"


class Journal:
    """The state directory's journal database."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ResourceError(
                f"cannot create state directory {state_dir}: {exc.strerror}"
            ) from exc
        self.path = state_dir / "journal.sqlite"
        try:
            self.conn = sqlite3.connect(
                str(self.path), timeout=30, isolation_level=None, check_same_thread=False
            )
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.executescript(SCHEMA)
            _upgrade(self.conn)
        except sqlite3.DatabaseError as exc:
            if is_disk_full(exc, self.path):
                raise disk_full(self.path, "the journal", exc) from exc
            raise ResourceError(
                f"journal {self.path} is not usable: {exc}",
                hint="point --state-dir at another directory, or restore the journal",
            ) from exc
        self.conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._depth = 0
        # Leases this object holds, by runbook key: each write checks its generation is
        # still the newest (fencing), and ``_lost`` those a heartbeat found taken.
        self._held: dict[str, Lease] = {}
        self._lost: set[str] = set()
        self._events_seen = 0
        crash = os.environ.get(CRASH_ENV)
        self._crash_at = int(crash) if crash and crash.isdigit() else None

    def close(self) -> None:
        self.conn.close()

    @property
    def backups_dir(self) -> Path:
        return self.state_dir / "backups"

    def run_dir(self, run_id: str) -> Path:
        return self.state_dir / "runs" / run_id

    # -- transactions -------------------------------------------------------------------
    @contextmanager
    def transaction(self, *, fenced: bool = True) -> Iterator[sqlite3.Connection]:
        """Group journal writes into one record: all of them commit, or none. ``fenced``:
        refuse it with :class:`LeaseLost` when a lease this object holds was taken over.

        Every journal write passes here, so this is where a full disk is recognised: the
        record is rolled back whole (the journal stays as it was before it) and
        :class:`DiskFull` names the state directory's disk and its free space."""
        with self._lock:
            outer = self._depth == 0
            if outer:
                self._begin()
                try:
                    if fenced:
                        self._check_held()
                except BaseException:
                    self.conn.execute("ROLLBACK")
                    raise
            self._depth += 1
            try:
                yield self.conn
            except BaseException as exc:
                self._depth -= 1
                if outer:
                    self._rollback_quietly()
                    if isinstance(exc, sqlite3.Error) and is_disk_full(exc, self.path):
                        raise disk_full(self.path, "a journal record", exc) from exc
                raise
            self._depth -= 1
            if outer:
                try:
                    self.conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    self._rollback_quietly()
                    if is_disk_full(exc, self.path):
                        raise disk_full(self.path, "a journal record", exc) from exc
                    raise
                self._maybe_crash()

    def _check_held(self) -> None:
        """Refuse to write for a lease that a newer generation replaced (one indexed read
        per lease held, inside the write transaction, so nothing can slip in between)."""
        for lease in self._held.values():
            self._verify(lease, "the journal")

    def _verify(self, lease: Lease, where: str) -> None:
        row = self.conn.execute(
            "SELECT generation, holder FROM fences WHERE runbook_key=?", (lease.runbook_key,)
        ).fetchone()
        if row is not None and int(row[0]) > lease.generation:
            raise lease_lost(lease.generation, int(row[0]), str(row[1]), where)
        if lease.runbook_key in self._lost:
            raise lease_lost(lease.generation, None, None, where)

    def _begin(self) -> None:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            if is_disk_full(exc, self.path):
                raise disk_full(self.path, "a journal record", exc) from exc
            raise

    def _rollback_quietly(self) -> None:
        # After a failed COMMIT SQLite may already have rolled back; either way the
        # record is gone whole, which is what matters.
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def _maybe_crash(self) -> None:
        # Counted per commit so the crash test can stop the process between any two
        # journal writes, the points where a real crash changes what resume must do.
        if self._crash_at is None:
            return
        self._events_seen += 1
        if self._events_seen >= self._crash_at:
            os.kill(os.getpid(), signal.SIGKILL)

    # -- runs ---------------------------------------------------------------------------
    def create_run(
        self,
        runbook_key: str,
        runbook_name: str,
        plan_hash: str,
        definition: dict[str, Any],
        *,
        mode: str = "run",
        clock: str | None = None,
    ) -> str:
        run_id = new_run_id()
        started = now_iso()
        with self.transaction() as c:
            c.execute(
                "INSERT INTO runs (id, runbook_key, runbook_name, plan_hash, status, mode, "
                "started_at, started_by, definition, clock) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    runbook_key,
                    runbook_name,
                    plan_hash,
                    RunStatus.SNAPSHOTTING.value,
                    mode,
                    started,
                    whoami(),
                    _dumps(definition),
                    clock or started,
                ),
            )
            for pos, step in enumerate(definition["steps"]):
                c.execute(
                    "INSERT INTO steps (run_id, name, position, tier, status) VALUES (?,?,?,?,?)",
                    (run_id, step["name"], pos, step["tier"], StepStatus.PENDING.value),
                )
        return run_id

    def _run(self, row: sqlite3.Row) -> RunRow:
        return RunRow(
            id=row["id"],
            runbook_key=row["runbook_key"],
            runbook_name=row["runbook_name"],
            plan_hash=row["plan_hash"],
            status=RunStatus(row["status"]),
            mode=row["mode"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            started_by=row["started_by"],
            paused_gate=row["paused_gate"],
            clock=row["clock"] or row["started_at"],
        )

    def run(self, run_id: str) -> RunRow | None:
        row = self.conn.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        return self._run(row) if row else None

    def runs(self, runbook_key: str | None = None, *, mode: str | None = "run") -> list[RunRow]:
        sql = "SELECT * FROM runs WHERE 1=1"
        args: list[Any] = []
        if runbook_key is not None:
            sql += " AND runbook_key=?"
            args.append(runbook_key)
        if mode is not None:
            sql += " AND mode=?"
            args.append(mode)
        rows = self.conn.execute(sql + " ORDER BY started_at, rowid", args).fetchall()
        return [self._run(r) for r in rows]

    def latest_run(self, runbook_key: str, *, mode: str = "run") -> RunRow | None:
        runs = self.runs(runbook_key, mode=mode)
        return runs[-1] if runs else None

    def definition(self, run_id: str) -> dict[str, Any]:
        row = self.conn.execute("SELECT definition FROM runs WHERE id=?", (run_id,)).fetchone()
        return dict(json.loads(row[0])) if row else {}

    def set_run_status(
        self, run_id: str, status: RunStatus, *, paused_gate: str | None = None
    ) -> None:
        finished = now_iso() if status in (RunStatus.COMPLETED, RunStatus.ROLLED_BACK) else None
        with self.transaction() as c:
            c.execute(
                "UPDATE runs SET status=?, paused_gate=?, finished_at=COALESCE(?, finished_at) "
                "WHERE id=?",
                (status.value, paused_gate, finished, run_id),
            )

    def set_plan_hash(self, run_id: str, plan_hash: str) -> None:
        with self.transaction() as c:
            c.execute("UPDATE runs SET plan_hash=? WHERE id=?", (plan_hash, run_id))

    # -- steps --------------------------------------------------------------------------
    def steps(self, run_id: str) -> list[StepRow]:
        rows = self.conn.execute(
            "SELECT * FROM steps WHERE run_id=? ORDER BY position", (run_id,)
        ).fetchall()
        return [self._step(r) for r in rows]

    def step(self, run_id: str, name: str) -> StepRow:
        row = self.conn.execute(
            "SELECT * FROM steps WHERE run_id=? AND name=?", (run_id, name)
        ).fetchone()
        if row is None:
            raise ResourceError(f"run {run_id} has no step {name!r} in its journal")
        return self._step(row)

    def _step(self, r: sqlite3.Row) -> StepRow:
        return StepRow(
            name=r["name"],
            position=r["position"],
            tier=r["tier"],
            status=StepStatus(r["status"]),
            plan=json.loads(r["plan"]) if r["plan"] else None,
            state=json.loads(r["state"]),
            items_total=r["items_total"],
            items_done=r["items_done"],
            apply_seconds=r["apply_seconds"],
            rollback_seconds=r["rollback_seconds"],
            pre_fingerprints=json.loads(r["pre_fingerprints"]) if r["pre_fingerprints"] else None,
            error=r["error"],
        )

    _STEP_FIELDS = frozenset(
        {
            "status",
            "plan",
            "state",
            "items_total",
            "items_done",
            "started_at",
            "applied_at",
            "finished_at",
            "apply_seconds",
            "rollback_seconds",
            "pre_fingerprints",
            "error",
        }
    )

    def update_step(self, run_id: str, name: str, **fields: Any) -> None:
        unknown = set(fields) - self._STEP_FIELDS
        if unknown:
            raise ValueError(f"unknown step fields {unknown}")
        sets, args = [], []
        for key, value in fields.items():
            if key in ("plan", "state", "pre_fingerprints") and value is not None:
                value = _dumps(value)
            elif isinstance(value, StepStatus):
                value = value.value
            elif key == "error" and value is not None:
                value = redact(str(value))
            sets.append(f"{key}=?")
            args.append(value)
        with self.transaction() as c:
            c.execute(
                f"UPDATE steps SET {', '.join(sets)} WHERE run_id=? AND name=?",
                (*args, run_id, name),
            )

    def reset_step(self, run_id: str, name: str) -> None:
        """Forget a rolled-back step's work, so the run applies it again from its plan."""
        with self.transaction() as c:
            c.execute("DELETE FROM batches WHERE run_id=? AND step=?", (run_id, name))
            c.execute(
                "UPDATE steps SET status=?, plan=NULL, state='{}', items_total=NULL, "
                "items_done=0, pre_fingerprints=NULL, error=NULL, finished_at=NULL "
                "WHERE run_id=? AND name=?",
                (StepStatus.PENDING.value, run_id, name),
            )

    def copy_to(self, state_dir: Path) -> Journal:
        """A consistent copy of this journal in another state directory (to rehearse on)."""
        state_dir.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(str(state_dir / "journal.sqlite"))) as dst:
            self.conn.backup(dst)
        copy = Journal(state_dir)
        copy._crash_at = None  # the crash test counts the real journal's commits only
        return copy

    # -- batches ------------------------------------------------------------------------
    def add_batches(
        self, run_id: str, step: str, batches: list[tuple[int, int, list[Any]]]
    ) -> None:
        """Freeze a step's work list: (batch number, stage, item keys) for every batch."""
        with self.transaction() as c:
            c.executemany(
                "INSERT INTO batches (run_id, step, batch, stage, items, size, status) "
                "VALUES (?,?,?,?,?,?, 'pending')",
                [(run_id, step, b, s, json.dumps(items), len(items)) for b, s, items in batches],
            )
            c.execute(
                "UPDATE steps SET items_total=? WHERE run_id=? AND name=?",
                (sum(len(i) for _, _, i in batches), run_id, step),
            )

    def batches(self, run_id: str, step: str) -> list[tuple[int, int, list[Any], str]]:
        rows = self.conn.execute(
            "SELECT batch, stage, items, status FROM batches WHERE run_id=? AND step=? "
            "ORDER BY batch",
            (run_id, step),
        ).fetchall()
        return [(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]

    def has_batches(self, run_id: str, step: str) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM batches WHERE run_id=? AND step=? LIMIT 1", (run_id, step)
        ).fetchone()
        return row is not None

    def batch_done(self, run_id: str, step: str, batch: int, changed: int) -> None:
        # items_done grows by the batch's size when the batch turns done. Summing the sizes
        # of all the step's batches here instead made a run quadratic in its batches, each
        # sum reading past every batch's JSON item list.
        where = "WHERE run_id=? AND step=? AND batch=?"
        with self.transaction() as c:
            turns = c.execute(
                f"SELECT size FROM batches {where} AND status != 'done'", (run_id, step, batch)
            ).fetchone()
            c.execute(
                f"UPDATE batches SET status='done', changed=?, done_at=? {where}",
                (changed, now_iso(), run_id, step, batch),
            )
            if turns is not None:
                c.execute(
                    "UPDATE steps SET items_done = items_done + ? WHERE run_id=? AND name=?",
                    (turns[0], run_id, step),
                )

    # -- checks, baselines, approvals -----------------------------------------------------
    def record_check(self, run_id: str, step: str, gate: str, result: dict[str, Any]) -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT INTO checks (run_id, step, gate, name, outcome, message, evidence, at) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    step,
                    gate,
                    result["name"],
                    result["outcome"],
                    redact(result.get("message", "")),
                    _dumps(result.get("evidence", {})),
                    now_iso(),
                ),
            )

    def checks(self, run_id: str, gate: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM checks WHERE run_id=?"
        args: list[Any] = [run_id]
        if gate is not None:
            sql += " AND gate=?"
            args.append(gate)
        rows = self.conn.execute(sql + " ORDER BY id", args).fetchall()
        return [
            {
                "step": r["step"],
                "gate": r["gate"],
                "name": r["name"],
                "outcome": r["outcome"],
                "message": r["message"],
                "evidence": json.loads(r["evidence"]),
                "at": r["at"],
            }
            for r in rows
        ]

    def set_baseline(self, run_id: str, key: str, value: Any) -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO baselines (run_id, check_key, value) VALUES (?,?,?)",
                (run_id, key, json.dumps(value, default=str)),
            )

    def baselines(self, run_id: str) -> dict[str, Any]:
        rows = self.conn.execute(
            "SELECT check_key, value FROM baselines WHERE run_id=?", (run_id,)
        ).fetchall()
        return {r[0]: json.loads(r[1]) for r in rows}

    def approve(
        self,
        run_id: str,
        gate: str,
        decision: str,
        who: str,
        plan_hash: str,
        comment: str = "",
        *,
        automatic: bool = False,
    ) -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT INTO approvals (run_id, gate, decision, who, at, plan_hash, comment, "
                "automatic) VALUES (?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    gate,
                    decision,
                    who,
                    now_iso(),
                    plan_hash,
                    redact(comment),
                    int(automatic),
                ),
            )

    def approvals(self, run_id: str) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT * FROM approvals WHERE run_id=? ORDER BY id", (run_id,)
        ).fetchall()
        return [dict(r) for r in rows]

    def decision(self, run_id: str, gate: str, plan_hash: str) -> dict[str, Any] | None:
        """The latest answer to a gate, if it was given for this exact plan."""
        row = self.conn.execute(
            "SELECT * FROM approvals WHERE run_id=? AND gate=? ORDER BY id DESC LIMIT 1",
            (run_id, gate),
        ).fetchone()
        if row is None or row["plan_hash"] != plan_hash:
            return None
        return dict(row)

    def gate_passed(self, run_id: str, gate: str, outcome: str = "passed") -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO gates (run_id, gate, outcome, at) VALUES (?,?,?,?)",
                (run_id, gate, outcome, now_iso()),
            )

    def passed_gates(self, run_id: str) -> set[str]:
        rows = self.conn.execute(
            "SELECT gate FROM gates WHERE run_id=? AND outcome='passed'", (run_id,)
        ).fetchall()
        return {r[0] for r in rows}

    def forget_gates(self, run_id: str, step: str) -> None:
        with self.transaction() as c:
            c.execute("DELETE FROM gates WHERE run_id=? AND gate LIKE ?", (run_id, f"{step}/%"))

    # -- backups, rejects, events ---------------------------------------------------------
    def record_backup(self, run_id: str, backup: Any, evidence: dict[str, Any]) -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO backups (run_id, resource, kind, path, sha256, size, "
                "fingerprint, meta, taken_at, verified_at, evidence, host) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    backup.resource,
                    backup.kind,
                    str(backup.path) if backup.path else None,
                    backup.sha256,
                    backup.size,
                    json.dumps(backup.fingerprint.to_json()),
                    _dumps(backup.meta),
                    now_iso(),
                    now_iso(),
                    _dumps(evidence),
                    socket.gethostname(),
                ),
            )

    def backups(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """Backup rows; ``host`` is where each was taken (None: recorded before hosts were)."""
        sql = "SELECT * FROM backups"
        args: tuple[Any, ...] = ()
        if run_id is not None:
            sql += " WHERE run_id=?"
            args = (run_id,)
        rows = self.conn.execute(sql + " ORDER BY taken_at, resource", args).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["fingerprint"] = json.loads(d["fingerprint"])
            d["meta"] = json.loads(d["meta"])
            d["evidence"] = json.loads(d["evidence"]) if d["evidence"] else {}
            out.append(d)
        return out

    def add_rejects(self, run_id: str, step: str, rejects: list[Any]) -> None:
        if not rejects:
            return
        with self.transaction() as c:
            c.executemany(
                "INSERT OR IGNORE INTO rejects (run_id, step, source, key, reason) "
                "VALUES (?,?,?,?,?)",
                [
                    (run_id, step, redact(r.source), redact(r.key), redact(r.reason))
                    for r in rejects
                ],
            )

    def rejects(self, run_id: str, step: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT step, source, key, reason FROM rejects WHERE run_id=?"
        args: list[Any] = [run_id]
        if step is not None:
            sql += " AND step=?"
            args.append(step)
        return [dict(r) for r in self.conn.execute(sql + " ORDER BY id", args)]

    def event(
        self,
        run_id: str | None,
        kind: str,
        message: str,
        *,
        step: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT INTO events (run_id, at, kind, step, message, data) VALUES (?,?,?,?,?,?)",
                (run_id, now_iso(), kind, step, redact(message), _dumps(data or {})),
            )

    def events(self, run_id: str) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT * FROM events WHERE run_id=? ORDER BY id", (run_id,)
        ).fetchall()
        return [dict(r) | {"data": json.loads(r["data"])} for r in rows]

    # -- the lease ----------------------------------------------------------------------
    def acquire_lease(
        self,
        runbook_key: str,
        *,
        ttl: float = 60.0,
        take_over: bool = False,
        run_id: str | None = None,
    ) -> Lease:
        """Take the runbook's lease, or raise :class:`LeaseHeld` naming the holder.

        A lease whose holder is a dead process on this host is reclaimed (that is a crash,
        and resuming after a crash must just work). A lease that merely stopped beating
        (another host, or a live but hung process) is stale and needs ``take_over``.
        """
        me = Lease(runbook_key, secrets.token_hex(8), whoami(), socket.gethostname(), os.getpid())
        now = time.time()
        # Not fenced: taking a lease is how a process gets a new generation.
        with self.transaction(fenced=False) as c:
            row = c.execute("SELECT * FROM leases WHERE runbook_key=?", (runbook_key,)).fetchone()
            if row is not None:
                holder = f"{row['owner']}@{row['host']} pid {row['pid']} (run {row['run_id']})"
                same_host = row["host"] == me.host
                dead = same_host and not _pid_alive(int(row["pid"]))
                stale = row["expires_at"] < now
                if dead:
                    pass  # crashed holder: reclaim
                elif not stale:
                    raise LeaseHeld(
                        f"another run holds the lease on this runbook: {holder}, "
                        f"last heartbeat {now - row['heartbeat_at']:.0f}s ago",
                        hint="wait for it to finish, or check `handrail status`",
                    )
                elif not take_over:
                    raise LeaseHeld(
                        f"the lease on this runbook is held by {holder} but is stale "
                        f"(no heartbeat for {now - row['heartbeat_at']:.0f}s)",
                        hint="make sure that run is really gone, then pass --take-over",
                    )
            me = replace(me, generation=self._next_generation(c, me))
            c.execute(
                "INSERT OR REPLACE INTO leases (runbook_key, run_id, owner, host, pid, token, "
                "acquired_at, heartbeat_at, expires_at, generation) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    runbook_key,
                    run_id,
                    me.owner,
                    me.host,
                    me.pid,
                    me.token,
                    now_iso(),
                    now,
                    now + ttl,
                    me.generation,
                ),
            )
            if row is not None:
                c.execute(
                    "INSERT INTO events (run_id, at, kind, step, message, data) "
                    "VALUES (?,?,?,?,?,?)",
                    (
                        run_id,
                        now_iso(),
                        "lease",
                        None,
                        f"lease taken from {row['owner']}@{row['host']} pid {row['pid']}",
                        _dumps(
                            {
                                "previous_run": row["run_id"],
                                "take_over": take_over,
                                "generation": me.generation,
                            }
                        ),
                    ),
                )
        self._held[runbook_key] = me
        self._lost.discard(runbook_key)
        return me

    @staticmethod
    def _next_generation(c: sqlite3.Connection, me: Lease) -> int:
        """Hand out the runbook's next lease generation (every acquisition gets one)."""
        c.execute(
            "INSERT INTO fences (runbook_key, generation, holder, acquired_at) "
            "VALUES (?, 1, ?, ?) ON CONFLICT (runbook_key) DO UPDATE SET "
            "generation = generation + 1, holder = excluded.holder, "
            "acquired_at = excluded.acquired_at",
            (me.runbook_key, me.holder, now_iso()),
        )
        row = c.execute(
            "SELECT generation FROM fences WHERE runbook_key=?", (me.runbook_key,)
        ).fetchone()
        return int(row[0])

    def fence(self, lease: Lease) -> Fence:
        """The fence targets store and check for ``lease`` (see :mod:`handrail.engine.fencing`)."""
        return Fence(
            scope=f"{self.path.resolve()}#{lease.runbook_key}",
            generation=lease.generation,
            holder=lease.holder,
            verify=lambda: self.check_lease(lease),
        )

    def check_lease(self, lease: Lease, where: str = "the journal") -> None:
        """Raise :class:`LeaseLost` when a newer generation replaced ``lease``."""
        with self._lock:
            self._verify(lease, where)

    def lease_gone(self, lease: Lease) -> None:
        """A heartbeat found the lease row taken: the next write stops (no re-taking)."""
        self._lost.add(lease.runbook_key)

    def lease_run(self, lease: Lease, run_id: str) -> None:
        with self.transaction() as c:
            c.execute(
                "UPDATE leases SET run_id=? WHERE runbook_key=? AND token=?",
                (run_id, lease.runbook_key, lease.token),
            )

    def heartbeat(self, lease: Lease, ttl: float = 60.0) -> bool:
        now = time.time()
        with self.transaction() as c:
            cur = c.execute(
                "UPDATE leases SET heartbeat_at=?, expires_at=? WHERE runbook_key=? AND token=?",
                (now, now + ttl, lease.runbook_key, lease.token),
            )
        if cur.rowcount != 1:
            self.lease_gone(lease)
        return cur.rowcount == 1

    def release_lease(self, lease: Lease) -> None:
        # Not fenced: deleting by our own token never touches a newer holder's row, and a
        # process that lost its lease must still be able to let go of it on its way out.
        if self._held.get(lease.runbook_key) == lease:
            del self._held[lease.runbook_key]
            self._lost.discard(lease.runbook_key)
        with self.transaction(fenced=False) as c:
            c.execute(
                "DELETE FROM leases WHERE runbook_key=? AND token=?",
                (lease.runbook_key, lease.token),
            )

    def lease(self, runbook_key: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT * FROM leases WHERE runbook_key=?", (runbook_key,)
        ).fetchone()
        return dict(row) if row else None


def _upgrade(conn: sqlite3.Connection) -> None:
    """Bring a journal written by an older handrail up to this schema, in place.

    Tables are added by ``SCHEMA`` itself (``CREATE TABLE IF NOT EXISTS``); columns are
    added here, under a write lock so two processes opening it at once do not both try.
    """
    wanted = [
        ("leases", "generation", "INTEGER NOT NULL DEFAULT 0"),
        ("backups", "host", "TEXT"),
    ]

    def missing() -> list[tuple[str, str, str]]:
        out = []
        for table, col, decl in wanted:
            have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
            if col not in have:
                out.append((table, col, decl))
        return out

    if not missing():
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table, col, decl in missing():
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {col} {decl}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child (killed but not yet reaped) still answers signal 0.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True


class Heartbeat:
    """Keeps a lease alive from a background thread while a run works."""

    def __init__(self, journal: Journal, lease: Lease, ttl: float = 60.0) -> None:
        self.journal, self.lease, self.ttl = journal, lease, ttl
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="handrail-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        # Its own connection: beats must not interleave with the run's transactions.
        conn = sqlite3.connect(str(self.journal.path), timeout=30, isolation_level=None)
        try:
            while not self._stop.wait(self.ttl / 3):
                now = time.time()
                try:
                    cur = conn.execute(
                        "UPDATE leases SET heartbeat_at=?, expires_at=? "
                        "WHERE runbook_key=? AND token=?",
                        (now, now + self.ttl, self.lease.runbook_key, self.lease.token),
                    )
                except sqlite3.Error:
                    continue  # the next beat tries again; expiry is generous
                if cur.rowcount != 1:
                    # Someone took the lease over while this process did not beat (stopped,
                    # hung): never take it back; the run stops at its next write.
                    self.journal.lease_gone(self.lease)
                    return
        finally:
            conn.close()
