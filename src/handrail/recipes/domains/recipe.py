"""The domains recipe: the domain-categorization backfill and its push to PeerTube.

It rewrites a hand-written runbook and its blast-radius table. What the hand-written
version did and what this does instead:

- Its rollback of a bad backfill was ``UPDATE documents SET recon_domain = NULL`` for every
  row, which also wiped assignments that did not come from the run; here rollback restores
  exactly the rows this run changed, and leaves rows someone edited since (reported).
- Its push rollback set every category >= 100 to NULL, losing PeerTube's own categories
  and anything set before; here each video's prior category is recorded and put back.
- Its destructive step deleted concept directories and relied on an off-site rsync hours
  old; here they go to the run's quarantine (a rename) and come back byte-identical.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...checks import (
    ColumnsExist,
    IndexExists,
    PlanDistribution,
    Predicate,
    Sample,
    SchemaSuperset,
)
from ...engine.context import StepContext
from ...errors import ResourceError
from ...model import BlastRadius, CheckResult, Plan
from ...resources import Directory, SQLite
from ...runbook import Check, Gate, Runbook, Step
from ...steps.backfill import Backfill, deferred
from ...steps.sql import AddColumns, CreateIndex
from .logic import CATEGORY_OF, COLUMNS, PUSHABLE, Catalogue, pass1, pass2, uuid_of

NAME = "domains"
SUMMARY = "RECON domain categorization: schema, backfill, tiebreaker, PeerTube push, reprocess"
NEW_COLUMNS = {
    "recon_domain": "TEXT",
    "recon_domain_status": "TEXT",
    "recon_domain_assigned_at": "TEXT",
    "peertube_category_pushed_at": "TEXT",
}
INDEX = "idx_documents_recon_domain_status"
#: the investigation's benchmarks the dry run is compared with (shares of documents, %)
BENCHMARK = {"assigned": 94.8, "tied_pass_1": 5.2}
REPROCESS_BENCHMARK = {"needs_reprocess": 19.5}
#: the statuses whose category is pushed, as an SQL list
PUSHABLE_SQL = ", ".join(f"'{s.value}'" for s in sorted(PUSHABLE))

if TYPE_CHECKING:  # PostgreSQL and HTTP stay optional until the push is built
    from ...resources.http import HTTPService
    from ...resources.postgres import Postgres
    from ...steps.http_push import HTTPPush


class NothingLeftOr(Check):
    """The benchmark check ``inner``, unless pass 1 has nothing left to write because every
    document it can decide was decided before (a later run, pushing decisions such as
    ``manual_assigned`` ones): then a pass, with that evidence. No rows to write on a table
    where nothing is decided yet is still the inner check's fail."""

    def __init__(self, inner: PlanDistribution, recon: SQLite) -> None:
        super().__init__(inner.name)
        self.inner, self.recon = inner, recon

    def describe(self) -> str:
        return f"{self.inner.describe()}; or nothing left to write, all decided before"

    def evaluate(self, ctx: StepContext, baseline: Any) -> CheckResult:
        if ctx.plan is None or ctx.plan.counts.get("change", 1) != 0:
            return self.inner.evaluate(ctx, baseline)
        ((decided, undecided),) = ctx.use(self.recon).query(
            "SELECT count(recon_domain_status), count(*) - count(recon_domain_status) "
            "FROM documents"
        )
        if not decided:
            return self.inner.evaluate(ctx, baseline)
        return self.result(
            True,
            {
                "rows_to_write": 0,
                "decided_before": decided,
                "undecided": undecided,
                "message": "nothing left to assign: every document pass 1 can decide was "
                "decided by an earlier run",
            },
        )


# -- the RECON side: schema, pass 1, tiebreaker -------------------------------------------
def schema_change(recon: SQLite) -> AddColumns:
    """Step 1: the four new nullable columns on documents."""
    return AddColumns(
        "schema change",
        recon,
        table="documents",
        columns=NEW_COLUMNS,
        blast=BlastRadius(
            changes="4 new nullable columns in recon.db documents",
            worst_case="an ALTER fails: the transaction leaves no column behind",
            detection="the schema gate's column and index checks",
        ),
    )


