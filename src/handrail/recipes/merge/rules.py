"""The YTV2 merge rules: what PostgreSQL must hold after merging two diverged SQLite copies.

The processing copy (NAS) and the dashboard copy were identical at the last sync; since
then each side changed on its own. These functions read both copies (read-only) and state
the merged result, so a loader can be checked against them row for row. Nothing here
writes, prints or connects to PostgreSQL.

**Duplicates.** One copy may hold several rows for one ``video_id`` (different ``id``).
Each copy keeps one row per video: the latest ``indexed_at`` (as a UTC instant, NULL
oldest), ties broken by the greater ``id``. On the dashboard a curated row (see
:func:`is_curated`) beats every non-curated row first, so curation never loses to a later
bare duplicate. Rows with a NULL or blank ``video_id`` cannot be keyed and are ignored.

**Fate of a video** (:class:`Fate`), from the two winning rows:

* on both sides: ``MERGED``, one row, column by column (below);
* on processing only, ``indexed_at`` after ``last_sync``: ``NEW`` since the sync, kept as
  processing has it;
* on processing only, ``indexed_at`` at or before ``last_sync`` (or NULL, which cannot be
  shown to be new): ``DELETED`` on the dashboard since the sync, dropped with its
  summaries;
* on the dashboard only: ``DASHBOARD_ONLY``, kept as the dashboard has it.

**Per-column precedence of a merged video.** At the sync both copies were equal, so a
difference is an edit made since, on the side that owns the column ("blank" is NULL or
whitespace-only text):

* curated group, :data:`CURATED_COLUMNS` (category, subcategory, subcategories_json): all
  three as they are on the dashboard when its row is curated, else all three as they are
  on processing. The group is never mixed and never filled in from the other side.
* dashboard-owned, :data:`DASHBOARD_COLUMNS` (title, which people fix in the web UI): the
  dashboard's value unless blank, then processing's.
* processing-owned, :data:`PROCESSING_COLUMNS` (id, urls, times, duration, has_audio,
  channel, key_topics, summary, analysis; only processing (re)generates them):
  processing's value unless blank, then the dashboard's.

**Conversions** are :mod:`handrail.tablecopy.mapping`'s, so this oracle and a loader
built on it agree: timestamps to aware UTC datetimes (naive text is UTC); has_audio 0/1 to bool;
JSON text parsed as PostgreSQL's ``jsonb`` returns it, text that is not JSON (NaN and
Infinity included) as ``{"raw_text": text}``, NULL, empty text and JSON ``null`` as None.
``key_topics`` becomes ``topics_json``, ``analysis`` becomes ``analysis_json``. A value
that cannot be stored (an unparsable timestamp, NUL in text) raises
:class:`~handrail.tablecopy.mapping.ConversionError` naming the copy, row and column;
given a ``rejects`` dict instead, the functions leave the video out (or, for summaries, the
(video, variant) group) and store the reason under its key, so one bad value costs one
video, never the merge. A video with a bad value in any of its rows is left out whole: its
winner, its fate or a column of the merge cannot be trusted, and its summaries go with it.

**Summaries.** A summary belongs to the video of its ``content_id`` in the same copy
(``content_id`` is the SQLite ``content.id``, so summaries of duplicate rows meet under one
video); summaries whose content row is gone (orphans) or whose text is blank are ignored.
``variant`` is ``summary_type``, blank meaning ``'comprehensive'``. For each kept
(video_id, variant), processing's summaries are taken when it has any, else the
dashboard's; revisions are numbered 1..n in ``created_at`` order (NULL first, ties by
SQLite ``id``) and only revision n ``is_latest``.

Example::

    last_sync = load_last_sync(root / "last_sync.json")
    rows = expected_merge(root / "processing.db", root / "dashboard.db", last_sync)
    summaries = expected_summaries(root / "processing.db", root / "dashboard.db", last_sync)
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Collection, Iterable, Mapping
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any, Final

from ...tablecopy import mapping as sqlmap  # tests reach it as rules.sqlmap

__all__ = [
    "CHECK_LATEST_SQL",
    "CONTENT_COLUMNS",
    "CURATED_COLUMNS",
    "DASHBOARD_COLUMNS",
    "DEFAULT_VARIANT",
    "PROCESSING_COLUMNS",
    "SOURCE_COLUMNS",
    "SUMMARY_COLUMNS",
    "SUMMARY_SOURCE_COLUMNS",
    "Copy",
    "Fate",
    "Row",
    "curated_ids",
    "expected_merge",
    "expected_summaries",
    "fates",
    "is_curated",
    "load_last_sync",
    "merge_content",
    "merge_summaries",
    "parse_json",
    "read_copy",
    "schema_sql",
    "winners",
]

Row = Mapping[str, Any]

#: columns of the SQLite ``content`` table, in table order
SOURCE_COLUMNS: Final = (
    "id",
    "video_id",
    "title",
    "canonical_url",
    "thumbnail_url",
    "published_at",
    "indexed_at",
    "duration_seconds",
    "has_audio",
    "channel_name",
    "category",
    "key_topics",
    "subcategory",
    "subcategories_json",
    "summary",
    "analysis",
)
#: columns of the SQLite ``content_summaries`` table, in table order
SUMMARY_SOURCE_COLUMNS: Final = ("id", "content_id", "summary_text", "summary_type", "created_at")

#: taken together from the dashboard when its row is curated, else from processing
CURATED_COLUMNS: Final = ("category", "subcategory", "subcategories_json")
#: the dashboard's value unless blank
DASHBOARD_COLUMNS: Final = ("title",)
#: processing's value unless blank
PROCESSING_COLUMNS: Final = (
    "id",
    "canonical_url",
    "thumbnail_url",
    "published_at",
    "indexed_at",
    "duration_seconds",
    "has_audio",
    "channel_name",
    "key_topics",
    "summary",
    "analysis",
)

#: keys of each :func:`expected_merge` row, in the order of ``content`` in schema.sql
CONTENT_COLUMNS: Final = (
    "video_id",
    "id",
    "title",
    "canonical_url",
    "thumbnail_url",
    "published_at",
    "indexed_at",
    "duration_seconds",
    "has_audio",
    "channel_name",
    "category",
    "subcategory",
    "subcategories_json",
    "topics_json",
    "summary",
    "analysis_json",
)
#: keys of each :func:`expected_summaries` row
SUMMARY_COLUMNS: Final = ("video_id", "variant", "text", "revision", "is_latest", "created_at")
DEFAULT_VARIANT: Final = "comprehensive"

#: (video_id, variant, revisions, latest) of every group of ``content_summaries`` that does
#: not have exactly one latest revision, or whose latest is not its highest revision; the
#: migration's verify step expects no rows (schema.sql enforces "at most one" and "at least
#: one"; "the highest" is the loader's rule, checked here)
CHECK_LATEST_SQL: Final = """\
SELECT video_id, variant, count(*) AS revisions,
       count(*) FILTER (WHERE is_latest) AS latest
