"""Recipe D: two diverged SQLite copies (processing and dashboard) into one PostgreSQL.

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
from datetime import datetime
from pathlib import Path
from typing import Any

from ...checks import Predicate, RecordsPreserved
from ...context import StepContext
from ...errors import ResourceError
from ...model import BlastRadius
from ...ops.json_import import ImportRecords, RecordError, SourceRecord
from ...ops.json_transform import TransformJSON
from ...ops.pg_sql import PgSQL
from ...ops.sql import CreateSchema
from ...resources import JSONFile, SQLite
from ...resources.postgres import Postgres
from ...runbook import Check, Gate, Runbook
from ...tablecopy.mapping import Column, TableMap, boolean, jsonb, timestamptz
from ...tablecopy.steps import CopyTable, Parity
from . import rules

NAME = "merge"
SUMMARY = "two diverged SQLite copies merged into PostgreSQL, with a parity proof"

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


def _mapper(columns: tuple[str, ...]) -> Any:
    def mapper(rec: SourceRecord) -> dict[str, Any]:
        if isinstance(rec.value, _Rejected):
            raise RecordError(rec.value.reason)
        return {c: _staged(rec.value[c], c) for c in columns}

    return mapper


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
    root = Path(root)
    for name in ("processing.db", "dashboard.db", "last_sync.json"):
        if not (root / name).exists():
            raise ResourceError(
                f"{root / name} not found",
                hint="the directory needs both copies and last_sync.json",
            )
    processing = SQLite("processing", root / "processing.db")
    dashboard = SQLite("dashboard", root / "dashboard.db")
    staging = SQLite("staging", root / "merged.db", create=True)
    target = Postgres("target", dsn)
    switch = JSONFile("read_switch", root / "read_switch.json", create=True)
    last_sync = rules.load_last_sync(root / "last_sync.json")
    curated = rules.curated_ids(root / "dashboard.db")
    marks = ", ".join(f"'{v}'" for v in curated)

    def curated_kept() -> list[Check]:
        """At every gate: the dashboard's curated rows are as before the run, and (once
        copied) the target holds exactly the curated values the merge keeps."""
        checks: list[Check] = [
            RecordsPreserved(
                dashboard,
                "SELECT id, video_id, category, subcategory, subcategories_json FROM "
                f"content WHERE video_id IN ({marks}) ORDER BY id",
                name="curated records intact",
            )
        ]

        def in_target(ctx: StepContext) -> tuple[bool | None, dict[str, Any]]:
            rejected: dict[str, str] = {}
            want = {
                r["video_id"]: r
                for r in rules.expected_merge(
                    ctx.use(processing).path, ctx.use(dashboard).path, last_sync, rejects=rejected
                )
                if r["video_id"] in set(curated)
            }
            got = {
                r[0]: r
                for r in ctx.use(target).query(
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
            # A curated video the merge rejected is a curated record lost: never accepted.
            lost = {v: rejected[v] for v in curated if v in rejected}
            wrong = sorted([*wrong, *lost])
            return not wrong, {
                "curated": len(curated),
                "in_target": len(got),
                "wrong": wrong[:20],
                "rejected": [{"video_id": v, "reason": r} for v, r in list(lost.items())[:20]],
                "message": f"{len(wrong)} curated record(s) differ" if wrong else "",
            }

        return [
            *checks,
            Predicate(
                "curated records in the target",
                in_target,
                f"the {len(curated)} curated records hold the dashboard's values",
            ),
        ]

    schema = PgSQL(
        "create target schema",
        target,
        up=rules.schema_sql(),
        down=DROP,
        gates=[
            Gate(
                "schema in place",
                checks=[
                    RecordsPreserved(
                        dashboard,
                        "SELECT id, video_id, category, subcategory, subcategories_json FROM "
                        f"content WHERE video_id IN ({marks}) ORDER BY id",
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
    stage = CreateSchema(
        "create staging",
        staging,
        ddl=STAGING_DDL,
        blast=BlastRadius(
            changes="merged.db beside the copies (the merge, before the copy)",
            worst_case="none: removed on rollback",
            detection="-",
        ),
    )

    def merged(ctx: StepContext) -> list[SourceRecord]:
        rejected: dict[str, str] = {}
        rows = rules.expected_merge(
            ctx.use(processing).path, ctx.use(dashboard).path, last_sync, rejects=rejected
        )
        return [
            *(SourceRecord("merge", r["video_id"], r) for r in rows),
            *(SourceRecord("merge", v, _Rejected(why)) for v, why in rejected.items()),
        ]

    def merged_summaries(ctx: StepContext) -> list[SourceRecord]:
        rejected: dict[str, str] = {}
        rows = rules.expected_summaries(
            ctx.use(processing).path, ctx.use(dashboard).path, last_sync, rejects=rejected
        )
        return [
            *(
                SourceRecord("merge", f"{r['video_id']}/{r['variant']}/{r['revision']}", r)
                for r in rows
            ),
            *(SourceRecord("merge", k, _Rejected(why)) for k, why in rejected.items()),
        ]

    merge = ImportRecords(
        "merge copies",
        read=merged,
        db=staging,
        table="content",
        key="video_id",
        mapper=_mapper(rules.CONTENT_COLUMNS),
        reads=(processing, dashboard),
        blast=BlastRadius(
            changes="merged.db content: one row per surviving video_id",
            worst_case="a wrong precedence rule: caught by the curated and parity gates",
            detection="curated-records check; parity against the merge",
        ),
    )
    merge_summaries = ImportRecords(
        "merge summaries",
        read=merged_summaries,
        db=staging,
        table="summaries",
        key=["video_id", "variant", "revision"],
        mapper=_mapper(rules.SUMMARY_COLUMNS),
        reads=(processing, dashboard),
        gates=[
            Gate(
                "nothing rejected",
                checks=[
                    Predicate(
                        "rejects within the limit",
                        lambda ctx: _rejects_ok(ctx, (merge, merge_summaries), max_reject_share),
                        f"at most {max_reject_share:.1%} of the merged records rejected "
                        "(a reject is a video or summary group the target will not hold)",
                    )
                ],
            )
        ],
    )
    copy = CopyTable(
        "copy content",
        staging,
        target,
        CONTENT_MAP,
        rows_per_batch=rows_per_batch,
        gates=[
            Gate(
                "content equals the merge",
                checks=[Parity(staging, target, CONTENT_MAP), *curated_kept()],
            )
        ],
        blast=BlastRadius(
            changes="PostgreSQL content: upsert by video_id, in batches",
            worst_case="a batch fails: earlier batches stay, resume continues",
            detection="the parity gate names missing, extra, different keys",
        ),
    )
    copy_summaries = CopyTable(
        # One batch: a (video, variant)'s revisions must commit together, since the
        # "one latest revision" trigger is checked at commit.
        "copy summaries",
        staging,
        target,
        SUMMARY_MAP,
        rows_per_batch=10**9,
        gates=[
            Gate(
                "summaries equal the merge",
                checks=[
                    Parity(staging, target, SUMMARY_MAP),
                    Predicate(
                        "one latest revision per variant",
                        lambda ctx: _latest_ok(ctx, target),
                        "exactly one latest, and it is the highest revision",
                    ),
                    *curated_kept(),
                ],
            )
        ],
    )
    flip = TransformJSON(
        "flip read switch",
        switch,
        lambda old: {"read_from": "postgres", "previous": (old or {}).get("read_from", "sqlite")},
        gates=[Gate("switched", checks=curated_kept())],
        blast=BlastRadius(
            changes="read_switch.json: the dashboard reads PostgreSQL",
            worst_case="the dashboard reads the new database too early",
            detection="the dashboard's health check",
        ),
    )
    return Runbook(
        NAME,
        steps=[schema, stage, merge, merge_summaries, copy, copy_summaries, flip],
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
    ctx: StepContext, steps: tuple[ImportRecords, ...], max_share: float
) -> tuple[bool | None, dict[str, Any]]:
    """The merge's rejects, by key and reason, against ``max_share`` of its records."""
    assert ctx.journal is not None
    total, rejected = 0, []
    for step in steps:
        row = ctx.journal.step(ctx.run_id, step.name)
        total += int((row.plan or {}).get("counts", {}).get("records", 0))
        rejected += ctx.journal.rejects(ctx.run_id, step.name)
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
