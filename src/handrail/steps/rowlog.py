"""Row-level changes on SQLite with an undo log written in the same transaction.

Every row a step inserts or updates gets an undo record in ``_handrail_undo`` inside the
target database, committed together with the change and the batch's ledger row. A
rollback replays the records newest first and restores exactly the rows this run changed;
a row whose current value is not what the run wrote (someone changed it afterwards) is a
conflict: reported and left alone unless forced.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..resources.sqlite import LEDGER_PREFIX, drop_empty_ledger_tables, quote_ident

UNDO = f"{LEDGER_PREFIX}undo"
UNDO_DDL = (
    f"CREATE TABLE IF NOT EXISTS {UNDO} ("
    "id INTEGER PRIMARY KEY, run_id TEXT NOT NULL, step TEXT NOT NULL, batch INTEGER NOT NULL, "
    "tbl TEXT NOT NULL, key TEXT NOT NULL, before TEXT, after TEXT)"
)
UNDO_INDEX = f"CREATE INDEX IF NOT EXISTS {UNDO}_by_step ON {UNDO}(run_id, step)"
_SEQ = "sqlite_sequence"


def encode(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$b": base64.b64encode(value).decode()}
    return value


def decode(value: Any) -> Any:
    if isinstance(value, dict) and "$b" in value:
        return base64.b64decode(value["$b"])
    return value


def row_json(row: dict[str, Any] | None) -> str | None:
    if row is None:
        return None
    return json.dumps({k: encode(v) for k, v in row.items()}, sort_keys=True)


def _row_from_json(text: str) -> dict[str, Any]:
    return {k: decode(v) for k, v in json.loads(text).items()}


@dataclass
class UpsertCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0

    @property
    def changed(self) -> int:
        return self.inserted + self.updated


@dataclass
class UndoReport:
    restored: int = 0
    conflicts: list[str] = field(default_factory=list)


def _fetch(
    conn: sqlite3.Connection, table: str, key_cols: Sequence[str], keys: list[tuple[Any, ...]]
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Current rows for ``keys``, fetched in chunks that stay under SQLite's variable limit."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    if not keys:
        return out
    cur = conn.cursor()
    cur.row_factory = sqlite3.Row
    if len(key_cols) == 1:
        col = quote_ident(key_cols[0])
        for lo in range(0, len(keys), 900):
            chunk = [k[0] for k in keys[lo : lo + 900]]
            marks = ",".join("?" * len(chunk))
            for row in cur.execute(
                f"SELECT * FROM {quote_ident(table)} WHERE {col} IN ({marks})", chunk
            ):
                d = dict(row)
                out[(d[key_cols[0]],)] = d
        return out
    per = max(1, 900 // len(key_cols))
    cond = " AND ".join(f"{quote_ident(c)}=?" for c in key_cols)
    for lo in range(0, len(keys), per):
        chunk = keys[lo : lo + per]
        where = " OR ".join(f"({cond})" for _ in chunk)
        args = [v for k in chunk for v in k]
        for row in cur.execute(f"SELECT * FROM {quote_ident(table)} WHERE {where}", args):
            d = dict(row)
            out[tuple(d[c] for c in key_cols)] = d
    return out


def _remember_sequence(conn: sqlite3.Connection, table: str, ctx: tuple[str, str, int]) -> None:
    """Record the AUTOINCREMENT counter before this step first touches the table."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name=?", (_SEQ,)).fetchone() is None:
        return
    run_id, step, batch = ctx
    seen = conn.execute(
        f"SELECT 1 FROM {UNDO} WHERE run_id=? AND step=? AND tbl=? AND key=?",
        (run_id, step, _SEQ, json.dumps([table])),
    ).fetchone()
    if seen:
        return
    row = conn.execute(f"SELECT name, seq FROM {_SEQ} WHERE name=?", (table,)).fetchone()
    before = row_json({"name": row[0], "seq": row[1]}) if row else None
    conn.execute(
        f"INSERT INTO {UNDO} (run_id, step, batch, tbl, key, before, after) "
        "VALUES (?,?,?,?,?,?,NULL)",
        (run_id, step, batch, _SEQ, json.dumps([table]), before),
    )


Key = tuple[Any, ...]


@dataclass
class Upsert:
    """What an upsert of some rows does, decided by :func:`decide` before anything is
    written: the rows to insert and to update, how many are unchanged, and the prior row
    of each key it changes (None: inserted)."""

    inserts: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    unchanged: int = 0
    before: dict[Key, dict[str, Any] | None] = field(default_factory=dict)

    @property
    def counts(self) -> UpsertCounts:
        return UpsertCounts(len(self.inserts), len(self.updates), self.unchanged)


