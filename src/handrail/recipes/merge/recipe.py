"""The merge recipe: two diverged SQLite copies (processing and dashboard) into one PostgreSQL.

What the hand-written plan did, and what this does instead:

- Its script sent Python dicts to the driver unadapted and ran every row in one
  transaction, so one bad row aborted all; here rows are converted by a declared mapping,
  copied in key-ordered batches that commit with their ledger row, and a bad row is a
  journalled reject that never aborts its neighbours.
- Its validation logged counts; here a parity gate proves the target holds exactly the
  merged rows (hashing segments inside each database) and names the keys that differ.
- The disaster it fixed was a whole-file sync resurrecting deleted videos and losing the
  67 curated records: here deletions on the dashboard since the last sync are honoured
  (see :mod:`handrail.recipes.merge.rules`) and every gate checks the curated records.
- The read switch flips last, and rolling back flips it back first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ...checks import Predicate, RecordsPreserved
from ...engine.context import StepContext
from ...errors import ResourceError
from ...model import BlastRadius
from ...resources import JSONFile, SQLite
from ...resources.postgres import Postgres
from ...runbook import Check, Gate, Runbook
from ...steps.json_import import ImportRecords, RecordError, SourceRecord
from ...steps.json_transform import TransformJSON
from ...steps.pg_sql import PgSQL
from ...steps.sql import CreateSchema
from ...tablecopy.mapping import Column, TableMap, boolean, jsonb, timestamptz
from ...tablecopy.steps import CopyTable, Parity
from . import rules

NAME = "merge"
SUMMARY = "two diverged SQLite copies merged into PostgreSQL, with a parity proof"
#: the two merge steps, named by the reject gate that judges them together
MERGE_CONTENT, MERGE_SUMMARIES = "merge copies", "merge summaries"

DROP = [
    "DROP TABLE IF EXISTS content_summaries",
    "DROP TABLE IF EXISTS content",
    "DROP FUNCTION IF EXISTS content_summaries_check_latest()",
    "DROP FUNCTION IF EXISTS content_summaries_assert_latest(text, text)",
    "DROP FUNCTION IF EXISTS content_stamp_updated_at()",
]
STAGING_DDL = """
CREATE TABLE IF NOT EXISTS content (
    video_id TEXT PRIMARY KEY, id TEXT, title TEXT, canonical_url TEXT, thumbnail_url TEXT,
    published_at TEXT, indexed_at TEXT, duration_seconds INTEGER, has_audio INTEGER,
    channel_name TEXT, category TEXT, subcategory TEXT, subcategories_json TEXT,
    topics_json TEXT, summary TEXT, analysis_json TEXT
);
CREATE TABLE IF NOT EXISTS summaries (
    video_id TEXT NOT NULL, variant TEXT NOT NULL, text TEXT NOT NULL,
    revision INTEGER NOT NULL, is_latest INTEGER NOT NULL, created_at TEXT,
    PRIMARY KEY (video_id, variant, revision)
);
"""
JSON_COLUMNS = ("subcategories_json", "topics_json", "analysis_json")


def _stamp(row: dict[str, Any]) -> Any:
    # created_at/updated_at of a migrated row: when the video was indexed, not when the
    # copy ran, so a resumed or rehearsed copy writes the same values (the schema's
    # DEFAULT now() would not).
    return row.get("indexed_at") or "1970-01-01T00:00:00+00:00"


CONTENT_MAP = TableMap(
    "content",
    "content",
    key=["video_id"],
    columns=[
        *(
            Column(c, convert=timestamptz())
            if c in ("published_at", "indexed_at")
            else Column(c, convert=jsonb())
            if c in JSON_COLUMNS
            else Column(c, convert=boolean())
            if c == "has_audio"
            else Column(c)
            for c in rules.CONTENT_COLUMNS
        ),
        Column("created_at", compute=_stamp, kind="timestamp", needs=("indexed_at",)),
        Column("updated_at", compute=_stamp, kind="timestamp", needs=("indexed_at",)),
    ],
)


SUMMARY_MAP = TableMap(
    "summaries",
    "content_summaries",
    key=["video_id", "variant", "revision"],
    columns=[
        Column("video_id"),
        Column("variant"),
        Column("text"),
        Column("revision"),
        Column("is_latest", convert=boolean()),
        Column("created_at", convert=timestamptz()),
    ],
)


def _staged(value: Any, column: str) -> Any:
    """A merged value as the staging SQLite table holds it (the copy converts it back)."""
    if value is None:
        return None
    if column in JSON_COLUMNS:
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return int(value)
    return value


class _Rejected:
    """The value of a :class:`SourceRecord` the merge left out: the mapper raises
    :class:`RecordError`, so the record becomes a journalled reject with this reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