FROM content_summaries
GROUP BY video_id, variant
HAVING count(*) FILTER (WHERE is_latest) <> 1
    OR max(revision) <> max(revision) FILTER (WHERE is_latest)
ORDER BY video_id, variant"""

_OLDEST: Final = datetime.min.replace(tzinfo=UTC)
_TEXT = sqlmap.text()
_INTEGER = sqlmap.integer()
_BOOLEAN = sqlmap.boolean()
_TIMESTAMP = sqlmap.timestamptz()
_JSONB = sqlmap.jsonb()


class Fate(StrEnum):
    """What the merge does with one video_id."""

    MERGED = "merged"  #: on both sides: one row, column by column
    NEW = "new"  #: processing only, indexed after the last sync: kept
    DELETED = "deleted"  #: processing only, indexed at or before the last sync: dropped
    DASHBOARD_ONLY = "dashboard_only"  #: dashboard only: kept as it is


@dataclass(frozen=True)
class Copy:
    """The rows of one SQLite copy as stored (text stays text), in rowid / id order."""

    content: tuple[Row, ...]
    summaries: tuple[Row, ...]


# -- reading -----------------------------------------------------------------------------


def read_copy(db: Path) -> Copy:
    """Both tables of one SQLite copy, opened read-only (the file is never changed)."""
    db = Path(db)
    if not db.is_file():
        raise FileNotFoundError(f"no SQLite database at {db}")
    uri = db.resolve().as_uri() + "?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as con:
        content = con.execute(
            f"SELECT {', '.join(SOURCE_COLUMNS)} FROM content ORDER BY rowid"
        ).fetchall()
        summaries = con.execute(
            f"SELECT {', '.join(SUMMARY_SOURCE_COLUMNS)} FROM content_summaries ORDER BY id"
        ).fetchall()
    return Copy(
        content=tuple(dict(zip(SOURCE_COLUMNS, r, strict=True)) for r in content),
        summaries=tuple(dict(zip(SUMMARY_SOURCE_COLUMNS, r, strict=True)) for r in summaries),
    )


def load_last_sync(path: Path) -> datetime:
    """The time of the last sync from ``last_sync.json`` (``{"last_sync": "<ISO 8601>"}``)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    value = data.get("last_sync") if isinstance(data, dict) else data
    when = _TIMESTAMP(value)
    if not isinstance(when, datetime):
        raise ValueError(f"{path} holds no last_sync time")
    return when


