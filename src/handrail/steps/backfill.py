"""Backfill: compute new values for a table's rows in Python, write them in key-ordered
batches, and keep an undo log so rollback restores exactly those rows.

The undo log is a table inside the target database, one per step, whose columns have no
declared type: a value keeps the exact type it was bound with. For each changed row it
holds the key, the prior values of the written columns (read from the table itself, so
writing them back is exact) and the values the step wrote. Rollback runs in SQL:

- a row whose written columns still hold what the step wrote (compared with ``IS``, so the
  column's affinity applies exactly as it did on write) gets its prior values back;
- any other row was changed by someone after the step wrote it: a conflict, reported and
  left alone unless forced.

Each batch's change, its undo rows and its ledger row commit in one transaction. The undo
rows are written first and the table takes its new values from them, so no value reaches
the table without its record.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from operator import itemgetter
from typing import Any

from ..engine.context import StepContext
from ..errors import RollbackConflict, RunbookError
from ..inline import code, names
from ..model import Plan
from ..resources.base import Resource
from ..resources.sqlite import (
    LEDGER_PREFIX,
    SQLite,
    drop_empty_ledger_tables,
    quote_ident,
    transaction,
)
from ..runbook import BATCH_WORST_CASE, describe_callable
from .sql import SQLiteStep

Compute = Callable[[dict[str, Any]], dict[str, Any] | None]


def affinity_of(declared: str) -> str:
    """SQLite's column affinity for a declared type (the rules of datatype3.html 3.1)."""
    t = declared.upper()
    if "INT" in t:
        return "INTEGER"
    if "CHAR" in t or "CLOB" in t or "TEXT" in t:
        return "TEXT"
    if "BLOB" in t or not t:
        return "BLOB"
    if "REAL" in t or "FLOA" in t or "DOUB" in t:
        return "REAL"
    return "NUMERIC"


def stored_as_bound(affinity: str, value: Any) -> bool:
    """Whether SQLite stores ``value`` unchanged in a column of this affinity."""
    if value is None or isinstance(value, bytes) or affinity == "BLOB":
        return True
    if isinstance(value, str):
        return affinity == "TEXT"
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return affinity in ("INTEGER", "NUMERIC")
    if isinstance(value, float):
        return affinity == "REAL"
    return False


# The exact types SQLite stores unchanged under each affinity: a whole column of a batch is
# checked with one set of its values' types; anything else falls back to stored_as_bound.
_BOUND_TYPES: dict[str, frozenset[type]] = {
    "TEXT": frozenset({type(None), bytes, str}),
    "INTEGER": frozenset({type(None), bytes, int}),
    "NUMERIC": frozenset({type(None), bytes, int}),
    "REAL": frozenset({type(None), bytes, float}),
}


def all_stored_as_bound(affinity: str, values: Iterable[Any]) -> bool:
    """Whether SQLite stores every one of ``values`` unchanged in a column of this affinity."""
    if affinity == "BLOB":
        return True
    values = list(values)
    if set(map(type, values)) <= _BOUND_TYPES[affinity]:
        return True
    return all(stored_as_bound(affinity, v) for v in values)


class BackfillFields:
    """What every backfill (SQLite or PostgreSQL) is made of; set by :func:`configure`."""

    name: str
    table: str
    key: str
    columns: list[str]
    compute: Compute
    where: str | None
    where_params: tuple[Any, ...]
    read: list[str] | None
    _declared: frozenset[str]


def backfill_changes(step: BackfillFields) -> str:
    """What a backfill changes, in words (SQLite and PostgreSQL alike)."""
    return (
        f"sets {names(step.columns)} in rows of {code(step.table)}, in batches by {code(step.key)}"
    )