@dataclass(frozen=True)
class Staged:
    """Merge copies / merge summaries: a merged record as a staging row of ``columns``;
    a record the merge left out raises, so it becomes a journalled reject."""

    columns: tuple[str, ...]

    def row(self, rec: SourceRecord) -> dict[str, Any]:
        if isinstance(rec.value, _Rejected):
            raise RecordError(rec.value.reason)
        return {c: _staged(rec.value[c], c) for c in self.columns}


def read_from_postgres(old: Any) -> Any:
    """Flip read switch: the dashboard reads PostgreSQL, and the switch remembers what it
    read before."""
    return {"read_from": "postgres", "previous": (old or {}).get("read_from", "sqlite")}


# -- the resources and what the merge reads of them ---------------------------------------
@dataclass(frozen=True)
class Copies:
    """The two SQLite copies, the staging database, the PostgreSQL target and the read
    switch, with what the merge rules read of the copies (last sync, curated videos).

    Its methods read through ``ctx.use``, so a rehearsal reads its clones."""

    processing: SQLite
    dashboard: SQLite
    staging: SQLite
    target: Postgres
    switch: JSONFile
    last_sync: datetime
    curated: tuple[str, ...]

    @classmethod
    def of(cls, root: Path, dsn: str) -> Copies:
        for name in ("processing.db", "dashboard.db", "last_sync.json"):
            if not (root / name).exists():
                raise ResourceError(
                    f"{root / name} not found",
                    hint="the directory needs both copies and last_sync.json",
                )
        return cls(
            processing=SQLite("processing", root / "processing.db"),
            dashboard=SQLite("dashboard", root / "dashboard.db"),
            staging=SQLite("staging", root / "merged.db", create=True),
            target=Postgres("target", dsn),
            switch=JSONFile("read_switch", root / "read_switch.json", create=True),
            last_sync=rules.load_last_sync(root / "last_sync.json"),
            curated=tuple(rules.curated_ids(root / "dashboard.db")),
        )

    def curated_query(self) -> str:
        """The dashboard's curated rows, as the curated-records checks compare them."""
        marks = ", ".join(f"'{v}'" for v in self.curated)
        return (
            "SELECT id, video_id, category, subcategory, subcategories_json FROM "
            f"content WHERE video_id IN ({marks}) ORDER BY id"
        )

    def merged(self, ctx: StepContext) -> list[SourceRecord]:
        """Merge copies: one record per surviving video, and one reject per left-out one."""
        rejected: dict[str, str] = {}
        rows = rules.expected_merge(
            ctx.use(self.processing).path,
            ctx.use(self.dashboard).path,
            self.last_sync,
            rejects=rejected,
        )
        return [
            *(SourceRecord("merge", r["video_id"], r) for r in rows),
            *(SourceRecord("merge", v, _Rejected(why)) for v, why in rejected.items()),
        ]

    def merged_summaries(self, ctx: StepContext) -> list[SourceRecord]:
        """Merge summaries: one record per summary revision kept, one reject per group left."""
        rejected: dict[str, str] = {}
        rows = rules.expected_summaries(
            ctx.use(self.processing).path,
            ctx.use(self.dashboard).path,
            self.last_sync,
            rejects=rejected,
        )
        return [
            *(
                SourceRecord("merge", f"{r['video_id']}/{r['variant']}/{r['revision']}", r)
                for r in rows
            ),
            *(SourceRecord("merge", k, _Rejected(why)) for k, why in rejected.items()),
        ]

    def curated_in_target(self, ctx: StepContext) -> tuple[bool | None, dict[str, Any]]:
        """The target holds exactly the curated values the merge keeps; a curated video the
        merge rejected is a curated record lost, never accepted."""
        curated = self.curated
        rejected: dict[str, str] = {}
        want = {
            r["video_id"]: r
            for r in rules.expected_merge(
                ctx.use(self.processing).path,
                ctx.use(self.dashboard).path,
                self.last_sync,
                rejects=rejected,
            )
            if r["video_id"] in set(curated)
        }
        got = {
            r[0]: r
            for r in ctx.use(self.target).query(
                "SELECT video_id, category, subcategory, subcategories_json FROM content "
                "WHERE video_id = ANY(%s)",
                (list(curated),),
            )
        }
        wrong = sorted(
            v
            for v, w in want.items()
            if v not in got
            or (w["category"], w["subcategory"], w["subcategories_json"]) != tuple(got[v][1:])
        )
        lost = {v: rejected[v] for v in curated if v in rejected}
        wrong = sorted([*wrong, *lost])
        return not wrong, {
            "curated": len(curated),
            "in_target": len(got),
            "wrong": wrong[:20],
            "rejected": [{"video_id": v, "reason": r} for v, r in list(lost.items())[:20]],
            "message": f"{len(wrong)} curated record(s) differ" if wrong else "",
        }

    def latest_ok(self, ctx: StepContext) -> tuple[bool | None, dict[str, Any]]:
        """Copy summaries: exactly one latest revision per variant, the highest."""
        return _latest_ok(ctx, self.target)