def status_index(recon: SQLite) -> CreateIndex:
    """Step 2: the status index, gated on the whole schema change being in place."""
    return CreateIndex(
        "status index",
        recon,
        index=INDEX,
        table="documents",
        columns=["recon_domain_status"],
        gates=[
            Gate(
                "schema verified",
                checks=[
                    ColumnsExist(recon, "documents", list(NEW_COLUMNS)),
                    IndexExists(recon, INDEX),
                    SchemaSuperset(recon),
                ],
            )
        ],
        blast=BlastRadius(
            changes=f"index {INDEX} on documents",
            worst_case="index build fails: nothing created",
            detection="the schema gate",
        ),
    )


def benchmark_checks(recon: SQLite, tolerance_pp: float) -> list[Check]:
    """Pass 1's dry-run gate: the planned status shares against the investigation's
    benchmarks (unless every document pass 1 can decide was decided before)."""
    return [
        NothingLeftOr(
            PlanDistribution(
                "recon_domain_status",
                BENCHMARK,
                tolerance_pp=tolerance_pp,
                among=list(BENCHMARK),
                name="assigned vs tied",
            ),
            recon,
        ),
        NothingLeftOr(
            PlanDistribution(
                "recon_domain_status",
                REPROCESS_BENCHMARK,
                tolerance_pp=tolerance_pp,
                name="needs_reprocess share",
            ),
            recon,
        ),
    ]


def backfill_pass1(
    recon: SQLite,
    concepts: Directory,
    root: Path,
    *,
    assigned_at: str,
    tolerance_pp: float,
    batch_size: int,
) -> Backfill:
    """Step 3: pass 1 assigns a domain from each document's concepts; a dry-run gate
    against the benchmarks, then a human spot check of 20 assignments."""
    return Backfill(
        "backfill pass 1",
        recon,
        table="documents",
        key="hash",
        columns=list(COLUMNS),
        compute=pass1(root / "concepts", assigned_at=assigned_at),
        reads=[concepts],
        batch_size=batch_size,
        gates=[
            Gate(
                "dry run matches the benchmarks",
                at="plan",
                checks=benchmark_checks(recon, tolerance_pp),
                instructions="Halt and investigate any deviation beyond the tolerance.",
            ),
            Gate(
                "spot check 20 assignments",
                approval=True,
                checks=[
                    Sample(
                        recon,
                        "SELECT hash, filename, recon_domain FROM documents "
                        "WHERE recon_domain_status = 'assigned' ORDER BY hash",
                        20,
                        instructions="open concepts/<hash>/ for a few; is the domain plausible?",
                    )
                ],
            ),
        ],
        blast=BlastRadius(
            changes="recon_domain, recon_domain_status, recon_domain_assigned_at on ~22K rows",
            worst_case="wrong domain assignments",
            detection="the dry-run distribution gate; the 20-document spot check",
        ),
    )


def tiebreaker(
    recon: SQLite, concepts: Directory, root: Path, *, assigned_at: str, batch_size: int
) -> Backfill:
    """Step 4: pass 2 resolves pass 1's ties from the channel's other videos; a human
    spot-checks 5 resolutions."""
    return Backfill(
        "tiebreaker",
        recon,
        table="documents",
        key="hash",
        columns=list(COLUMNS),
        compute=pass2(
            root / "concepts", Catalogue.sqlite(root / "recon.db"), assigned_at=assigned_at
        ),
        where="recon_domain_status = 'tied_pass_1'",
        reads=[concepts],
        batch_size=batch_size,
        gates=[
            Gate(
                "spot check 5 tie resolutions",
                approval=True,
                checks=[
                    Sample(
                        recon,
                        "SELECT hash, filename, recon_domain, recon_domain_status FROM documents "
                        "WHERE recon_domain_status = 'tied_pass_2' ORDER BY hash",
                        5,
                        instructions="is each domain plausible for the channel's other videos?",
                    )
                ],
            )
        ],
        blast=BlastRadius(
            changes="~1,000 rows: tied_pass_1 to tied_pass_2 / tied_manual / assigned",
            worst_case="wrong tiebreaker resolutions",
            detection="the 5-item spot check; the status breakdown",
        ),
    )


def backfill_steps(
    root: str | Path, *, assigned_at: str, tolerance_pp: float = 5.0, batch_size: int = 1000
) -> tuple[SQLite, Directory, list[Step]]:
    """Schema change, pass 1 and the tiebreaker: the part of the recipe on recon.db.
    ``root`` is RECON's data directory (a str or a Path, as for :func:`build`)."""
    root = Path(root)
    recon = SQLite("recon", root / "recon.db")
    concepts = Directory("concepts", root / "concepts", backup_when_read=False)
    if not (root / "recon.db").exists():
        raise ResourceError(
            f"recon.db not found in {root}", hint="point the runbook at RECON's data directory"
        )
    return (
        recon,
        concepts,
        [
            schema_change(recon),
            status_index(recon),
            backfill_pass1(
                recon,
                concepts,
                root,
                assigned_at=assigned_at,
                tolerance_pp=tolerance_pp,
                batch_size=batch_size,
            ),
            tiebreaker(recon, concepts, root, assigned_at=assigned_at, batch_size=batch_size),
        ],
    )