def merge(key_cols: Sequence[str], rows: list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    """Rows by key, those sharing a key merged in order (later values win): what applying
    them one after the other leaves."""
    merged: dict[Key, dict[str, Any]] = {}
    for row in rows:
        key = tuple(row[c] for c in key_cols)
        merged[key] = {**merged[key], **row} if key in merged else row
    return merged


def holds(conn: sqlite3.Connection, table: str, row: dict[str, Any]) -> bool:
    """Whether ``table`` holds ``row`` as SQLite compares it: ``IS`` against a bound value
    applies the column's affinity, as the write did (an int written to a TEXT column is
    held as its text)."""
    cond = " AND ".join(f"{quote_ident(c)} IS ?" for c in row)
    found = conn.execute(
        f"SELECT 1 FROM {quote_ident(table)} WHERE {cond} LIMIT 1", list(row.values())
    )
    return found.fetchone() is not None


def decide(
    conn: sqlite3.Connection | None,
    table: str,
    key_cols: Sequence[str],
    rows: list[dict[str, Any]],
) -> Upsert:
    """Which of ``rows`` an upsert inserts, updates or leaves alone; writes nothing.

    The one decision of an import: :func:`upsert` writes exactly what it returns and a dry
    run counts it, so the plan cannot drift from the run. Rows with the same key are
    merged in order first (later values win, as if applied one after the other), so each
    key is counted once and written once. A row is unchanged when every value it carries
    equals the table's in value and in type (1, 1.0 and True are equal in Python, not in
    SQLite). ``conn`` None: the table does not exist yet (an earlier step creates it), so
    every key is new.
    """
    merged = merge(key_cols, rows)
    existing = _fetch(conn, table, key_cols, list(merged)) if conn is not None else {}
    out = Upsert()
    for key, row in merged.items():
        old = existing.get(key)
        if old is None:
            out.inserts.append(row)
        elif all(old.get(c) == v and type(old.get(c)) is type(v) for c, v in row.items()):
            out.unchanged += 1
            continue
        else:
            out.updates.append(row)
        out.before[key] = old
    return out


def upsert(
    conn: sqlite3.Connection,
    table: str,
    key_cols: Sequence[str],
    rows: list[dict[str, Any]],
    *,
    run_id: str,
    step: str,
    batch: int,
) -> UpsertCounts:
    """Insert or update ``rows`` by key inside the caller's transaction, logging undo:
    exactly what :func:`decide` says."""
    conn.execute(UNDO_DDL)
    conn.execute(UNDO_INDEX)
    if not rows:
        return UpsertCounts()
    _remember_sequence(conn, table, (run_id, step, batch))
    todo = decide(conn, table, key_cols, rows)
    write(conn, table, key_cols, todo, (run_id, step, batch))
    return todo.counts


def write(
    conn: sqlite3.Connection,
    table: str,
    key_cols: Sequence[str],
    todo: Upsert,
    ctx: tuple[str, str, int],
) -> None:
    """Write what :func:`decide` decided, and an undo record per changed key."""
    run_id, step, batch = ctx
    qt = quote_ident(table)
    for group in _by_columns(todo.inserts):
        cols = list(group[0])
        conn.executemany(
            f"INSERT INTO {qt} ({', '.join(quote_ident(c) for c in cols)}) "
            f"VALUES ({', '.join('?' for _ in cols)})",
            [[r[c] for c in cols] for r in group],
        )
    where = " AND ".join(f"{quote_ident(c)}=?" for c in key_cols)
    for group in _by_columns(todo.updates):
        sets = [c for c in group[0] if c not in key_cols]
        conn.executemany(
            f"UPDATE {qt} SET {', '.join(f'{quote_ident(c)}=?' for c in sets)} WHERE {where}",
            [[r[c] for c in sets] + [r[c] for c in key_cols] for r in group],
        )
    # What the run wrote, as the database stores it (defaults and affinity applied).
    after = _fetch(conn, table, key_cols, list(todo.before))
    conn.executemany(
        f"INSERT INTO {UNDO} (run_id, step, batch, tbl, key, before, after) VALUES (?,?,?,?,?,?,?)",
        [
            (
                run_id,
                step,
                batch,
                table,
                key_json(key_cols, key),
                row_json(before),
                row_json(after.get(key)),
            )
            for key, before in todo.before.items()
        ],
    )


def _by_columns(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Rows grouped by their column set, so each group is one executemany."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r), []).append(r)
    return list(groups.values())


def key_json(key_cols: Sequence[str], key: Sequence[Any]) -> str:
    """An undo record's key: which columns identify the row, and their values."""
    return json.dumps({"cols": list(key_cols), "vals": [encode(v) for v in key]})


def json_key(text: str) -> tuple[list[str], tuple[Any, ...]]:
    data = json.loads(text)
    return list(data["cols"]), tuple(decode(v) for v in data["vals"])


def blockers(conn: sqlite3.Connection, run_id: str, step: str) -> list[str]:
    """Rows ``step`` inserted that someone changed since: undoing the insert would delete
    their values, so these stop the rollback (``--force`` included)."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name=?", (UNDO,)).fetchone() is None:
        return []
    out: list[str] = []
    for table, key_text, after in conn.execute(
        f"SELECT tbl, key, after FROM {UNDO} WHERE run_id=? AND step=? AND before IS NULL "
        f"AND tbl != ? ORDER BY id",
        (run_id, step, _SEQ),
    ).fetchall():
        key_cols, key = json_key(key_text)
        current = _fetch(conn, table, key_cols, [key]).get(key)
        if current is not None and row_json(current) != after:
            out.append(
                f"{table} {dict(zip(key_cols, key, strict=True))}: inserted by this run and "
                "changed since; deleting it would remove what was written since"
            )
    return out


def undo(conn: sqlite3.Connection, run_id: str, step: str, *, force: bool = False) -> UndoReport:
    """Restore every row ``step`` changed in ``run_id``, newest change first.

    Runs inside the caller's transaction. Conflicting rows are skipped (or, for rows this
    run updated, overwritten with ``force``); their undo records are kept so a forced
    rollback can follow. A row this run inserted and someone changed since is never
    deleted, forced or not (see :func:`blockers`); one someone deleted is simply gone.
    """
    report = UndoReport()
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name=?", (UNDO,)).fetchone() is None:
        return report
    records = conn.execute(
        f"SELECT id, tbl, key, before, after FROM {UNDO} "
        "WHERE run_id=? AND step=? ORDER BY id DESC",
        (run_id, step),
    ).fetchall()
    keep: list[int] = []
    for rec_id, table, key_text, before, after in records:
        if table == _SEQ:
            _restore_sequence(conn, json.loads(key_text)[0], before)
            continue
        key_cols, key = json_key(key_text)
        current = _fetch(conn, table, key_cols, [key]).get(key)
        if before is None and current is None:
            report.restored += 1  # inserted by the run, deleted since: nothing to undo
            continue
        inserted_then_changed = before is None and row_json(current) != after
        if row_json(current) != after and (not force or inserted_then_changed):
            report.conflicts.append(
                f"{table} {dict(zip(key_cols, key, strict=True))}: changed after the run wrote it"
            )
            keep.append(rec_id)
            continue
        where = " AND ".join(f"{quote_ident(c)}=?" for c in key_cols)
        if before is None:
            conn.execute(f"DELETE FROM {quote_ident(table)} WHERE {where}", list(key))
        else:
            old = _row_from_json(before)
            cols = list(old)
            conn.execute(f"DELETE FROM {quote_ident(table)} WHERE {where}", list(key))
            conn.execute(
                f"INSERT INTO {quote_ident(table)} ({', '.join(quote_ident(c) for c in cols)}) "
                f"VALUES ({', '.join('?' for _ in cols)})",
                [old[c] for c in cols],
            )
        report.restored += 1
    kept = f" AND id NOT IN ({', '.join(str(i) for i in keep)})" if keep else ""
    conn.execute(f"DELETE FROM {UNDO} WHERE run_id=? AND step=?{kept}", (run_id, step))
    drop_empty_ledger_tables(conn)
    return report


def _restore_sequence(conn: sqlite3.Connection, table: str, before: str | None) -> None:
    max_id = conn.execute(f"SELECT max(rowid) FROM {quote_ident(table)}").fetchone()[0] or 0
    old = _row_from_json(before)["seq"] if before else None
    # Never lower the counter below an id someone else has used meanwhile.
    if old is None and max_id == 0:
        conn.execute(f"DELETE FROM {_SEQ} WHERE name=?", (table,))
    else:
        seq = max(old or 0, max_id)
        conn.execute(f"UPDATE {_SEQ} SET seq=? WHERE name=?", (seq, table))