def curated_kept(copies: Copies) -> list[Check]:
    """At every gate: the dashboard's curated rows are as before the run, and (once
    copied) the target holds exactly the curated values the merge keeps."""
    return [
        RecordsPreserved(copies.dashboard, copies.curated_query(), name="curated records intact"),
        Predicate(
            "curated records in the target",
            copies.curated_in_target,
            f"the {len(copies.curated)} curated records hold the dashboard's values",
        ),
    ]


@dataclass(frozen=True)
class RejectsWithin:
    """Merge summaries' gate: the rejects of the merge steps named, against ``max_share``
    of their records (by step name: the gate belongs to the last of them)."""

    steps: tuple[str, ...]
    max_share: float

    def __call__(self, ctx: StepContext) -> tuple[bool | None, dict[str, Any]]:
        return _rejects_ok(ctx, self.steps, self.max_share)


# -- the steps, in runbook order ----------------------------------------------------------
def create_target_schema(copies: Copies) -> PgSQL:
    """Step 1: PostgreSQL's content and content_summaries tables with their triggers."""
    return PgSQL(
        "create target schema",
        copies.target,
        up=rules.schema_sql(),
        down=DROP,
        gates=[
            Gate(
                "schema in place",
                checks=[
                    RecordsPreserved(
                        copies.dashboard,
                        copies.curated_query(),
                        name="curated records intact",
                        expect_count=None,
                    )
                ],
            )
        ],
        blast=BlastRadius(
            changes="tables content and content_summaries, their triggers",
            worst_case="a statement fails: the transaction creates nothing",
            detection="the step's transaction error",
        ),
    )


def create_staging(copies: Copies) -> CreateSchema:
    """Step 2: merged.db beside the copies, where the merge lands before the copy."""
    return CreateSchema(
        "create staging",
        copies.staging,
        ddl=STAGING_DDL,
        blast=BlastRadius(
            changes="merged.db beside the copies (the merge, before the copy)",
            worst_case="none: removed on rollback",
            detection="-",
        ),
    )


def merge_copies(copies: Copies) -> ImportRecords:
    """Step 3: the merge rules' content rows into the staging database, by video_id."""
    return ImportRecords(
        MERGE_CONTENT,
        read=copies.merged,
        db=copies.staging,
        table="content",
        key="video_id",
        mapper=Staged(rules.CONTENT_COLUMNS).row,
        reads=(copies.processing, copies.dashboard),
        blast=BlastRadius(
            changes="merged.db content: one row per surviving video_id",
            worst_case="a wrong precedence rule: caught by the curated and parity gates",
            detection="curated-records check; parity against the merge",
        ),
    )


def merge_summaries(copies: Copies, max_reject_share: float) -> ImportRecords:
    """Step 4: the summaries into staging; its gate stops the run, before anything is
    copied, when the merge rejected more than ``max_reject_share`` of its records."""
    return ImportRecords(
        MERGE_SUMMARIES,
        read=copies.merged_summaries,
        db=copies.staging,
        table="summaries",
        key=["video_id", "variant", "revision"],
        mapper=Staged(rules.SUMMARY_COLUMNS).row,
        reads=(copies.processing, copies.dashboard),
        gates=[
            Gate(
                "nothing rejected",
                checks=[
                    Predicate(
                        "rejects within the limit",
                        RejectsWithin((MERGE_CONTENT, MERGE_SUMMARIES), max_reject_share),
                        f"at most {max_reject_share:.1%} of the merged records rejected "
                        "(a reject is a video or summary group the target will not hold)",
                    )
                ],
            )
        ],
    )


