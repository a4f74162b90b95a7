"""Import records from JSON files into a SQLite table: upsert by key, undo-logged,
exactly once per batch, every bad record reported with file, key and reason."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..engine.context import StepContext
from ..errors import ResourceError
from ..inline import code, names
from ..model import CheckResult, Outcome, Plan
from ..resources.jsonfile import JSONFile, load_json
from ..resources.sqlite import SQLite, transaction
from ..runbook import BATCH_WORST_CASE, Check, describe_callable
from . import rowlog
from .sql import SQLiteStep


class RecordError(ValueError):
    """Raised by a record mapper: this record cannot be imported, and why."""


@dataclass(frozen=True)
class SourceRecord:
    """One record read from a source file, before mapping."""

    source: str  # "file" or "file:line"
    key: str  # the record's key as people know it (job id, path, setting name)
    value: Any
    stamp: str | None = None  # when the source was written, for rows' updated_at


Reader = Callable[[Any, str], Iterable[SourceRecord]]
Mapper = Callable[[SourceRecord], dict[str, Any] | list[dict[str, Any]]]
Read = Callable[[StepContext], list[SourceRecord]]


class ImportRecords(SQLiteStep):
    """Upsert records into ``table`` by ``key``, from any source ``read(ctx)`` returns.

    ``mapper`` turns a :class:`SourceRecord` into a row (or several), raising
    :class:`RecordError` for a record that cannot be imported. Such records are
    journalled as rejects with file, key and reason, and counted by
    :class:`RejectShare`; they never abort the batch. Rows equal to what the table holds
    are left untouched, so a second run imports nothing. Rollback restores exactly the
    rows this run inserted or changed (see :mod:`handrail.steps.rowlog`).
    """

    def __init__(
        self,
        name: str,
        *,
        read: Read,
        db: SQLite,
        table: str,
        key: str | Sequence[str],
        mapper: Mapper,
        **kw: Any,
    ) -> None:
        self.read = read
        self.table = table
        self.key_cols = [key] if isinstance(key, str) else list(key)
        self.mapper = mapper
        kw.setdefault("batch_size", 1000)
        super().__init__(name, db, **kw)

    def params(self) -> dict[str, Any]:
        return {
            "db": self.db.name,
            "table": self.table,
            "key": self.key_cols,
            "read": describe_callable(self.read),
            "mapper": describe_callable(self.mapper),
        }

    def explain_changes(self) -> str:
        return f"upserts rows into {code(self.table)} by {names(self.key_cols)}"

    def explain_worst_case(self) -> str:
        return BATCH_WORST_CASE

    def explain_rollback(self) -> str:
        return (
            f"replays the undo log on {code(self.table)}: deletes the rows this run inserted "
            "and restores the prior values of rows it updated; rows changed since are "
            "reported and left alone"
        )

    def validate(self, ctx: StepContext) -> None:
        from .sql import require_columns

        db = ctx.use(self.db)
        if not db.exists():
            return
        with db.connect() as conn:
            require_columns(db, conn, self.table, self.key_cols, f"import {self.name!r} key")

    def source_name(self) -> str:
        return ", ".join(r.name for r in self.reads) or "source"

    def _records(self, ctx: StepContext) -> list[SourceRecord]:
        return list(self.read(ctx))

    def _map(self, ctx: StepContext, records: Iterable[SourceRecord]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for rec in records:
            try:
                out = self.mapper(rec)
            except RecordError as exc:
                ctx.reject(rec.source, rec.key, str(exc))
                continue
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                ctx.reject(rec.source, rec.key, f"{type(exc).__name__}: {exc}")
                continue
            rows.extend(out if isinstance(out, list) else [out])
        return rows

    # -- lifecycle ----------------------------------------------------------------------
    def plan(self, ctx: StepContext) -> Plan:
        records = self._records(ctx)
        rows = self._map(ctx, records)
        rejects = ctx.rejects
        ctx.rejects = []
        db = ctx.use(self.db)
        counts = {"records": len(records), "rejects": len(rejects)}
        # The run's own decision (rowlog.decide), without its writes.
        decided = rowlog.decide(None, self.table, self.key_cols, rows)
        if db.exists():
            with db.connect() as conn:
                has = conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (self.table,)
                ).fetchone()
                if has:
                    decided = rowlog.decide(conn, self.table, self.key_cols, rows)
        new, same = len(decided.inserts), decided.unchanged
        counts |= {"insert": new, "update": len(decided.updates), "unchanged": same}
        return Plan(
            summary=(
                f"import {len(records)} record(s) from {self.source_name()} into "
                f"{self.table}: {new} new, {counts['update']} changed, {same} unchanged, "
                f"{len(rejects)} rejected"
            ),
            items=new + counts["update"],
            counts=counts,
            samples=[{k: _short(v) for k, v in r.items()} for r in rows[:5]],
            details={
                "rejects": [
                    {"source": r.source, "key": r.key, "reason": r.reason} for r in rejects[:50]
                ]
            },
        )

    def items(self, ctx: StepContext) -> list[Any] | None:
        return [rec.key for rec in self._records(ctx)]

    def change(self, ctx: StepContext, conn: sqlite3.Connection) -> int:
        raise NotImplementedError  # batched: see apply_batch

    def apply_batch(self, ctx: StepContext, batch: int, items: list[Any]) -> int:
        by_key = self._records_cached(ctx)
        records = [r for key in dict.fromkeys(items) for r in by_key.get(key, ())]
        rows = self._map(ctx, records)
        with ctx.connection(self.db) as conn, transaction(conn):
            counts = rowlog.upsert(
                conn,
                self.table,
                self.key_cols,
                rows,
                run_id=ctx.run_id,
                step=self.name,
                batch=batch,
            )
            ctx.flush_rejects()  # before the commit: idempotent, so a crash loses none
            SQLite.ledger_mark(conn, ctx.run_id, self.name, batch, counts.changed)
        return counts.changed

    def _records_cached(self, ctx: StepContext) -> dict[str, list[SourceRecord]]:
        # Read the source once per step execution, not once per batch.
        cache: dict[str, dict[str, list[SourceRecord]]] = ctx.__dict__.setdefault("_imports", {})
        if self.name not in cache:
            by_key: dict[str, list[SourceRecord]] = {}
            for rec in self._records(ctx):
                by_key.setdefault(rec.key, []).append(rec)
            cache[self.name] = by_key
        return cache[self.name]

    def rollback_blockers(self, ctx: StepContext) -> list[str]:
        db = ctx.use(self.db)
        if not db.exists():
            return []
        with db.connect() as conn:
            return rowlog.blockers(conn, ctx.run_id, self.name)

    def rollback(self, ctx: StepContext) -> None:
        from ..errors import RollbackConflict

        db = ctx.use(self.db)
        if not db.exists():
            return
        with db.connect() as conn, transaction(conn):
            report = rowlog.undo(conn, ctx.run_id, self.name, force=bool(ctx.state.get("_force")))
            if not report.conflicts:
                SQLite.ledger_clear(conn, ctx.run_id, self.name)
        if report.conflicts:
            raise RollbackConflict(
                f"{len(report.conflicts)} row(s) in {self.table} were changed after this run "
                "wrote them and were left alone: " + "; ".join(report.conflicts[:5]),
                hint="inspect them; `handrail rollback RUN --force` overwrites them",
                items=report.conflicts,
            )

    def verify(self, ctx: StepContext) -> list[CheckResult]:
        """Every mapped row is in the table with exactly the imported values."""
        ctx.rejects = []
        rows = self._map(ctx, self._records(ctx))
        ctx.rejects = []
        merged = rowlog.merge(self.key_cols, rows)  # what the run wrote: one row per key
        with ctx.use(self.db).connect() as conn:
            present = rowlog._fetch(conn, self.table, self.key_cols, list(merged))
            missing = [
                r
                for k, r in merged.items()
                if not _same(present.get(k), r) and not rowlog.holds(conn, self.table, r)
            ]
        rows = list(merged.values())
        return [
            CheckResult(
                f"{self.name}: rows imported",
                Outcome.PASS if not missing else Outcome.FAIL,
                {
                    "expected": len(rows),
                    "matching": len(rows) - len(missing),
                    "missing_or_different": [
                        {k: _short(v) for k, v in r.items()} for r in missing[:5]
                    ],
                },
                "" if not missing else f"{len(missing)} row(s) missing or different",
            )
        ]


def _same(old: dict[str, Any] | None, row: dict[str, Any]) -> bool:
    return old is not None and all(old.get(c) == v for c, v in row.items())


def _short(v: Any) -> Any:
    if isinstance(v, str) and len(v) > 80:
        return v[:77] + "…"
    return v


class ImportJSON(ImportRecords):
    """:class:`ImportRecords` from one JSON file: ``reader(document, file_name)`` yields
    the records. A missing file is an error unless ``optional``. A file with a duplicate
    key, or NaN/Infinity (unless the source has ``allow_nan=True``), is refused whole,
    naming file, line and key: a reader would have kept only the last value unseen."""

    def __init__(
        self,
        name: str,
        *,
        source: JSONFile,
        reader: Reader,
        optional: bool = False,
        **kw: Any,
    ) -> None:
        self.source, self.reader, self.optional = source, reader, optional
        kw.setdefault("reads", (source,))
        super().__init__(name, read=self._read_file, **kw)

    def params(self) -> dict[str, Any]:
        return super().params() | {
            "read": None,
            "source": self.source.name,
            "reader": describe_callable(self.reader),
            "optional": self.optional,
        }

    def _read_file(self, ctx: StepContext) -> list[SourceRecord]:
        src = ctx.use(self.source)
        if not src.exists():
            if self.optional:
                return []
            raise ResourceError(
                f"{self.name}: source file {src.path} does not exist",
                hint="check the data directory, or mark the import optional",
            )
        # A duplicate key anywhere in the file (a record's field given twice) is refused
        # with file, line and key, exit 2, before any change: which of the two values the
        # user meant is theirs to say, and the source is validated before the run starts.
        doc = load_json(
            src.path, what=f"{self.source.name} ({src.path.name})", allow_nan=src.allow_nan
        )
        return list(self.reader(doc, src.path.name))


class RejectShare(Check):
    """Fail when more than ``max_share`` of a step's source records were rejected."""

    def __init__(
        self,
        step: ImportRecords | Sequence[ImportRecords],
        max_share: float = 0.01,
        name: str = "reject share",
    ) -> None:
        super().__init__(name)
        self.steps = [step] if isinstance(step, ImportRecords) else list(step)
        self.max_share = max_share

    def describe(self) -> str:
        names = ", ".join(s.name for s in self.steps)
        return f"records rejected by {names} at most {self.max_share:.1%} of those read"

    def evaluate(self, ctx: StepContext, baseline: Any) -> CheckResult:
        assert ctx.journal is not None
        total = 0
        rejected: list[dict[str, Any]] = []
        for step in self.steps:
            row = ctx.journal.step(ctx.run_id, step.name)
            total += int((row.plan or {}).get("counts", {}).get("records", 0))
            rejected += ctx.journal.rejects(ctx.run_id, step.name)
        share = len(rejected) / total if total else 0.0
        return self.result(
            share <= self.max_share,
            {
                "records": total,
                "rejected": len(rejected),
                "share": round(share, 6),
                "max_share": self.max_share,
                "rejects": rejected[:20],
            },
            f"{len(rejected)} of {total} records rejected ({share:.2%}; "
            f"limit {self.max_share:.2%})",
        )
