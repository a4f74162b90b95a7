"""SQL steps on SQLite: free SQL with up/down/verify, and idempotent schema changes.

Each applies in one transaction together with the batch's ledger row (SQLite's DDL is
transactional), so a crash either leaves the change and its record, or neither.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ..engine.context import StepContext
from ..errors import BadInput
from ..inline import code, names
from ..model import BlastRadius, CheckResult, Outcome, Plan
from ..resources.sqlite import SQLite, quote_ident, transaction
from ..runbook import Gate, Stages, Step
from . import owned, rowlog


def split_sql(script: str) -> list[str]:
    """Split a script into complete statements; SQLite itself decides where one ends, so
    semicolons inside strings, identifiers, comments and trigger bodies do not split."""
    out: list[str] = []
    buf = ""
    for piece in script.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            stmt = buf.strip()
            if _has_code(stmt):
                out.append(stmt)
            buf = ""
    rest = buf[:-1]  # the ';' added after the last piece
    if _has_code(rest):
        out.append(rest.strip())
    return out


def _is_ddl(stmt: str) -> bool:
    """Whether a statement changes the schema (later statements may depend on it)."""
    words = " ".join(line.split("--", 1)[0] for line in stmt.splitlines()).split()
    return bool(words) and words[0].upper() in ("CREATE", "ALTER", "DROP")


def _has_code(stmt: str) -> bool:
    """Whether a statement is more than semicolons, blanks and comments."""
    lines = [line.split("--", 1)[0] for line in stmt.splitlines()]
    text = " ".join(lines).replace(";", " ").strip()
    return bool(text) and not (text.startswith("/*") and text.endswith("*/"))


class SQLiteStep(Step):
    """Base for single-shot steps on one SQLite database, exactly-once via its ledger."""

    exactly_once = True

    def __init__(self, name: str, db: SQLite, **kw: Any) -> None:
        self.db = db
        kw.setdefault("writes", (db,))
        super().__init__(name, **kw)

    def committed_batches(self, ctx: StepContext) -> set[int]:
        return ctx.use(self.db).ledger_batches(ctx.run_id, self.name)

    def apply_batch(self, ctx: StepContext, batch: int, items: list[Any]) -> int:
        db = ctx.use(self.db)
        db.path.parent.mkdir(parents=True, exist_ok=True)
        with db.connect() as conn, transaction(conn):
            changed = self.change(ctx, conn)
            ctx.flush_rejects()
            SQLite.ledger_mark(conn, ctx.run_id, self.name, batch, changed)
        return changed

    def rollback(self, ctx: StepContext) -> None:
        db = ctx.use(self.db)
        if not db.exists():
            return
        with db.connect() as conn, transaction(conn):
            if self.name in _ledger_steps(conn, ctx.run_id):
                self.unchange(ctx, conn)
            SQLite.ledger_clear(conn, ctx.run_id, self.name)
        self.after_rollback(ctx)

    def rollback_blockers(self, ctx: StepContext) -> list[str]:
        """Tables this step created and columns it added that someone changed since
        (recorded as ``owned`` by :meth:`change`, in the change's own transaction)."""
        db = ctx.use(self.db)
        if not db.exists() or not ctx.state.get("owned"):
            return []
        with db.connect() as conn:
            if self.name not in _ledger_steps(conn, ctx.run_id):
                return []  # never committed: the rollback drops nothing
            return owned.sqlite_blockers(conn, ctx.state["owned"])

    def own(self, ctx: StepContext, conn: sqlite3.Connection, before: dict[str, list[str]]) -> None:
        """Record what the change created since ``before`` (a schema), for the rollback."""
        tables, columns = owned.created(before, owned.sqlite_schema(conn))
        ctx.save_state(owned=owned.sqlite_record(conn, tables, columns))

    def change(self, ctx: StepContext, conn: sqlite3.Connection) -> int:
        raise NotImplementedError

    def unchange(self, ctx: StepContext, conn: sqlite3.Connection) -> None:
        raise NotImplementedError

    def after_rollback(self, ctx: StepContext) -> None:
        """Hook after the rollback transaction committed (e.g. remove a created file)."""


def _ledger_steps(conn: sqlite3.Connection, run_id: str) -> set[str]:
    from ..resources.sqlite import LEDGER_PREFIX

    has = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE name=?", (f"{LEDGER_PREFIX}ledger",)
    ).fetchone()
    if not has:
        return set()
    rows = conn.execute(
        f"SELECT DISTINCT step FROM {LEDGER_PREFIX}ledger WHERE run_id=?", (run_id,)
    ).fetchall()
    return {r[0] for r in rows}