def configure(
    step: BackfillFields,
    name: str,
    *,
    table: str,
    key: str,
    columns: Sequence[str],
    compute: Compute,
    where: str | None,
    where_params: Sequence[Any],
    read: Sequence[str] | None,
) -> None:
    """Check and set what every backfill (SQLite or PostgreSQL) is made of."""
    if isinstance(columns, str) or (read is not None and isinstance(read, str)):
        raise RunbookError(
            f"backfill {name!r}: columns and read take a list of names, not the string "
            f"{columns if isinstance(columns, str) else read!r}",
            hint=f"write columns=[{columns!r}]" if isinstance(columns, str) else None,
        )
    if not isinstance(key, str):
        raise RunbookError(f"backfill {name!r}: key is one column name, not {key!r}")
    if not columns:
        raise RunbookError(f"backfill {name!r}: name the columns it writes")
    if key in columns:
        raise RunbookError(f"backfill {name!r}: it cannot write its key column {key!r}")
    step.table, step.key, step.columns = table, key, list(columns)
    step.compute, step.where, step.where_params = compute, where, tuple(where_params)
    step.read = list(read) if read is not None else None
    step._declared = frozenset(step.columns)


def backfill_params(step: BackfillFields, db: Resource) -> dict[str, Any]:
    """A backfill's parameters for the plan hash."""
    return {
        "db": db.name,
        "table": step.table,
        "key": step.key,
        "columns": step.columns,
        "where": step.where,
        "where_params": list(step.where_params),
        "read": step.read,
        "compute": describe_callable(step.compute),
    }


def undeclared(step: BackfillFields, new: dict[str, Any]) -> RunbookError:
    return RunbookError(
        f"backfill {step.name!r}: compute returned columns it does not declare: "
        f"{sorted(set(new) - step._declared)} (declared: {step.columns})"
    )


def batch_changes(
    step: BackfillFields, batch: int, names: Sequence[str], rows: Iterable[Sequence[Any]]
) -> list[tuple[Any, ...]]:
    """The changes ``compute`` makes to ``rows`` (tuples of the columns ``names``), as the
    undo rows ``(batch, key, *before, *after)`` of the rows it changes.

    The one decision of a backfill: :meth:`Backfill.apply_batch` (and PgBackfill's) writes
    exactly these rows, and the dry run (:func:`summarize`) counts and samples them, so the
    plan cannot drift from the run. A row changes when some value ``compute`` returns
    differs from the row's in value or in type (1, 1.0 and True are equal in Python, not
    in SQLite). ``compute`` still gets a dict; the written columns' values travel as
    tuples, taken from the row as read (not from the dict ``compute`` might have changed)
    and compared in C: this loop is most of a backfill's Python time.
    """
    pos = {n: i for i, n in enumerate(names)}
    missing = [c for c in (step.key, *step.columns) if c not in pos]
    if missing:
        raise RunbookError(
            f"backfill {step.name!r}: the rows read from {step.table} have no column "
            f"{', '.join(map(repr, missing))} (they have {list(names)})"
        )
    key_at, at = pos[step.key], [pos[c] for c in step.columns]
    before_of: Callable[[Sequence[Any]], tuple[Any, ...]] = (
        itemgetter(*at) if len(at) > 1 else lambda r: (r[at[0]],)
    )
    compute, columns, declared = step.compute, step.columns, step._declared
    undo: list[tuple[Any, ...]] = []
    for r in rows:
        before = before_of(r)
        new = compute(dict(zip(names, r, strict=True)))
        if not new:
            continue
        if not new.keys() <= declared:
            raise undeclared(step, new)
        after = tuple(map(new.get, columns, before))
        if after == before and tuple(map(type, after)) == tuple(map(type, before)):
            continue
        undo.append((batch, r[key_at], *before, *after))
    return undo