def schema_sql() -> str:
    """The PostgreSQL DDL of the merge target (``schema.sql`` beside this module)."""
    return (
        resources.files(__package__ or "handrail.recipes.merge")
        .joinpath("schema.sql")
        .read_text(encoding="utf-8")
    )


# -- the rules ---------------------------------------------------------------------------


def parse_json(text: Any) -> Any:
    """JSON held in text as PostgreSQL's ``jsonb`` gives it back; not JSON -> ``{"raw_text"}``.

    NULL, blank text and JSON ``null`` give None; NaN/Infinity are not JSON.
    """
    value = _JSONB(text)
    return None if value is None else json.loads(value)


def is_curated(row: Row) -> bool:
    """A row carries curation: a non-blank subcategory, or subcategories_json that is
    neither blank nor an empty JSON value (``[]``, ``{}``, ``""``, ``null``). Text that is
    not JSON counts: it is somebody's curation, kept as raw text."""
    if not _blank(row.get("subcategory")):
        return True
    value = parse_json(row.get("subcategories_json"))
    return value is not None and value not in ([], {}, "")


def winners(
    rows: Iterable[Row],
    *,
    prefer_curated: bool = False,
    rejects: dict[str, str] | None = None,
    side: str = "",
) -> dict[str, Row]:
    """One row per video_id: the latest ``indexed_at`` (NULL oldest), ties by greater ``id``;
    with ``prefer_curated`` (the dashboard) a curated row first beats any other.

    A row whose ``indexed_at`` (or curation) does not convert raises, or with ``rejects``
    leaves its video out, since no winner can be picked: the reason goes in ``rejects``.
    """
    best: dict[str, tuple[tuple[bool, datetime, str], Row]] = {}
    for row in rows:
        vid = row["video_id"]
        if _blank(vid) or (rejects is not None and vid in rejects):
            continue
        try:
            when = _convert(_TIMESTAMP, row, "indexed_at", side) or _OLDEST
            curated = prefer_curated and _convert(_CURATED, row, "", side)
        except sqlmap.ConversionError as exc:
            if rejects is None:
                raise
            rejects[vid] = str(exc)
            best.pop(vid, None)
            continue
        key = (curated, when, str(row["id"]))
        held = best.get(vid)
        if held is None or key > held[0]:
            best[vid] = (key, row)
    return {vid: row for vid, (_, row) in best.items()}


def fates(
    processing: Iterable[Row], dashboard: Iterable[Row], last_sync: datetime
) -> dict[str, Fate]:
    """The :class:`Fate` of every video_id of either copy, in video_id order."""
    p = winners(processing)
    d = winners(dashboard, prefer_curated=True)
    sync = _aware(last_sync)
    return {vid: _fate(p.get(vid), d.get(vid), sync) for vid in sorted(p.keys() | d.keys())}