class SQL(SQLiteStep):
    """Run ``up`` (statements) on a SQLite database; ``down`` undoes it exactly.

    ``verify`` is a query whose first column must be true (non-zero) in every row, e.g.
    ``"SELECT count(*) = 0 FROM items WHERE status IS NULL"``.
    """

    def __init__(
        self,
        name: str,
        db: SQLite,
        *,
        up: str,
        down: str | None = None,
        verify: str | None = None,
        gates: Sequence[Gate] = (),
        blast: BlastRadius | None = None,
        tier: str | None = None,
        description: str = "",
    ) -> None:
        self.up = split_sql(up)
        self.down = split_sql(down) if down is not None else None
        self.verify_sql = verify
        super().__init__(name, db, gates=gates, blast=blast, tier=tier, description=description)

    def reversible(self) -> bool:
        return self.down is not None

    def params(self) -> dict[str, Any]:
        return {"db": self.db.name, "up": self.up, "down": self.down, "verify": self.verify_sql}

    def explain_changes(self) -> str:
        return f"runs {len(self.up)} statement(s) on {code(self.db.name)} in one transaction"

    def explain_rollback(self) -> str:
        if self.down is None:
            return super().explain_rollback()
        return "runs its down statements: " + " ".join(code(s) for s in self.down)

    def explain_sql(self) -> tuple[list[str], list[str] | None] | None:
        return list(self.up), (list(self.down) if self.down is not None else None)

    def validate(self, ctx: StepContext) -> None:
        """Each ``up`` statement compiles against the real schema, up to the first that
        follows a schema change of its own (the forward run on clones checks the rest)."""
        db = ctx.use(self.db)
        if not db.exists():
            return
        with db.connect() as conn:
            for i, stmt in enumerate(self.up, 1):
                compile_sql(db, conn, stmt, f"statement {i} of `up`")
                if _is_ddl(stmt):
                    return

    def plan(self, ctx: StepContext) -> Plan:
        return Plan(
            summary=f"run {len(self.up)} statement(s) on {self.db.name}",
            details={"statements": self.up, "rollback": self.down},
        )

    def change(self, ctx: StepContext, conn: sqlite3.Connection) -> int:
        schema = owned.sqlite_schema(conn)
        before = conn.total_changes
        for stmt in self.up:
            conn.execute(stmt)
        changed = conn.total_changes - before
        self.own(ctx, conn, schema)
        return changed

    def unchange(self, ctx: StepContext, conn: sqlite3.Connection) -> None:
        for stmt in self.down or []:
            conn.execute(stmt)

    def verify(self, ctx: StepContext) -> list[CheckResult]:
        if self.verify_sql is None:
            return []
        with ctx.use(self.db).connect() as conn:
            rows = conn.execute(self.verify_sql).fetchall()
        bad = [r for r in rows if not r or not r[0]]
        outcome = Outcome.PASS if rows and not bad else Outcome.FAIL
        return [
            CheckResult(
                f"{self.name}: verify query",
                outcome,
                {"query": self.verify_sql, "rows": [list(r) for r in rows[:20]]},
                "" if outcome is Outcome.PASS else "verify query returned false",
            )
        ]


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info({quote_ident(table)})")]


def require_columns(
    db: SQLite, conn: sqlite3.Connection, table: str, columns: Sequence[str], what: str
) -> None:
    """Raise BadInput naming the database, the table and each of ``columns`` it lacks."""
    have = _columns(conn, table)
    if not have:
        tables = sorted(owned.sqlite_schema(conn))
        raise BadInput(
            f"{db.path}: there is no table {table!r} ({what}); tables: {tables or 'none'}",
            hint="check the table name, or the database the runbook points at",
        )
    missing = [c for c in columns if c not in have]
    if missing:
        raise BadInput(
            f"{db.path}: table {table!r} has no column(s) {missing} ({what}); its columns: {have}",
            hint="check the column names in the runbook",
        )