# -- the PeerTube side: push, stamp, reprocess --------------------------------------------
@dataclass(frozen=True)
class PushQueue:
    """Push categories' work list: each decided, not yet pushed document that is a video
    (a UUID in its path) with a domain that has a PeerTube category."""

    recon: SQLite

    def items(self, ctx: StepContext) -> list[dict[str, Any]]:
        rows = ctx.use(self.recon).query(
            "SELECT d.hash, d.recon_domain, c.path FROM documents d JOIN catalogue c "
            f"ON c.hash = d.hash WHERE d.recon_domain_status IN ({PUSHABLE_SQL}) "
            "AND d.peertube_category_pushed_at IS NULL ORDER BY d.hash"
        )
        out = []
        for _hash, domain, path in rows:
            uuid = uuid_of(path)
            if uuid is not None and domain in CATEGORY_OF:
                out.append({"uuid": uuid, "category": CATEGORY_OF[domain]})
        return out


@dataclass
class StageCounts:
    """Push categories' stage gate: PeerTube's own count per category, for the videos
    pushed so far, equals ours. ``push`` is the step it gates, bound once it exists."""

    peertube_db: Postgres
    push: HTTPPush | None = None

    def __call__(self, ctx: StepContext) -> tuple[bool | None, dict[str, Any]]:
        assert ctx.journal is not None
        assert self.push is not None, "bound by push_categories()"
        push = self.push
        # A video PeerTube does not know (404) is a journalled reject, not a pushed video.
        rejected = {r["key"] for r in ctx.journal.rejects(ctx.run_id, ctx.step)}
        pushed = [
            i
            for _, _, items, status in ctx.journal.batches(ctx.run_id, ctx.step)
            if status == "done"
            for i in items
            if push.item_key(i) not in rejected
        ]
        wanted = Counter(int(i["category"]) for i in pushed)
        rows = ctx.use(self.peertube_db).query(
            "SELECT category, count(*) FROM video WHERE uuid::text = ANY(%s) GROUP BY category",
            ([i["uuid"] for i in pushed],),
        )
        seen = {int(c): int(n) for c, n in rows if c is not None}
        wrong = {
            c: (wanted.get(c, 0), seen.get(c, 0))
            for c in set(wanted) | set(seen)
            if wanted.get(c, 0) != seen.get(c, 0)
        }
        return not wrong, {
            "pushed": len(pushed),
            "rejected": len(rejected),
            "expected": dict(sorted(wanted.items())),
            "peertube": dict(sorted(seen.items())),
            "message": f"categories differ: {wrong}" if wrong else "",
        }


def push_categories(
    recon: SQLite, peertube: HTTPService, peertube_db: Postgres, stages: Sequence[int | None]
) -> HTTPPush:
    """Step 5: each video's category through PeerTube's API, in stages, each stage gated
    by PeerTube's own per-category counts."""
    from ...steps.http_push import HTTPPush

    counts = StageCounts(peertube_db)
    push = HTTPPush(
        "push categories",
        peertube,
        items=PushQueue(recon).items,
        path="/api/v1/videos/{uuid}",
        field="category",
        stages=list(stages),
        reads=[recon, peertube_db],
        gates=[
            Gate(
                "per-category counts",
                at="stage",
                checks=[
                    Predicate(
                        "PeerTube counts per category",
                        counts,
                        "PeerTube's count per category for the pushed videos equals the push's",
                    )
                ],
            )
        ],
        blast=BlastRadius(
            changes="PeerTube video.category on the assigned videos (~20K)",
            worst_case="wrong categories visible to every PeerTube user",
            detection="the per-category count gate after each stage; PeerTube's UI labels",
        ),
    )
    counts.push = push
    return push