def summarize(step: BackfillFields, names: Sequence[str], rows: Iterable[Sequence[Any]]) -> Plan:
    """A backfill's dry run: how many of ``rows`` (tuples of the columns ``names``) it
    would change, and the values it would write, as :func:`batch_changes` decides for the
    run; nothing is written."""
    total = changes = 0
    values: dict[str, Counter[str]] = {c: Counter() for c in step.columns}
    samples: list[dict[str, Any]] = []
    n, rows = len(step.columns), iter(rows)
    while chunk := list(islice(rows, 1000)):  # a batch's worth at a time: memory stays flat
        total += len(chunk)
        for undo in batch_changes(step, 0, names, chunk):
            changes += 1
            new = {
                c: a
                for c, b, a in zip(step.columns, undo[2 : 2 + n], undo[2 + n :], strict=True)
                if a != b or type(a) is not type(b)
            }
            for c, v in new.items():
                values[c][value_label(v)] += 1
            if len(samples) < 10:
                samples.append({step.key: undo[1], **new})
    return Plan(
        summary=f"set {', '.join(step.columns)} on {changes} of {total} row(s) of {step.table}",
        items=total,
        counts={"rows": total, "change": changes, "unchanged": total - changes},
        samples=samples,
        details={"values": {c: dict(v.most_common(50)) for c, v in values.items()}},
    )