def compile_sql(
    db: SQLite, conn: sqlite3.Connection, stmt: str, what: str, params: Sequence[Any] = ()
) -> None:
    """Compile ``stmt`` against the real schema without running it (``EXPLAIN``)."""
    try:
        conn.execute(f"EXPLAIN {stmt}", tuple(params)).fetchall()
    except sqlite3.Error as exc:
        raise BadInput(
            f"{db.path}: {what} does not compile: {exc}\n    {stmt.strip()[:300]}",
            hint="fix the SQL in the runbook",
        ) from exc


def _indexes(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}


class CreateSchema(SQLiteStep):
    """Create tables and indexes that do not exist yet (``CREATE … IF NOT EXISTS``), and
    drop exactly the ones this run created on rollback. If the database file did not
    exist before the run, rollback removes the file too."""

    def __init__(self, name: str, db: SQLite, *, ddl: str, **kw: Any) -> None:
        self.ddl = split_sql(ddl)
        super().__init__(name, db, **kw)

    def params(self) -> dict[str, Any]:
        return {"db": self.db.name, "ddl": self.ddl}

    def explain_changes(self) -> str:
        return (
            f"creates missing tables and indexes in {code(self.db.name)} "
            f"({len(self.ddl)} statement(s))"
        )

    def explain_rollback(self) -> str:
        return (
            f"drops the tables and indexes this run created in {code(self.db.name)} "
            "(and the database file, if the run created it)"
        )

    def _objects(self) -> list[tuple[str, str]]:
        """(type, name) of each CREATE statement, parsed by SQLite itself."""
        mem = sqlite3.connect(":memory:")
        try:
            for stmt in self.ddl:
                mem.execute(stmt)
            return [
                (r[0], r[1])
                for r in mem.execute(
                    "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
                    "ORDER BY rowid"
                )
            ]
        finally:
            mem.close()

    def validate(self, ctx: StepContext) -> None:
        try:
            self._objects()
        except sqlite3.Error as exc:
            raise BadInput(
                f"the ddl does not compile: {exc}", hint="fix the SQL in the runbook"
            ) from exc

    def plan(self, ctx: StepContext) -> Plan:
        db = ctx.use(self.db)
        existing: set[str] = set()
        if db.exists():
            with db.connect() as conn:
                existing = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        objects = self._objects()
        new = [f"{t} {n}" for t, n in objects if n not in existing]
        have = [f"{t} {n}" for t, n in objects if n in existing]
        summary = f"create {len(new)} object(s) in {self.db.name}"
        if not db.exists():
            summary += f" (creates the database file {db.path})"
        return Plan(
            summary=summary,
            items=len(new),
            counts={"create": len(new), "already_present": len(have)},
            details={"create": new, "present": have},
        )

    def items(self, ctx: StepContext) -> list[Any] | None:
        db = ctx.use(self.db)
        if "file_existed" not in ctx.state:
            ctx.save_state(file_existed=db.exists())
        return None

    def change(self, ctx: StepContext, conn: sqlite3.Connection) -> int:
        existing = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        created = [n for _, n in self._objects() if n not in existing]
        ctx.save_state(created=created)
        schema = owned.sqlite_schema(conn)
        for stmt in self.ddl:
            conn.execute(stmt)
        self.own(ctx, conn, schema)
        return len(created)

    def unchange(self, ctx: StepContext, conn: sqlite3.Connection) -> None:
        created = set(ctx.state.get("created", []))
        existing = {r[0]: r[1] for r in conn.execute("SELECT name, type FROM sqlite_master")}
        for typ, name in reversed(self._objects()):
            if name in created and name in existing:
                conn.execute(f"DROP {typ.upper()} IF EXISTS {quote_ident(name)}")
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name='sqlite_sequence'").fetchone():
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            for (seq_table,) in conn.execute("SELECT name FROM sqlite_sequence").fetchall():
                if seq_table not in tables:
                    conn.execute("DELETE FROM sqlite_sequence WHERE name=?", (seq_table,))

    def after_rollback(self, ctx: StepContext) -> None:
        db = ctx.use(self.db)
        if ctx.state.get("file_existed") is False and db.exists():
            with db.connect() as conn:
                left = conn.execute(
                    "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
                ).fetchone()[0]
            if left == 0:
                for suffix in ("", "-wal", "-shm", "-journal"):
                    type(db.path)(str(db.path) + suffix).unlink(missing_ok=True)


