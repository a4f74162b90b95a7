"""Ready-made checks. Each records the numbers it saw as evidence.

They work on any resource that offers ``query(sql, params)`` and ``schema()`` (SQLite and
PostgreSQL); :class:`Predicate` takes any function.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from .engine.context import StepContext
from .model import CheckResult
from .runbook import Check, describe_callable


class Queryable(Protocol):
    name: str

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def schema(self) -> dict[str, dict[str, Any]]: ...

    def exists(self) -> bool: ...


def _q(
    ctx: StepContext, db: Queryable, sql: str, params: Sequence[Any] = ()
) -> list[tuple[Any, ...]]:
    bound: Queryable = ctx.bindings.get(db.name, db)  # type: ignore[assignment]
    return bound.query(sql, params)


def _schema(ctx: StepContext, db: Queryable) -> dict[str, dict[str, Any]]:
    bound: Queryable = ctx.bindings.get(db.name, db)  # type: ignore[assignment]
    return bound.schema() if bound.exists() else {}


class ColumnsExist(Check):
    """Every named column exists in ``table``."""

    def __init__(
        self, db: Queryable, table: str, columns: Sequence[str], name: str | None = None
    ) -> None:
        super().__init__(name or f"columns exist in {table}")
        self.db, self.table, self.columns = db, table, list(columns)

    def describe(self) -> str:
        return f"{self.db.name}.{self.table} has columns {', '.join(self.columns)}"

    def evaluate(self, ctx: StepContext, baseline: Any) -> CheckResult:
        cols = _schema(ctx, self.db).get(self.table, {}).get("columns", [])
        missing = [c for c in self.columns if c not in cols]
        return self.result(
            not missing,
            {"table": self.table, "expected": self.columns, "missing": missing},
            f"missing: {', '.join(missing)}" if missing else "",
        )


class IndexExists(Check):
    """An index of this name exists."""

    def __init__(self, db: Queryable, index: str, name: str | None = None) -> None:
        super().__init__(name or f"index {index} exists")
        self.db, self.index = db, index

    def describe(self) -> str:
        return f"{self.db.name} has index {self.index}"

    def evaluate(self, ctx: StepContext, baseline: Any) -> CheckResult:
        obj = _schema(ctx, self.db).get(self.index, {})
        ok = obj.get("type") == "index"
        return self.result(
            ok, {"index": self.index, "found": ok}, "" if ok else f"index {self.index} not found"
        )


class SchemaSuperset(Check):
    """No table or column that existed before the run has disappeared."""

    def __init__(self, db: Queryable, name: str | None = None) -> None:
        super().__init__(name or f"nothing dropped from {db.name}")
        self.db = db

    def describe(self) -> str:
        return f"every table and column of {self.db.name} before the run still exists"

    def baseline(self, ctx: StepContext) -> Any:
        return {
            t: v.get("columns", [])
            for t, v in _schema(ctx, self.db).items()
            if v.get("type") == "table"
        }

    def evaluate(self, ctx: StepContext, baseline: Any) -> CheckResult:
        now = _schema(ctx, self.db)
        lost: list[str] = []
        for table, cols in (baseline or {}).items():
            if table not in now:
                lost.append(table)
                continue
            lost += [f"{table}.{c}" for c in cols if c not in now[table].get("columns", [])]
        return self.result(
            not lost,
            {"tables_before": len(baseline or {}), "missing": lost},
            f"disappeared: {', '.join(lost)}" if lost else "",
        )


class RowCount(Check):
    """The count of a query (or table) equals / is within bounds / matches another query."""

    def __init__(
        self,
        db: Queryable,
        table_or_query: str,
        *,
        equals: int | None = None,
        at_least: int | None = None,
        at_most: int | None = None,
        same_as: tuple[Queryable, str] | None = None,
        unchanged: bool = False,
        name: str | None = None,
    ) -> None:
        sql = table_or_query
        if not sql.lstrip().lower().startswith("select"):
            sql = f'SELECT count(*) FROM "{table_or_query}"'
        super().__init__(name or f"row count of {table_or_query}")
        self.db, self.sql = db, sql
        self.equals, self.at_least, self.at_most = equals, at_least, at_most
        self.same_as, self.unchanged = same_as, unchanged

    def describe(self) -> str:
        bounds = []
        if self.equals is not None:
            bounds.append(f"= {self.equals}")
        if self.at_least is not None:
            bounds.append(f">= {self.at_least}")
        if self.at_most is not None:
            bounds.append(f"<= {self.at_most}")
        if self.same_as is not None:
            bounds.append(f"= count in {self.same_as[0].name}")
        if self.unchanged:
            bounds.append("= count before the run")
        return f"{self.sql} {' and '.join(bounds) or '(recorded)'}"

    def _count(self, ctx: StepContext, db: Queryable, sql: str) -> int:
        return int(_q(ctx, db, sql)[0][0])

    def baseline(self, ctx: StepContext) -> Any:
        if not self.unchanged:
            return None
        try:
            return self._count(ctx, self.db, self.sql)
        except Exception:
            return None

    def evaluate(self, ctx: StepContext, baseline: Any) -> CheckResult:
        n = self._count(ctx, self.db, self.sql)
        ev: dict[str, Any] = {"query": self.sql, "count": n}
        problems = []
        if self.equals is not None and n != self.equals:
            problems.append(f"{n} != {self.equals}")
        if self.at_least is not None and n < self.at_least:
            problems.append(f"{n} < {self.at_least}")
        if self.at_most is not None and n > self.at_most:
            problems.append(f"{n} > {self.at_most}")
        if self.same_as is not None:
            other = self._count(ctx, self.same_as[0], self.same_as[1])
            ev["other"] = other
            if other != n:
                problems.append(f"{n} != {other} in {self.same_as[0].name}")
        if self.unchanged:
            ev["before"] = baseline
            if baseline != n:
                problems.append(f"{n} != {baseline} before the run")
        return self.result(not problems, ev, "; ".join(problems))


class Distribution(Check):
    """Shares of a query's groups are each within ``tolerance_pp`` percentage points of
    the expected shares. The query returns (group, count) rows."""

    def __init__(
        self,
        db: Queryable,
        query: str,
        expected: Mapping[str, float],
        *,
        tolerance_pp: float = 5.0,
        name: str | None = None,
    ) -> None:
        super().__init__(name or "distribution matches the benchmark")
        self.db, self.query, self.expected, self.tolerance = db, query, dict(expected), tolerance_pp

    def describe(self) -> str:
        exp = ", ".join(f"{k} {v:.1f}%" for k, v in self.expected.items())
        return f"shares within {self.tolerance:g} pp of: {exp}"

    def evaluate(self, ctx: StepContext, baseline: Any) -> CheckResult:
        counts = {str(g): int(c) for g, c in _q(ctx, self.db, self.query)}
        return distribution_result(self, counts, self.expected, self.tolerance)


def distribution_result(
    check: Check, counts: Mapping[str, int], expected: Mapping[str, float], tolerance: float
) -> CheckResult:
    """Compare observed counts with expected percentage shares (shared by plan-time checks)."""
    total = sum(counts.values())
    shares = {g: (100.0 * c / total if total else 0.0) for g, c in counts.items()}
    deviations = {g: round(shares.get(g, 0.0) - exp, 2) for g, exp in expected.items()}
    worst = max((abs(d) for d in deviations.values()), default=0.0)
    off = [
        f"{g}: {shares.get(g, 0.0):.1f}% vs {exp:.1f}%"
        for g, exp in expected.items()
        if abs(deviations[g]) > tolerance
    ]
    return check.result(
        total > 0 and not off,
        {
            "total": total,
            "counts": dict(counts),
            "shares_pct": {g: round(s, 2) for g, s in shares.items()},
            "expected_pct": dict(expected),
            "deviation_pp": deviations,
            "tolerance_pp": tolerance,
            "worst_pp": round(worst, 2),
        },
        ("no rows" if total == 0 else "; ".join(off)),
    )


class PlanDistribution(Check):
    """On the dry run (a gate at="plan"): the shares of the values a step would write to
    ``column`` are within ``tolerance_pp`` percentage points of the expected shares.

    ``among`` restricts the denominator to some values (e.g. shares of "assigned" and
    "tied" among documents that have concepts). Only the rows the step would change are
    counted; no such rows at all is a fail.
    """

    def __init__(
        self,
        column: str,
        expected: Mapping[str, float],
        *,
        tolerance_pp: float = 5.0,
        among: Sequence[str] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name or f"dry-run distribution of {column}")
        self.column, self.expected, self.tolerance = column, dict(expected), tolerance_pp
        self.among = list(among) if among is not None else None

    def describe(self) -> str:
        exp = ", ".join(f"{k} {v:.1f}%" for k, v in self.expected.items())
        scope = f" among {', '.join(self.among)}" if self.among else ""
        return f"dry run: {self.column} shares{scope} within {self.tolerance:g} pp of {exp}"

    def evaluate(self, ctx: StepContext, baseline: Any) -> CheckResult:
        if ctx.plan is None:
            return self.result(False, {}, "no dry run to check")
        values = ctx.plan.details.get("values", {}).get(self.column, {})
        counts = {str(k): int(v) for k, v in values.items()}
        if self.among is not None:
            counts = {k: v for k, v in counts.items() if k in self.among}
        return distribution_result(self, counts, self.expected, self.tolerance)


class RecordsPreserved(Check):
    """The rows a query returns are byte-for-byte the same as before the run."""

    def __init__(
        self, db: Queryable, query: str, *, name: str | None = None, expect_count: int | None = None
    ) -> None:
        super().__init__(name or "critical records preserved")
        self.db, self.query, self.expect_count = db, query, expect_count

    def describe(self) -> str:
        n = f" ({self.expect_count} records)" if self.expect_count is not None else ""
        return f"rows of `{self.query}` identical to before the run{n}"

    def _digest(self, ctx: StepContext) -> tuple[int, str]:
        rows = _q(ctx, self.db, self.query)
        h = hashlib.sha256()
        for row in rows:
            h.update(repr(tuple(row)).encode())
            h.update(b"\n")
        return len(rows), h.hexdigest()

    def baseline(self, ctx: StepContext) -> Any:
        n, digest = self._digest(ctx)
        return {"count": n, "sha256": digest}

    def evaluate(self, ctx: StepContext, baseline: Any) -> CheckResult:
        n, digest = self._digest(ctx)
        before = baseline or {}
        ok = digest == before.get("sha256")
        problems = [] if ok else [f"rows differ from before the run ({before.get('count')} -> {n})"]
        if self.expect_count is not None and n != self.expect_count:
            ok = False
            problems.append(f"{n} records, expected {self.expect_count}")
        return self.result(
            ok,
            {
                "count": n,
                "count_before": before.get("count"),
                "sha256": digest,
                "sha256_before": before.get("sha256"),
            },
            "; ".join(problems),
        )


class Sample(Check):
    """Show a reproducible random sample of rows to the human at the gate.

    Its outcome is inconclusive (only a person can judge it), so the gate pauses until
    someone approves or rejects. The sample is seeded by run and check, so the rows shown
    when the run paused are the rows the approver saw.
    """

    def __init__(
        self,
        db: Queryable,
        query: str,
        n: int = 20,
        *,
        name: str | None = None,
        instructions: str = "",
    ) -> None:
        super().__init__(name or f"sample of {n}")
        self.db, self.query, self.n, self.instructions = db, query, n, instructions

    def describe(self) -> str:
        return f"{self.n} random rows of `{self.query}` for a human to judge"

    def evaluate(self, ctx: StepContext, baseline: Any) -> CheckResult:
        rows = _q(ctx, self.db, self.query)
        rng = random.Random(f"{ctx.run_id}/{ctx.step}/{self.name}")
        picked = sorted(rng.sample(range(len(rows)), min(self.n, len(rows))))
        return self.result(
            None,
            {
                "population": len(rows),
                "shown": len(picked),
                "rows": [[_plain(v) for v in rows[i]] for i in picked],
                "instructions": self.instructions,
            },
            "a human must judge the sample",
        )


class Predicate(Check):
    """A custom check: ``fn(ctx)`` returns (ok, evidence) — ok may be None (inconclusive)."""

    def __init__(
        self,
        name: str,
        fn: Callable[[StepContext], tuple[bool | None, dict[str, Any]]],
        description: str = "",
    ) -> None:
        super().__init__(name)
        self.fn, self.description = fn, description

    def describe(self) -> str:
        return self.description or f"custom: {describe_callable(self.fn).splitlines()[0]}"

    def evaluate(self, ctx: StepContext, baseline: Any) -> CheckResult:
        ok, evidence = self.fn(ctx)
        return self.result(ok, evidence, "" if ok else str(evidence.get("message", "")))


class FilesUnchanged(Check):
    """Files (glob patterns under a directory) are byte-identical to before the run."""

    def __init__(self, directory: Any, patterns: Sequence[str], *, name: str | None = None) -> None:
        super().__init__(name or "source files unchanged")
        self.directory, self.patterns = directory, list(patterns)

    def describe(self) -> str:
        return f"files {', '.join(self.patterns)} in {self.directory.name} byte-identical"

    def _digests(self, ctx: StepContext) -> dict[str, str]:
        from .hashing import sha256_file

        root = ctx.bindings.get(self.directory.name, self.directory).path
        out: dict[str, str] = {}
        for pattern in self.patterns:
            for p in sorted(root.glob(pattern)):
                if p.is_file():
                    out[str(p.relative_to(root))] = sha256_file(p)[0]
        return out

    def baseline(self, ctx: StepContext) -> Any:
        return self._digests(ctx)

    def evaluate(self, ctx: StepContext, baseline: Any) -> CheckResult:
        now = self._digests(ctx)
        before = baseline or {}
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        return self.result(
            not changed,
            {"files": len(before), "changed": changed},
            f"changed: {', '.join(changed)}" if changed else "",
        )


def _plain(v: Any) -> Any:
    if isinstance(v, bytes):
        return f"<{len(v)} bytes>"
    return v


__all__ = [
    "ColumnsExist",
    "Distribution",
    "FilesUnchanged",
    "IndexExists",
    "PlanDistribution",
    "Predicate",
    "RecordsPreserved",
    "RowCount",
    "Sample",
    "SchemaSuperset",
    "distribution_result",
]