def value_label(value: Any) -> str:
    """A value as the key of the dry run's distribution: the text a JSON object key gets
    (None is "null", 1 is "1"), so the plan reads the same before and after the journal
    stores it, and a column given both NULL and text can be stored at all."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value)
    return str(value)


def deferred(step: BackfillFields, why: str) -> Plan:
    """The dry run of a backfill that depends on what earlier steps create."""
    return Plan(
        summary=f"set {', '.join(step.columns)} on {step.table}: planned when the run reaches "
        f"it (now: {why})",
        details={"deferred": why},
    )


class Backfill(BackfillFields, SQLiteStep):
    """Set ``columns`` of the rows of ``table`` selected by ``where`` to what ``compute``
    returns.

    ``compute(row)`` gets the row (the ``read`` columns, default all) as a dict and returns
    the new values of some of ``columns`` (or None: leave the row alone). It may read other
    state (files, other tables) but must not write. The key is one column (the primary key
    or a unique column); the work list is frozen in key order when the step starts.
    """

    def __init__(
        self,
        name: str,
        db: SQLite,
        *,
        table: str,
        key: str,
        columns: Sequence[str],
        compute: Compute,
        where: str | None = None,
        where_params: Sequence[Any] = (),
        read: Sequence[str] | None = None,
        **kw: Any,
    ) -> None:
        configure(
            self,
            name,
            table=table,
            key=key,
            columns=columns,
            compute=compute,
            where=where,
            where_params=where_params,
            read=read,
        )
        kw.setdefault("batch_size", 1000)
        super().__init__(name, db, **kw)
        self._sql: dict[str, _BatchSQL] = {}

    def undo_table(self, run_id: str) -> str:
        """One undo table per run and step: rows stay narrow, and a finished rollback
        drops it whole instead of deleting a million rows."""
        digest = hashlib.sha256(f"{run_id}\0{self.name}\0{self.table}".encode()).hexdigest()
        return f"{LEDGER_PREFIX}bf_{digest[:16]}"

    def params(self) -> dict[str, Any]:
        return backfill_params(self, self.db)

    def explain_changes(self) -> str:
        return backfill_changes(self)

    def explain_worst_case(self) -> str:
        return BATCH_WORST_CASE

    def explain_rollback(self) -> str:
        return (
            f"puts back the prior values of {code(self.table)} from the step's undo table; "
            "rows changed since are reported and left alone"
        )

    def _select(self) -> str:
        if self.read is None:
            return "*"
        cols = dict.fromkeys([self.key, *self.read, *self.columns])
        return ", ".join(quote_ident(c) for c in cols)

    def _where(self) -> str:
        return f"WHERE {self.where}" if self.where else ""

    # -- lifecycle ----------------------------------------------------------------------
    def validate(self, ctx: StepContext) -> None:
        """The table, its key, the columns written and read exist; ``where`` compiles."""
        from .sql import compile_sql, require_columns

        db = ctx.use(self.db)
        wanted = [self.key, *self.columns, *(self.read or [])]
        with db.connect() as conn:
            require_columns(db, conn, self.table, wanted, f"backfill {self.name!r}")
            compile_sql(
                db,
                conn,
                f"SELECT {self._select()} FROM {quote_ident(self.table)} {self._where()}",
                f"the backfill's where ({self.where})",
                self.where_params,
            )

    def plan(self, ctx: StepContext) -> Plan:
        with ctx.use(self.db).connect() as conn:
            try:
                cur = conn.execute(
                    f"SELECT {self._select()} FROM {quote_ident(self.table)} {self._where()} "
                    f"ORDER BY {quote_ident(self.key)}",
                    self.where_params,
                )
            except sqlite3.OperationalError as exc:
                # A column an earlier step adds: the run plans this step again when it gets
                # there (its plan gates always see the real state right before it).
                return deferred(self, str(exc))
            return summarize(self, [d[0] for d in cur.description], cur)

    def items(self, ctx: StepContext) -> list[Any] | None:
        with ctx.use(self.db).connect() as conn:
            return [
                r[0]
                for r in conn.execute(
                    f"SELECT {quote_ident(self.key)} FROM {quote_ident(self.table)} "
                    f"{self._where()} ORDER BY {quote_ident(self.key)}",
                    self.where_params,
                )
            ]

    def _batch_sql(self, run_id: str) -> _BatchSQL:
        sql = self._sql.get(run_id)
        if sql is None:
            sql = self._sql[run_id] = _BatchSQL(self, run_id)
        return sql

    def apply_batch(self, ctx: StepContext, batch: int, items: list[Any]) -> int:
        sql = self._batch_sql(ctx.run_id)
        with ctx.connection(self.db) as conn, transaction(conn):
            conn.execute(sql.undo_ddl)
            declared = {r[1]: r[2] for r in conn.execute(sql.table_info)}
            affinities = [affinity_of(declared.get(c, "")) for c in self.columns]
            read = conn.cursor()
            read.row_factory = None  # tuples: batch_changes builds compute's dicts
            undo_rows: list[tuple[Any, ...]] = []
            for lo in range(0, len(items), 900):
                chunk = items[lo : lo + 900]
                read.execute(sql.select(len(chunk)), chunk)
                names = [d[0] for d in read.description]
                undo_rows += batch_changes(self, batch, names, read)
            if undo_rows:
                self._write(conn, sql, undo_rows, affinities)
            SQLite.ledger_mark(conn, ctx.run_id, self.name, batch, len(undo_rows))
        return len(undo_rows)

    def _write(
        self,
        conn: sqlite3.Connection,
        sql: _BatchSQL,
        undo_rows: list[tuple[Any, ...]],
        affinities: list[str],
    ) -> None:
        """Write a batch's undo rows, then the table's new values from them: a value reaches
        the table only through its undo record (and is bound once, not twice)."""
        since = conn.execute(sql.last_undo).fetchone()[0]
        conn.executemany(sql.insert_undo, undo_rows)
        conn.execute(sql.update, (since,))
        written = list(zip(*undo_rows, strict=True))[2 + len(self.columns) :]  # the afters
        if not all(
            all_stored_as_bound(affinity, values)
            for affinity, values in zip(affinities, written, strict=True)
        ):
            # The column's affinity changed some value on write (an int into a TEXT column):
            # record what the table now holds, so the rollback's conflict test compares
            # like with like.
            conn.execute(sql.capture, (since,))

    def rollback(self, ctx: StepContext) -> None:
        db = ctx.use(self.db)
        if not db.exists():
            return
        force = bool(ctx.state.get("_force"))
        t, u, key = quote_ident(self.table), self.undo_table(ctx.run_id), quote_ident(self.key)
        same = " AND ".join(f"t.{quote_ident(c)} IS u.a_{i}" for i, c in enumerate(self.columns))
        differs = f"t.{key} IS NULL OR NOT ({same})"
        with db.connect() as conn, transaction(conn):
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE name=?", (u,)).fetchone():
                SQLite.ledger_clear(conn, ctx.run_id, self.name)
                return
            conn.execute(f"CREATE INDEX IF NOT EXISTS {u}_pk ON {u}(pk)")
            conflicts = [
                r[0]
                for r in conn.execute(
                    f"SELECT u.pk FROM {u} u LEFT JOIN {t} t ON t.{key} = u.pk WHERE {differs}"
                )
            ]
            sets = ", ".join(f"{quote_ident(c)} = u.b_{i}" for i, c in enumerate(self.columns))
            guard = "" if force else f" AND {same}"
            conn.execute(f"UPDATE {t} AS t SET {sets} FROM {u} AS u WHERE t.{key} = u.pk{guard}")
            if conflicts and not force:
                # Keep only the conflicting rows' records, for a forced rollback later.
                conn.execute(
                    f"DELETE FROM {u} WHERE pk NOT IN (SELECT u.pk FROM {u} u "
                    f"LEFT JOIN {t} t ON t.{key} = u.pk WHERE {differs})"
                )
            else:
                conn.execute(f"DROP TABLE {u}")
                SQLite.ledger_clear(conn, ctx.run_id, self.name)
            drop_empty_ledger_tables(conn)
        if conflicts and not force:
            raise RollbackConflict(
                f"{len(conflicts)} row(s) of {self.table} were changed after this run wrote "
                f"them and were left alone: {self.key} in {conflicts[:5]}",
                hint="inspect them; `handrail rollback RUN --force` overwrites them",
                items=[f"{self.table} {self.key}={k!r}" for k in conflicts],
            )


class _BatchSQL:
    """A backfill's per-batch statements, built once per run (and so prepared once: the
    connection's statement cache keys on the text)."""

    def __init__(self, step: Backfill, run_id: str) -> None:
        t, key, n = quote_ident(step.table), quote_ident(step.key), len(step.columns)
        undo = step.undo_table(run_id)
        cols = ", ".join([f"b_{i}" for i in range(n)] + [f"a_{i}" for i in range(n)])
        # No declared types: each value keeps exactly the type it was bound with.
        self.undo_ddl = f"CREATE TABLE IF NOT EXISTS {undo} (batch, pk, {cols})"
        self.table_info = f"PRAGMA table_info({t})"
        self._select = f"SELECT {step._select()} FROM {t} WHERE {key} IN "
        self._selects: dict[int, str] = {}
        self.last_undo = f"SELECT coalesce(max(rowid), 0) FROM {undo}"
        self.insert_undo = f"INSERT INTO {undo} VALUES ({','.join('?' * (2 + 2 * n))})"
        # Both joins compare the key as stored with the key as stored (read from the table,
        # kept untyped in the undo table), as the rollback does.
        put = ", ".join(f"{quote_ident(c)} = u.a_{i}" for i, c in enumerate(step.columns))
        self.update = (
            f"UPDATE {t} AS t SET {put} FROM {undo} AS u WHERE u.rowid > ? AND t.{key} = u.pk"
        )
        got = ", ".join(f"a_{i} = t.{quote_ident(c)}" for i, c in enumerate(step.columns))
        self.capture = (
            f"UPDATE {undo} AS u SET {got} FROM {t} AS t WHERE u.rowid > ? AND t.{key} = u.pk"
        )

    def select(self, n: int) -> str:
        """The batch's rows whose key is one of ``n`` parameters."""
        sql = self._selects.get(n)
        if sql is None:
            sql = self._selects[n] = f"{self._select}({','.join('?' * n)})"
        return sql