def stamp_pushed(recon: SQLite, push: HTTPPush, assigned_at: str) -> StampPushed:
    """Step 6: stamp the documents whose push PeerTube took (the rest are pushed again
    by the next run)."""
    return StampPushed(
        "stamp pushed",
        recon,
        push=push,
        assigned_at=assigned_at,
        where=f"recon_domain_status IN ({PUSHABLE_SQL}) AND peertube_category_pushed_at IS NULL "
        "AND hash IN (SELECT hash FROM catalogue)",
        blast=BlastRadius(
            changes="peertube_category_pushed_at on the documents whose push PeerTube took",
            worst_case="a document re-pushed on the next run (harmless: absolute)",
            detection="counts of stamped vs pushed",
        ),
    )


@dataclass(frozen=True)
class StaleConcepts:
    """Reprocess missing's work list: the concept directories of needs_reprocess documents
    that left the pipeline."""

    recon: SQLite
    concepts: Directory

    def select(self, ctx: StepContext) -> list[str]:
        rows = ctx.use(self.recon).query(
            "SELECT hash FROM documents WHERE recon_domain_status = 'needs_reprocess' "
            "AND status != 'catalogued' ORDER BY hash"
        )
        root_dir = ctx.use(self.concepts).path
        return [h for (h,) in rows if (root_dir / h).exists()]


@dataclass(frozen=True)
class Requeued:
    """Reprocess missing's stage gate: every quarantined document is back at catalogued."""

    recon: SQLite

    def __call__(self, ctx: StepContext) -> tuple[bool | None, dict[str, Any]]:
        return _requeued(ctx, self.recon)


def reprocess_missing(
    recon: SQLite, concepts: Directory, reprocess_stages: Sequence[int | None]
) -> Step:
    """Step 7, destructive: stale concept directories go to the run's quarantine (a
    rename, undone byte-identical) and their documents back to catalogued, in stages."""
    from ...steps.quarantine import QuarantineDelete, RowUpdate

    return QuarantineDelete(
        "reprocess missing",
        concepts,
        select=StaleConcepts(recon, concepts).select,
        on_deleted=RowUpdate(recon, "documents", "hash", {"status": "catalogued"}),
        stages=list(reprocess_stages),
        gates=[
            Gate(
                "items re-entered the pipeline",
                at="stage",
                checks=[
                    Predicate(
                        "re-queued",
                        Requeued(recon),
                        "every quarantined document is back at status catalogued",
                    )
                ],
            )
        ],
        blast=BlastRadius(
            changes="moves concept directories of needs_reprocess documents to the quarantine; "
            "sets their status to catalogued",
            worst_case="re-enrichment fails (API down, quota): concepts gone from the live tree",
            detection="queued count; concept dirs missing; the stage gate",
        ),
    )


def push_steps(
    root: Path,
    recon: SQLite,
    concepts: Directory,
    *,
    peertube_url: str,
    peertube_dsn: str,
    token_env: str,
    assigned_at: str,
    rate_limit: float | None = None,
    stages: Sequence[int | None] = (100, 1000, None),
    reprocess_stages: Sequence[int | None] = (10, 100, None),
) -> list[Step]:
    """Push to PeerTube (staged, gated by per-category counts), stamp what was pushed, and
    the destructive reprocess-missing step through the quarantine."""
    from ...resources.http import HTTPService
    from ...resources.postgres import Postgres

    peertube = HTTPService("peertube", peertube_url, token_env=token_env, rate_limit=rate_limit)
    peertube_db = Postgres("peertube_db", peertube_dsn)  # the whole database, as the seed did
    push = push_categories(recon, peertube, peertube_db, stages)
    return [
        push,
        stamp_pushed(recon, push, assigned_at),
        reprocess_missing(recon, concepts, reprocess_stages),
    ]