class AddColumns(SQLiteStep):
    """Add nullable columns to a table if missing (idempotent); rollback drops only the
    columns this run added (SQLite 3.35+ ``DROP COLUMN``)."""

    def __init__(
        self, name: str, db: SQLite, *, table: str, columns: dict[str, str], **kw: Any
    ) -> None:
        self.table, self.columns = table, dict(columns)
        super().__init__(name, db, **kw)

    def params(self) -> dict[str, Any]:
        return {"db": self.db.name, "table": self.table, "columns": self.columns}

    def explain_changes(self) -> str:
        cols = [f"{c} {t}" for c, t in self.columns.items()]
        return f"adds nullable column(s) {names(cols)} to {code(self.table)} if missing"

    def explain_rollback(self) -> str:
        return (
            f"drops the columns this run added to {code(self.table)} "
            f"({names(list(self.columns))}); columns that were already there stay"
        )

    def validate(self, ctx: StepContext) -> None:
        with ctx.use(self.db).connect() as conn:
            require_columns(ctx.use(self.db), conn, self.table, [], "the table to add columns to")

    def plan(self, ctx: StepContext) -> Plan:
        with ctx.use(self.db).connect() as conn:
            have = set(_columns(conn, self.table))
        missing = [c for c in self.columns if c not in have]
        return Plan(
            summary=f"add {len(missing)} column(s) to {self.table}",
            items=len(missing),
            counts={"add": len(missing), "present": len(self.columns) - len(missing)},
            details={"add": missing},
        )

    def change(self, ctx: StepContext, conn: sqlite3.Connection) -> int:
        have = set(_columns(conn, self.table))
        missing = [c for c in self.columns if c not in have]
        ctx.save_state(added=missing)
        schema = owned.sqlite_schema(conn)
        for col in missing:
            conn.execute(
                f"ALTER TABLE {quote_ident(self.table)} ADD COLUMN "
                f"{quote_ident(col)} {self.columns[col]}"
            )
        self.own(ctx, conn, schema)
        return len(missing)

    def unchange(self, ctx: StepContext, conn: sqlite3.Connection) -> None:
        have = set(_columns(conn, self.table))
        for col in reversed(ctx.state.get("added", [])):
            if col in have:
                conn.execute(
                    f"ALTER TABLE {quote_ident(self.table)} DROP COLUMN {quote_ident(col)}"
                )


class CreateIndex(SQLiteStep):
    """Create an index if missing (idempotent); rollback drops it only if this run made it."""

    def __init__(
        self,
        name: str,
        db: SQLite,
        *,
        index: str,
        table: str,
        columns: Sequence[str],
        unique: bool = False,
        **kw: Any,
    ) -> None:
        self.index, self.table, self.cols, self.unique = index, table, list(columns), unique
        super().__init__(name, db, **kw)

    def params(self) -> dict[str, Any]:
        return {
            "db": self.db.name,
            "index": self.index,
            "table": self.table,
            "columns": self.cols,
            "unique": self.unique,
        }

    def explain_changes(self) -> str:
        on = f"{self.table}({', '.join(self.cols)})"
        return f"creates index {code(self.index)} on {code(on)} if missing"

    def explain_rollback(self) -> str:
        return f"drops index {code(self.index)} if this run created it"

    def validate(self, ctx: StepContext) -> None:
        with ctx.use(self.db).connect() as conn:
            require_columns(ctx.use(self.db), conn, self.table, self.cols, "the index's columns")

    def plan(self, ctx: StepContext) -> Plan:
        with ctx.use(self.db).connect() as conn:
            present = self.index in _indexes(conn)
        return Plan(
            summary=f"{'keep' if present else 'create'} index {self.index} on "
            f"{self.table}({', '.join(self.cols)})",
            items=0 if present else 1,
        )

    def change(self, ctx: StepContext, conn: sqlite3.Connection) -> int:
        present = self.index in _indexes(conn)
        ctx.save_state(created=not present)
        if present:
            return 0
        conn.execute(
            f"CREATE {'UNIQUE ' if self.unique else ''}INDEX {quote_ident(self.index)} ON "
            f"{quote_ident(self.table)} ({', '.join(quote_ident(c) for c in self.cols)})"
        )
        return 1

    def unchange(self, ctx: StepContext, conn: sqlite3.Connection) -> None:
        if ctx.state.get("created"):
            conn.execute(f"DROP INDEX IF EXISTS {quote_ident(self.index)}")


__all__ = ["SQL", "AddColumns", "CreateIndex", "CreateSchema", "SQLiteStep", "Stages", "rowlog"]