def merge_content(
    processing: Iterable[Row],
    dashboard: Iterable[Row],
    last_sync: datetime,
    *,
    rejects: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The ``content`` rows after the merge, converted, in video_id order (pure); a naive
    ``last_sync`` is UTC.

    A value that does not convert raises :class:`~handrail.tablecopy.mapping.ConversionError`; with
    ``rejects``, its video is left out instead and ``rejects[video_id]`` says why.
    """
    bad: dict[str, str] = {}
    p = winners(processing, rejects=None if rejects is None else bad, side="processing")
    d = winners(
        dashboard,
        prefer_curated=True,
        rejects=None if rejects is None else bad,
        side="dashboard",
    )
    sync = _aware(last_sync)
    out: list[dict[str, Any]] = []
    for vid in sorted(p.keys() | d.keys() | bad.keys()):
        if vid in bad:
            continue  # left out on both sides: one side alone would look like a deletion
        prow, drow = p.get(vid), d.get(vid)
        fate = _fate(prow, drow, sync)
        if fate is Fate.DELETED:
            continue
        try:
            if prow is not None and drow is not None:
                out.append(_target(_merge_row(prow, drow), "merged"))
            elif prow is not None:
                out.append(_target(prow, "processing"))
            elif drow is not None:
                out.append(_target(drow, "dashboard"))
        except sqlmap.ConversionError as exc:
            if rejects is None:
                raise
            bad[vid] = str(exc)
    if rejects is not None:
        rejects.update(sorted(bad.items()))
    return out


def merge_summaries(
    processing: Copy,
    dashboard: Copy,
    keep: Collection[str],
    *,
    rejects: dict[str, str] | None = None,
    rejected_videos: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The ``content_summaries`` rows of the videos in ``keep``, in (video_id, variant,
    revision) order (pure).

    A summary whose text or ``created_at`` does not convert raises; with ``rejects``, the
    (video, variant) group it would belong to is left out and ``rejects["video/variant"]``
    says why, as are the groups of the videos in ``rejected_videos`` (video_id -> reason).
    """
    p_bad: dict[tuple[str, str], str] = {}
    d_bad: dict[tuple[str, str], str] = {}
    p = _summary_groups(processing, "processing", None if rejects is None else p_bad)
    d = _summary_groups(dashboard, "dashboard", None if rejects is None else d_bad)
    gone = rejected_videos or {}
    out: list[dict[str, Any]] = []
    for key in sorted(p.keys() | d.keys()):
        reason = (
            f"its video was rejected: {gone[key[0]]}"
            if key[0] in gone
            # A bad processing group is not replaced by the dashboard's, which it would
            # have superseded; a bad dashboard group is moot when processing has one.
            else p_bad.get(key) or (None if key in p else d_bad.get(key))
        )
        if reason is not None:
            if rejects is not None and (key[0] in keep or key[0] in gone):
                rejects[f"{key[0]}/{key[1]}"] = reason
            continue
        if key[0] not in keep:
            continue
        group = p.get(key) or d[key]
        group.sort(key=lambda s: (s["created_at"] or _OLDEST, s["id"]))
        for revision, s in enumerate(group, start=1):
            out.append(
                {
                    "video_id": key[0],
                    "variant": key[1],
                    "text": s["text"],
                    "revision": revision,
                    "is_latest": revision == len(group),
                    "created_at": s["created_at"],
                }
            )
    return out


def expected_merge(
    processing: Path,
    dashboard: Path,
    last_sync: datetime,
    *,
    rejects: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The rows PostgreSQL's ``content`` must hold after the merge, in video_id order; keys
    are :data:`CONTENT_COLUMNS`. ``rejects``: see :func:`merge_content`."""
    return merge_content(
        read_copy(processing).content, read_copy(dashboard).content, last_sync, rejects=rejects
    )


def expected_summaries(
    processing: Path,
    dashboard: Path,
    last_sync: datetime,
    *,
    rejects: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The rows PostgreSQL's ``content_summaries`` must hold after the merge; keys are
    :data:`SUMMARY_COLUMNS`. With ``rejects``, the groups left out (a bad summary, or a
    rejected video) are named there as ``"video_id/variant"``."""
    p, d = read_copy(processing), read_copy(dashboard)
    videos: dict[str, str] | None = None if rejects is None else {}
    keep = {
        row["video_id"] for row in merge_content(p.content, d.content, last_sync, rejects=videos)
    }
    return merge_summaries(p, d, keep, rejects=rejects, rejected_videos=videos)


def curated_ids(dashboard: Path) -> list[str]:
    """The video_ids with a curated row in the dashboard copy, sorted."""
    rows = read_copy(dashboard).content
    return sorted({r["video_id"] for r in rows if not _blank(r["video_id"]) and _curated(r)})


# -- helpers -----------------------------------------------------------------------------


def _curated(row: Row) -> bool:
    try:
        return is_curated(row)
    except sqlmap.ConversionError:
        # Unreadable curation is still somebody's curation: guard it (the merge rejects it).
        return True


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _aware(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _fate(prow: Row | None, drow: Row | None, sync: datetime) -> Fate:
    if prow is not None and drow is not None:
        return Fate.MERGED
    if drow is not None:
        return Fate.DASHBOARD_ONLY
    assert prow is not None
    indexed = _convert(_TIMESTAMP, prow, "indexed_at")
    # NULL: it cannot be shown to be new, so absence on the dashboard is a deletion.
    return Fate.NEW if indexed is not None and indexed > sync else Fate.DELETED


def _merge_row(prow: Row, drow: Row) -> dict[str, Any]:
    merged: dict[str, Any] = {"video_id": prow["video_id"]}
    for col in PROCESSING_COLUMNS:
        merged[col] = drow[col] if _blank(prow[col]) else prow[col]
    for col in DASHBOARD_COLUMNS:
        merged[col] = prow[col] if _blank(drow[col]) else drow[col]
    group = drow if is_curated(drow) else prow
    for col in CURATED_COLUMNS:
        merged[col] = group[col]
    return merged


def _target(row: Row, side: str) -> dict[str, Any]:
    def conv(fn: Callable[[Any], Any], col: str) -> Any:
        return _convert(fn, row, col, side)

    return {
        "video_id": conv(_TEXT, "video_id"),
        "id": conv(_TEXT, "id"),
        "title": conv(_TEXT, "title"),
        "canonical_url": conv(_TEXT, "canonical_url"),
        "thumbnail_url": conv(_TEXT, "thumbnail_url"),
        "published_at": conv(_TIMESTAMP, "published_at"),
        "indexed_at": conv(_TIMESTAMP, "indexed_at"),
        "duration_seconds": conv(_INTEGER, "duration_seconds"),
        "has_audio": conv(_BOOLEAN, "has_audio"),
        "channel_name": conv(_TEXT, "channel_name"),
        "category": conv(_TEXT, "category"),
        "subcategory": conv(_TEXT, "subcategory"),
        "subcategories_json": conv(parse_json, "subcategories_json"),
        "topics_json": conv(parse_json, "key_topics"),
        "summary": conv(_TEXT, "summary"),
        "analysis_json": conv(parse_json, "analysis"),
    }


#: for :func:`_convert`: whether a whole row is curated (``col`` is "")
_CURATED: Final = is_curated


def _convert(fn: Callable[[Any], Any], row: Row, col: str, side: str = "") -> Any:
    """``fn(row[col])`` (``fn(row)`` for :data:`_CURATED`), its error naming side, row, column."""
    try:
        return fn(row) if fn is _CURATED else fn(row[col])
    except sqlmap.ConversionError as exc:
        where = f"{side} " if side else ""
        raise sqlmap.ConversionError(
            f"{where}content row id={row.get('id')!r} video_id={row.get('video_id')!r}: "
            f"{col or 'curation'}: {exc}"
        ) from exc


def _summary_groups(
    copy: Copy, side: str, bad: dict[tuple[str, str], str] | None = None
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """One copy's summaries by (video_id, variant); a group with a value that does not
    convert raises, or with ``bad`` is returned empty and its reason stored there."""
    owner = {r["id"]: r["video_id"] for r in copy.content if not _blank(r["video_id"])}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for s in copy.summaries:
        vid = owner.get(s["content_id"])
        if vid is None or _blank(s["summary_text"]):
            continue
        variant = DEFAULT_VARIANT if _blank(s["summary_type"]) else s["summary_type"]
        try:
            text = _TEXT(s["summary_text"])
            created = _TIMESTAMP(s["created_at"])
        except sqlmap.ConversionError as exc:
            error = sqlmap.ConversionError(f"{side} summary id={s['id']}: {exc}")
            if bad is None:
                raise error from exc
            bad.setdefault((vid, variant), str(error))
            groups.setdefault((vid, variant), [])
            continue
        groups.setdefault((vid, variant), []).append(
            {"id": s["id"], "text": text, "created_at": created}
        )
    return groups