class StampPushed(Backfill):
    """Set ``peertube_category_pushed_at`` on the documents whose video now holds the
    category the push step of the same run was to write: confirmed by the push, or already
    equal. A document the push rejected (PeerTube answered 404), skipped (no video UUID in
    its path) or did not finish stays unstamped, so the next run pushes it again.

    What the push did is read from its per-item store (``push.sqlite`` in the push step's
    run directory). In a dry run, before the push, the plan counts every document the push
    would send, the most the step can stamp.
    """

    def __init__(
        self, name: str, recon: SQLite, *, push: Any, assigned_at: str, where: str, **kw: Any
    ) -> None:
        self.push = push
        self.assigned_at = assigned_at
        # The hashes this execution may stamp. compute() sees only the row, so plan, items
        # and apply_batch set it from their context before the backfill machinery runs.
        self._allowed: frozenset[str] = frozenset()
        super().__init__(
            name,
            recon,
            table="documents",
            key="hash",
            columns=["peertube_category_pushed_at"],
            compute=self._stamp,
            where=where,
            read=["hash"],
            **kw,
        )

    def _stamp(self, row: dict[str, Any]) -> dict[str, Any] | None:
        if row["hash"] not in self._allowed:
            return None
        return {"peertube_category_pushed_at": self.assigned_at}

    def _applied(self, ctx: StepContext) -> set[tuple[str, int]] | None:
        """(uuid, category) of every item the push confirmed or found already set; None in
        a dry run before the push (then every item it would send counts)."""
        from ...steps.http_push import STORE_FILE, ItemStatus, PushStore

        path = ctx.work_dir / self.push.name / STORE_FILE
        if not path.exists():
            return None if ctx.dry_run else set()
        store = PushStore(path)
        try:
            rows = store.rows([ItemStatus.CONFIRMED, ItemStatus.UNCHANGED])
        finally:
            store.close()
        return {(str(r.item["uuid"]), int(r.item["category"])) for r in rows}

    def _choose(self, ctx: StepContext) -> None:
        applied = self._applied(ctx)
        rows = ctx.use(self.db).query(
            "SELECT d.hash, d.recon_domain, c.path FROM documents d JOIN catalogue c "
            "ON c.hash = d.hash WHERE d.peertube_category_pushed_at IS NULL"
        )
        allowed = set()
        for doc_hash, domain, path in rows:
            uuid = uuid_of(path)
            if uuid is None or domain not in CATEGORY_OF:
                continue  # never sent
            if applied is None or (uuid, CATEGORY_OF[domain]) in applied:
                allowed.add(doc_hash)
        self._allowed = frozenset(allowed)

    def plan(self, ctx: StepContext) -> Plan:
        try:
            self._choose(ctx)
        except sqlite3.OperationalError as exc:
            return deferred(self, str(exc))  # the columns come from an earlier step
        return super().plan(ctx)

    def items(self, ctx: StepContext) -> list[Any] | None:
        self._choose(ctx)
        return [h for h in super().items(ctx) or [] if h in self._allowed]

    def apply_batch(self, ctx: StepContext, batch: int, items: list[Any]) -> int:
        self._choose(ctx)
        return super().apply_batch(ctx, batch, items)


def _requeued(ctx: StepContext, recon: SQLite) -> tuple[bool | None, dict[str, Any]]:
    assert ctx.journal is not None
    moved = [
        i
        for _, _, items, status in ctx.journal.batches(ctx.run_id, ctx.step)
        if status == "done"
        for i in items
    ]
    if not moved:
        return True, {"moved": 0}
    marks = ",".join("?" * len(moved))
    rows = ctx.use(recon).query(
        f"SELECT count(*) FROM documents WHERE status = 'catalogued' AND hash IN ({marks})",
        moved,
    )
    n = rows[0][0]
    return n == len(moved), {
        "moved": len(moved),
        "catalogued": n,
        "message": f"{len(moved) - n} not re-queued" if n != len(moved) else "",
    }


def build(
    root: str | Path,
    *,
    peertube_url: str | None = None,
    peertube_dsn: str | None = None,
    token_env: str = "PEERTUBE_TOKEN",
    assigned_at: str = "2026-01-01T00:00:00+00:00",
    tolerance_pp: float = 5.0,
    **kw: Any,
) -> Runbook:
    """The recipe's runbook on RECON's data directory ``root`` (recon.db, concepts/).

    With ``peertube_url`` and ``peertube_dsn`` it includes the push to PeerTube (through its
    API; the database is read for the per-category gates and snapshotted first) and the
    reprocess-missing step; without them, the RECON-side steps only. ``kw`` goes to
    :func:`push_steps` (``stages``, ``reprocess_stages``, ``rate_limit``).
    """
    root = Path(root)
    recon, concepts, steps = backfill_steps(
        root, assigned_at=assigned_at, tolerance_pp=tolerance_pp
    )
    if peertube_url and peertube_dsn:
        steps += push_steps(
            root,
            recon,
            concepts,
            peertube_url=peertube_url,
            peertube_dsn=peertube_dsn,
            token_env=token_env,
            assigned_at=assigned_at,
            **kw,
        )
    return Runbook(
        NAME,
        steps=steps,
        description=SUMMARY,
        prerequisites=[
            "no enrichment or embedding workers running on RECON",
            "the PeerTube plugin with categories 100..117 installed",
        ],
    )
