"""The table copy and the parity proof as a runbook step and a check.

:class:`CopyTable` drives :class:`handrail.tablecopy.copy.CopyJob` batch by batch through the
executor: the key ranges are the work list (frozen in the journal and in the target),
each range's merge commits with its ledger row (exactly once), rejects are journalled
with their key and reason. :class:`Parity` proves source and target hold the same rows
for the mapped columns, hashing segments inside each database.
"""

from __future__ import annotations

import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from typing import Any

from ..engine.context import StepContext
from ..errors import PolicyError
from ..inline import code, names
from ..model import CheckResult, Plan
from ..resources.names import quote_ident
from ..resources.postgres import Postgres
from ..resources.sqlite import SQLite
from ..runbook import BATCH_WORST_CASE, Check, Step
from ..steps import owned
from .copy import CopyJob, KeyRange, Prepared, TargetTable
from .mapping import CopySpec, TableMap
from .parity import parity

__all__ = ["CopyTable", "Parity"]


def _target_table(mapping: TableMap) -> str:
    schema, _, name = mapping.target.rpartition(".")
    return f"{quote_ident(schema or 'public')}.{quote_ident(name)}"


class CopyTable(Step):
    """Copy (upsert on the natural key) ``mapping.source`` into ``mapping.target``.

    Rollback: the step records whether the target table was empty before it; if so, the
    exact inverse is emptying it again. Copying into a table that already held rows has
    no row-level inverse here: rollback refuses and points at the run's verified backup.
    """

    exactly_once = True

    def __init__(
        self,
        name: str,
        source: SQLite | Postgres,
        target: Postgres,
        mapping: TableMap | CopySpec,
        *,
        rows_per_batch: int = 10_000,
        **kw: Any,
    ) -> None:
        self.source, self.target = source, target
        self.spec = mapping if isinstance(mapping, CopySpec) else CopySpec(mapping)
        self.rows_per_batch = rows_per_batch
        kw.setdefault("reads", (source,))
        kw.setdefault("writes", (target,))
        kw["batch_size"] = 1  # one key range per engine batch
        super().__init__(name, **kw)
        # (run and bindings, job, its ranges once applying, ranges read ahead)
        self._cached: (
            tuple[tuple[str, int, int], CopyJob, list[KeyRange] | None, dict[int, Future[Prepared]]]
            | None
        ) = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"handrail-{name}-reader")

    def params(self) -> dict[str, Any]:
        m = self.spec.mapping
        return {
            "source": self.source.name,
            "target": self.target.name,
            "from": m.source,
            "to": m.target,
            "key": list(m.key),
            "on_conflict": self.spec.on_conflict,
            "columns": [c.describe() for c in m.columns],
            "rows_per_batch": self.rows_per_batch,
        }

    def explain_changes(self) -> str:
        m = self.spec.mapping
        return (
            f"upserts the rows of {code(m.source)} in {code(self.source.name)} into "
            f"{code(self._qualified())} on {code(self.target.name)} by {names(list(m.key))}, "
            f"in key ranges of up to {self.rows_per_batch:,} rows"
        )

    def explain_worst_case(self) -> str:
        return BATCH_WORST_CASE

    def explain_rollback(self) -> str:
        return (
            f"empties {code(self._qualified())} again if it was empty before the copy (and "
            "resets its sequences), unless its rows changed since; a copy into a table that "
            "already held rows has no row-level inverse: restore the run's verified backups "
            "with `handrail backups restore RUN`"
        )

    def _job(self, ctx: StepContext) -> CopyJob:
        return CopyJob(
            ctx.use(self.source), ctx.use(self.target), self.spec, batch_size=self.rows_per_batch
        )

    def _count(self, ctx: StepContext) -> int | None:
        try:
            rows = ctx.use(self.target).query(
                f"SELECT count(*) FROM {_target_table(self.spec.mapping)}"
            )
        except Exception:
            return None
        return int(rows[0][0])

    def validate(self, ctx: StepContext) -> None:
        """What the copy would refuse in the target (no unique index on the key, rules),
        refused before the first change, when the table exists already."""
        if self._count(ctx) is not None:
            with ctx.use(self.target).connect() as conn:
                TargetTable.load(conn, self.spec.mapping.target, self.spec.mapping.key)

    def plan(self, ctx: StepContext) -> Plan:
        m = self.spec.mapping
        src = ctx.use(self.source)
        table = m.source
        n = (
            src.query(f'SELECT count(*) FROM "{table}"')[0][0]
            if isinstance(src, SQLite)
            else src.query(f"SELECT count(*) FROM {table}")[0][0]
        )
        before = self._count(ctx)
        counts = {"source_rows": int(n), "target_rows": before or 0}
        rejected = ""
        if before is not None:
            # the table exists (an earlier step may create it): what the copy would refuse
            # (no unique index on the key, rules), the dry run refuses now, and it counts
            # the rows the conversions reject with the copy's own reading and converting
            counts["rejects"], counts["duplicates"] = self._dry_run(ctx)
            rejected = (
                f"; {counts['rejects']} row(s) would be rejected by their conversions, "
                f"{counts['duplicates']} superseded by a duplicate natural key"
            )
        return Plan(
            summary=f"copy {n} row(s) of {m.source} into {m.target} by {', '.join(m.key)} "
            f"(on conflict: {self.spec.on_conflict}); target now "
            f"{'not created yet' if before is None else f'{before} row(s)'}{rejected}",
            items=int(n),
            counts=counts,
        )

    def _dry_run(self, ctx: StepContext) -> tuple[int, int]:
        """(rejects, duplicates) from the job the run then applies with: its answer on
        duplicate natural keys (one GROUP BY over the source) serves both. A dry run
        alone (``handrail plan``) closes the job at once."""
        job = self._shared_job(ctx)
        try:
            return job.count_rejects()
        except BaseException:
            self._close_job()
            raise
        finally:
            if ctx.dry_run:
                self._close_job()

    def _sequences(self, ctx: StepContext) -> list[list[Any]]:
        """(sequence, last_value, is_called) of the sequences the target table owns."""
        target = ctx.use(self.target)
        seqs = target.query(
            "SELECT s.oid::regclass::text FROM pg_class s JOIN pg_depend d ON d.objid = s.oid "
            "WHERE s.relkind = 'S' AND d.refobjid = %s::regclass AND d.deptype IN ('a', 'i')",
            (_target_table(self.spec.mapping),),
        )
        out = []
        for (seq,) in seqs:
            last, called = target.query(f"SELECT last_value, is_called FROM {seq}")[0]
            out.append([seq, int(last), bool(called)])
        return out

    def items(self, ctx: StepContext) -> list[Any] | None:
        if "target_rows_before" not in ctx.state:
            # What an exact inverse needs: whether the table was empty, and the state of
            # its identity/serial sequences (inserts advance them; a DELETE does not rewind).
            ctx.save_state(target_rows_before=self._count(ctx), sequences=self._sequences(ctx))
        with self._job(ctx) as job:
            return [r.to_json() for r in job.plan_batches(ctx.run_id, self.name)]

    def committed_batches(self, ctx: StepContext) -> set[int]:
        return ctx.use(self.target).ledger_batches(ctx.run_id, self.name)

    def apply_batch(self, ctx: StepContext, batch: int, items: list[Any]) -> int:
        (data,) = items
        rng = KeyRange.from_json(data)
        job, ranges, ahead = self._open_job(ctx)
        try:
            pending = ahead.pop(rng.batch, None)
            prep = pending.result() if pending is not None else job.prepare(rng)
            later = [r for r in ranges if r.batch > rng.batch]
            if later and later[0].batch not in ahead:
                # read and convert the next range while this one is written
                ahead[later[0].batch] = self._pool.submit(job.prepare, later[0])
            result = job.write_batch(rng.batch, prep, run_id=ctx.run_id, step=self.name)
        except BaseException:
            self._close_job()
            raise
        if not later:
            self._close_job()
        for r in result.rejects:
            ctx.reject(r.source, r.key, r.reason)
        return result.changed

    def _shared_job(self, ctx: StepContext) -> CopyJob:
        """The job of this run's bindings, opened on first use and kept between the plan
        and the batches (its connections, its duplicate-key answer, the range read
        ahead), closed after the last range or on an error."""
        key = (ctx.run_id, id(ctx.use(self.source)), id(ctx.use(self.target)))
        if self._cached is None or self._cached[0] != key:
            self._close_job()
            job = self._job(ctx)
            self._cached = (key, job, None, {})
            self._finalizer = weakref.finalize(self, job.close)
        return self._cached[1]

    def _open_job(
        self, ctx: StepContext
    ) -> tuple[CopyJob, list[KeyRange], dict[int, Future[Prepared]]]:
        """The shared job with its ranges (stored in the target on first use, so a resumed
        copy replays them) and the ranges read ahead."""
        job = self._shared_job(ctx)
        assert self._cached is not None
        key, _, ranges, ahead = self._cached
        if ranges is None:
            job.start_losers()
            ranges = job.plan_batches(ctx.run_id, self.name)
            self._cached = (key, job, ranges, ahead)
        return job, ranges, ahead

    def _close_job(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._cached is not None:
            _, job, _, ahead = self._cached
            self._cached = None
            for fut in ahead.values():
                fut.cancel()
                with suppress(BaseException):
                    fut.result()
            job.close()

    def _qualified(self) -> str:
        schema, _, name = self.spec.mapping.target.rpartition(".")
        return f"{schema or 'public'}.{name}"

    def record_owned(self, ctx: StepContext) -> None:
        """The target table as the copy left it: its rollback empties the table, which is
        right only while it holds exactly the rows the copy put there."""
        if ctx.state.get("target_rows_before") != 0:
            return
        with ctx.use(self.target).transaction() as conn:
            digest = owned.pg_table_digest(conn, self._qualified())
        ctx.save_state(owned_table=digest.to_json())

    def rollback_blockers(self, ctx: StepContext) -> list[str]:
        target = ctx.use(self.target)
        if "owned_table" not in ctx.state or not target.ledger_batches(ctx.run_id, self.name):
            return []
        then = owned.Digest.from_json(ctx.state["owned_table"])
        with target.transaction() as conn:
            now = owned.pg_table_digest(conn, self._qualified())
        if now == then:
            return []
        return [
            f"table {self._qualified()} was filled by this run and has changed since "
            f"({now.count} row(s) now, {then.count} when the copy finished); emptying it "
            "would remove rows that are not this run's"
        ]

    def rollback(self, ctx: StepContext) -> None:
        target = ctx.use(self.target)
        if not target.ledger_batches(ctx.run_id, self.name):
            return
        if ctx.state.get("target_rows_before") != 0:
            raise PolicyError(
                f"step {self.name!r} copied into {self.spec.mapping.target}, which already held "
                "rows; there is no row-level inverse of that copy",
                hint=f"restore the target from the run's backup: "
                f"`handrail backups restore {ctx.run_id}`",
            )
        with target.transaction() as conn:
            conn.execute(f"DELETE FROM {_target_table(self.spec.mapping)}".encode())
            for seq, last, called in ctx.state.get("sequences", []):
                conn.execute("SELECT setval(%s, %s, %s)", (seq, last, called))
            target.ledger_clear(ctx.run_id, self.name, conn=conn)


class Parity(Check):
    """Source and target hold the same rows for the mapped columns (after the mapping's
    conversions), by natural key; the evidence names missing, extra and different keys."""

    def __init__(
        self,
        source: SQLite | Postgres,
        target: SQLite | Postgres,
        mapping: TableMap | CopySpec,
        *,
        name: str | None = None,
        samples: int = 10,
    ) -> None:
        m = mapping.mapping if isinstance(mapping, CopySpec) else mapping
        super().__init__(name or f"parity {m.source} = {m.target}")
        self.source, self.target, self.mapping, self.samples = source, target, mapping, samples

    def describe(self) -> str:
        m = self.mapping.mapping if isinstance(self.mapping, CopySpec) else self.mapping
        return (
            f"{self.source.name}.{m.source} and {self.target.name}.{m.target} hold the same "
            f"rows by {', '.join(m.key)} (segment hashes in each database)"
        )

    def evaluate(self, ctx: StepContext, baseline: Any) -> CheckResult:
        src = ctx.bindings.get(self.source.name, self.source)
        tgt = ctx.bindings.get(self.target.name, self.target)
        assert isinstance(src, SQLite | Postgres)
        assert isinstance(tgt, SQLite | Postgres)
        report = parity(src, tgt, self.mapping, samples=self.samples)
        return self.result(
            report.equal,
            {
                "source_rows": report.source_rows,
                "target_rows": report.target_rows,
                "segments": report.segments,
                "segments_differing": report.segments_differing,
                "missing": [list(k) for k in report.missing[:20]],
                "extra": [list(k) for k in report.extra[:20]],
                "different": [list(k) for k in report.different[:20]],
                "samples": [repr(s) for s in report.samples[: self.samples]],
            },
            "" if report.equal else report.summary(),
        )
