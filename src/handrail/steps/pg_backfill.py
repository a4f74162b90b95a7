"""Backfill on PostgreSQL: the same contract as :class:`handrail.steps.backfill.Backfill`,
with the undo log in handrail's own schema (``_handrail``, never fingerprinted or dumped).

The undo table copies the target's column types, so prior values go back exactly; the
conflict test is ``IS NOT DISTINCT FROM``. A batch's rows are locked (``FOR UPDATE``),
changed, logged and recorded in the ledger in one transaction with ``lock_timeout`` set,
so a busy application row makes the batch fail fast instead of queueing behind it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import psycopg

from ..engine.context import StepContext
from ..errors import RollbackConflict
from ..inline import code
from ..model import Plan
from ..resources.postgres import HANDRAIL_SCHEMA, Postgres, quote_ident, table_columns
from ..runbook import BATCH_WORST_CASE, Step
from .backfill import (
    BackfillFields,
    Compute,
    backfill_changes,
    backfill_params,
    batch_changes,
    configure,
    deferred,
    summarize,
)


class PgBackfill(BackfillFields, Step):
    """Set ``columns`` of ``table``'s rows selected by ``where`` to what ``compute`` returns.

    ``table`` may be schema-qualified (``"public.video"``). See :class:`Backfill`.
    """

    exactly_once = True

    def __init__(
        self,
        name: str,
        db: Postgres,
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
        self.db = db
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
        kw.setdefault("writes", (db,))
        kw.setdefault("batch_size", 1000)
        super().__init__(name, **kw)

    def params(self) -> dict[str, Any]:
        return backfill_params(self, self.db)

    def explain_changes(self) -> str:
        return backfill_changes(self)

    def explain_worst_case(self) -> str:
        return BATCH_WORST_CASE

    def explain_rollback(self) -> str:
        return (
            f"puts back the prior values of {code(self.table)} from the step's undo "
            "log in the database; rows changed since are reported and left alone"
        )

    def _t(self) -> str:
        return ".".join(quote_ident(p) for p in self.table.split(".", 1))

    def _select(self) -> str:
        if self.read is None:
            return "*"
        cols = dict.fromkeys([self.key, *self.read, *self.columns])
        return ", ".join(quote_ident(c) for c in cols)

    def _where(self) -> str:
        return f"WHERE {self.where}" if self.where else ""

    def undo_table(self, run_id: str) -> str:
        digest = hashlib.sha256(f"{run_id}\0{self.name}\0{self.table}".encode()).hexdigest()
        return f"{HANDRAIL_SCHEMA}.{quote_ident('bf_' + digest[:16])}"

    def _types(self, conn: Any) -> dict[str, str]:
        return {c.name: c.type for c in table_columns(conn, self.table)}

    # -- lifecycle ----------------------------------------------------------------------
    def plan(self, ctx: StepContext) -> Plan:
        db = ctx.use(self.db)
        with db.connect() as conn:
            conn.read_only = True
            cur = conn.cursor()
            try:
                cur.execute(
                    f"SELECT {self._select()} FROM {self._t()} {self._where()} "
                    f"ORDER BY {quote_ident(self.key)}".encode(),
                    self.where_params,
                )
            except (psycopg.errors.UndefinedColumn, psycopg.errors.UndefinedTable) as exc:
                return deferred(self, str(exc).splitlines()[0])
            names = [d.name for d in cur.description or ()]
            rows = cur.fetchall()
        return summarize(self, names, rows)

    def items(self, ctx: StepContext) -> list[Any] | None:
        with ctx.use(self.db).connect() as conn:
            return [
                r[0]
                for r in conn.execute(
                    f"SELECT {quote_ident(self.key)} FROM {self._t()} {self._where()} "
                    f"ORDER BY {quote_ident(self.key)}".encode(),
                    self.where_params,
                )
            ]

    def committed_batches(self, ctx: StepContext) -> set[int]:
        return ctx.use(self.db).ledger_batches(ctx.run_id, self.name)

    def apply_batch(self, ctx: StepContext, batch: int, items: list[Any]) -> int:
        db = ctx.use(self.db)
        undo = self.undo_table(ctx.run_id)
        key = quote_ident(self.key)
        with db.transaction() as conn:
            types = self._types(conn)
            Postgres.ensure_ledger(conn)
            cols = ", ".join(
                [f"b_{i} {types[c]}" for i, c in enumerate(self.columns)]
                + [f"a_{i} {types[c]}" for i, c in enumerate(self.columns)]
            )
            ddl = f"CREATE TABLE IF NOT EXISTS {undo} (batch integer, pk {types[self.key]}, {cols})"
            conn.execute(ddl.encode())
            cur = conn.cursor()
            cur.execute(
                f"SELECT {self._select()} FROM {self._t()} WHERE {key} = ANY(%s) "
                f"ORDER BY {key} FOR UPDATE".encode(),
                (list(items),),
            )
            names = [d.name for d in cur.description or ()]
            # The dry run's decision (batch_changes), written as it decided.
            undo_rows = batch_changes(self, batch, names, cur.fetchall())
            n = len(self.columns)
            updates = [(*u[2 + n :], u[1]) for u in undo_rows]
            with conn.cursor() as w:
                w.executemany(
                    f"INSERT INTO {undo} VALUES ({', '.join(['%s'] * (2 + 2 * n))})".encode(),
                    undo_rows,
                )
                sets = ", ".join(f"{quote_ident(c)} = %s" for c in self.columns)
                w.executemany(f"UPDATE {self._t()} SET {sets} WHERE {key} = %s".encode(), updates)
            Postgres.ledger_mark(conn, ctx.run_id, self.name, batch, len(updates))
        return len(updates)

    def rollback(self, ctx: StepContext) -> None:
        db = ctx.use(self.db)
        force = bool(ctx.state.get("_force"))
        undo, key = self.undo_table(ctx.run_id), quote_ident(self.key)
        same = " AND ".join(
            f"t.{quote_ident(c)} IS NOT DISTINCT FROM u.a_{i}" for i, c in enumerate(self.columns)
        )
        differs = f"t.{key} IS NULL OR NOT ({same})"
        with db.transaction() as conn:
            exists = conn.execute("SELECT to_regclass(%s)", (undo,)).fetchone()
            if exists is None or exists[0] is None:
                db.ledger_clear(ctx.run_id, self.name, conn=conn)
                return
            conflicts = [
                r[0]
                for r in conn.execute(
                    f"SELECT u.pk FROM {undo} u LEFT JOIN {self._t()} t ON t.{key} = u.pk "
                    f"WHERE {differs} ORDER BY u.pk".encode()
                )
            ]
            sets = ", ".join(f"{quote_ident(c)} = u.b_{i}" for i, c in enumerate(self.columns))
            guard = "" if force else f" AND {same}"
            conn.execute(
                f"UPDATE {self._t()} AS t SET {sets} FROM {undo} AS u "
                f"WHERE t.{key} = u.pk{guard}".encode()
            )
            if conflicts and not force:
                conn.execute(
                    f"DELETE FROM {undo} u USING {self._t()} t WHERE t.{key} = u.pk "
                    f"AND {same}".encode()
                )
            else:
                conn.execute(f"DROP TABLE {undo}".encode())
                db.ledger_clear(ctx.run_id, self.name, conn=conn)
        if conflicts and not force:
            raise RollbackConflict(
                f"{len(conflicts)} row(s) of {self.table} were changed after this run wrote "
                f"them and were left alone: {self.key} in {conflicts[:5]}",
                hint="inspect them; `handrail rollback RUN --force` overwrites them",
                items=[f"{self.table} {self.key}={k!r}" for k in conflicts],
            )
