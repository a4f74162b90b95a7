"""SQL steps on PostgreSQL: statements with their exact inverse, run in one transaction
with ``lock_timeout`` set and the ledger row, so a migration never stalls a live
application behind a lock and a crash leaves the change and its record, or neither."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..engine.context import StepContext
from ..inline import code
from ..model import CheckResult, Outcome, Plan
from ..resources.postgres import Postgres
from ..runbook import Step
from . import owned


class PgSQL(Step):
    """Run ``up`` on a PostgreSQL database; ``down`` undoes it exactly (without ``down`` the
    step has no inverse and is destructive). ``verify``: a query whose first column must be
    true in every row. PostgreSQL's DDL is transactional, so ``up`` applies whole or not."""

    exactly_once = True

    def __init__(
        self,
        name: str,
        db: Postgres,
        *,
        up: str | Sequence[str],
        down: str | Sequence[str] | None = None,
        verify: str | None = None,
        lock_timeout: str | None = None,
        **kw: Any,
    ) -> None:
        self.db = db
        self.up = [up] if isinstance(up, str) else list(up)
        self.down = None if down is None else ([down] if isinstance(down, str) else list(down))
        self.verify_sql, self.lock_timeout = verify, lock_timeout
        kw.setdefault("writes", (db,))
        super().__init__(name, **kw)

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

    def plan(self, ctx: StepContext) -> Plan:
        return Plan(
            summary=f"run {len(self.up)} SQL script(s) on {self.db.name} "
            f"(lock_timeout {self.lock_timeout or self.db.lock_timeout})",
            details={"up": self.up, "down": self.down},
        )

    def committed_batches(self, ctx: StepContext) -> set[int]:
        return ctx.use(self.db).ledger_batches(ctx.run_id, self.name)

    def apply_batch(self, ctx: StepContext, batch: int, items: list[Any]) -> int:
        db = ctx.use(self.db)
        with db.transaction(lock_timeout=self.lock_timeout) as conn:
            schema = owned.pg_schema(conn)
            for stmt in self.up:
                conn.execute(stmt.encode())
            tables, columns = owned.created(schema, owned.pg_schema(conn))
            ctx.save_state(owned=owned.pg_record(conn, tables, columns))
            Postgres.ledger_mark(conn, ctx.run_id, self.name, batch, 0)
        return 1

    def rollback_blockers(self, ctx: StepContext) -> list[str]:
        """Tables ``up`` created and columns it added that someone changed since."""
        db = ctx.use(self.db)
        if not ctx.state.get("owned") or not db.ledger_batches(ctx.run_id, self.name):
            return []
        with db.transaction() as conn:
            return owned.pg_blockers(conn, ctx.state["owned"])

    def rollback(self, ctx: StepContext) -> None:
        db = ctx.use(self.db)
        if not db.ledger_batches(ctx.run_id, self.name):
            return  # never committed: nothing to undo
        with db.transaction(lock_timeout=self.lock_timeout) as conn:
            for stmt in self.down or []:
                conn.execute(stmt.encode())
            db.ledger_clear(ctx.run_id, self.name, conn=conn)

    def verify(self, ctx: StepContext) -> list[CheckResult]:
        if self.verify_sql is None:
            return []
        rows = ctx.use(self.db).query(self.verify_sql)
        ok = bool(rows) and all(r and r[0] for r in rows)
        return [
            CheckResult(
                f"{self.name}: verify query",
                Outcome.PASS if ok else Outcome.FAIL,
                {"query": self.verify_sql, "rows": [list(r) for r in rows[:20]]},
                "" if ok else "verify query returned false",
            )
        ]