def copy_content(copies: Copies, rows_per_batch: int) -> CopyTable:
    """Step 5: staging content into PostgreSQL in batches, gated by parity and curation."""
    return CopyTable(
        "copy content",
        copies.staging,
        copies.target,
        CONTENT_MAP,
        rows_per_batch=rows_per_batch,
        gates=[
            Gate(
                "content equals the merge",
                checks=[
                    Parity(copies.staging, copies.target, CONTENT_MAP),
                    *curated_kept(copies),
                ],
            )
        ],
        blast=BlastRadius(
            changes="PostgreSQL content: upsert by video_id, in batches",
            worst_case="a batch fails: earlier batches stay, resume continues",
            detection="the parity gate names missing, extra, different keys",
        ),
    )


def copy_summaries(copies: Copies) -> CopyTable:
    """Step 6: the summaries into PostgreSQL in one batch: a (video, variant)'s revisions
    must commit together, since the "one latest revision" trigger is checked at commit."""
    return CopyTable(
        "copy summaries",
        copies.staging,
        copies.target,
        SUMMARY_MAP,
        rows_per_batch=10**9,
        gates=[
            Gate(
                "summaries equal the merge",
                checks=[
                    Parity(copies.staging, copies.target, SUMMARY_MAP),
                    Predicate(
                        "one latest revision per variant",
                        copies.latest_ok,
                        "exactly one latest, and it is the highest revision",
                    ),
                    *curated_kept(copies),
                ],
            )
        ],
    )


def flip_read_switch(copies: Copies) -> TransformJSON:
    """Step 7, last: the dashboard reads PostgreSQL (rolling back flips it back first)."""
    return TransformJSON(
        "flip read switch",
        copies.switch,
        read_from_postgres,
        gates=[Gate("switched", checks=curated_kept(copies))],
        blast=BlastRadius(
            changes="read_switch.json: the dashboard reads PostgreSQL",
            worst_case="the dashboard reads the new database too early",
            detection="the dashboard's health check",
        ),
    )


# -- the runbook --------------------------------------------------------------------------
def build(
    root: str | Path, *, dsn: str, rows_per_batch: int = 500, max_reject_share: float = 0.0
) -> Runbook:
    """The merge of ``root/processing.db`` and ``root/dashboard.db`` (with
    ``root/last_sync.json``) into the PostgreSQL database ``dsn``.

    A video with a value that does not convert is a reject (key and reason in the journal)
    and the rest are merged; the gate after the merge fails, naming the rejects, when more
    than ``max_reject_share`` of the merged records are rejected (by default: any), before
    anything is copied. A rejected curated video fails the curated checks at any share.
    """
    copies = Copies.of(Path(root), dsn)
    return Runbook(
        NAME,
        steps=[
            create_target_schema(copies),
            create_staging(copies),
            merge_copies(copies),
            merge_summaries(copies, max_reject_share),
            copy_content(copies, rows_per_batch),
            copy_summaries(copies),
            flip_read_switch(copies),
        ],
        description=SUMMARY,
        prerequisites=["stop the NAS auto-sync so neither copy changes during the run"],
    )


def _latest_ok(ctx: StepContext, target: Postgres) -> tuple[bool | None, dict[str, Any]]:
    bad = ctx.use(target).query(rules.CHECK_LATEST_SQL)
    return not bad, {
        "bad_groups": [list(map(str, r)) for r in bad[:20]],
        "message": f"{len(bad)} group(s) break the rule" if bad else "",
    }


def _rejects_ok(
    ctx: StepContext, steps: tuple[str, ...], max_share: float
) -> tuple[bool | None, dict[str, Any]]:
    """The merge's rejects, by key and reason, against ``max_share`` of its records."""
    assert ctx.journal is not None
    total, rejected = 0, []
    for step in steps:
        row = ctx.journal.step(ctx.run_id, step)
        total += int((row.plan or {}).get("counts", {}).get("records", 0))
        rejected += ctx.journal.rejects(ctx.run_id, step)
    share = len(rejected) / total if total else 0.0
    named = "; ".join(f"{r['key']} ({r['reason']})" for r in rejected[:5])
    more = f"; and {len(rejected) - 5} more" if len(rejected) > 5 else ""
    return share <= max_share, {
        "records": total,
        "rejected": len(rejected),
        "share": round(share, 6),
        "max_share": max_share,
        "rejects": [
            {"step": r["step"], "key": r["key"], "reason": r["reason"]} for r in rejected[:50]
        ],
        "message": f"{len(rejected)} of {total} merged records rejected (limit "
        f"{max_share:.1%}): {named}{more}; fix the values in the source copy, roll back and "
        "run again, or raise max_reject_share to go ahead without them",
    }
