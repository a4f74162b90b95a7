"""The ``tied_manual`` review queue: what a human must decide, and recording the decision.

:func:`list_queue` shows each ``tied_manual`` document with its video, channel, tied domains
and their concept counts (read from the concept files now, so the queue never disagrees
with them), the counts of those domains over the channel's other videos, and the fallback
domain pass 2 stored for display. :func:`resolve` records a reviewer's choice as
``manual_assigned`` and keeps who decided, when, and what was shown, in the table
:data:`REVIEWS_TABLE` of the same database, in the same transaction.

    ReviewError (BadInput, exit 2)
    ├── UnknownDocument   no document has that hash (or hash prefix)
    ├── AmbiguousHash     the prefix names several documents
    ├── NotInQueue        the document is not ``tied_manual``
    └── UnknownDomain     not one of the 18 domains

Example::

    for item in list_queue(Path("data/recon.db")):
        ...  # item.hash, item.tied, item.channel_counts, item.fallback
    resolve(Path("data/recon.db"), item.hash, "Medical", who="ana")
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from ...errors import BadInput, ResourceError
from ...resources.sqlite import transaction
from .logic import (
    CATEGORY_OF,
    DOMAINS,
    MEGA_CHANNEL_VIDEOS,
    Catalogue,
    ChannelIndex,
    ConceptProblem,
    Status,
    count_domains,
    uuid_of,
)

__all__ = [
    "MIN_PREFIX",
    "REVIEWS_TABLE",
    "AmbiguousHash",
    "NotInQueue",
    "QueueItem",
    "ReviewError",
    "UnknownDocument",
    "UnknownDomain",
    "list_queue",
    "resolve",
]

#: the audit table :func:`resolve` writes (created on first use)
REVIEWS_TABLE: Final = "recon_domain_reviews"
#: the shortest hash prefix :func:`resolve` accepts (``handrail ties list`` shows 12)
MIN_PREFIX: Final = 8
_REVIEWS_DDL: Final = (
    f"CREATE TABLE IF NOT EXISTS {REVIEWS_TABLE} ("
    "hash TEXT NOT NULL, domain TEXT NOT NULL, fallback TEXT, who TEXT NOT NULL, "
    "at TEXT NOT NULL)"
)


class ReviewError(BadInput):
    """A review decision that cannot be recorded."""


class UnknownDocument(ReviewError):
    """No document has the given hash."""


class AmbiguousHash(ReviewError):
    """A hash prefix that more than one document's hash starts with."""


class NotInQueue(ReviewError):
    """The document exists but is not waiting for review (``tied_manual``)."""


class UnknownDomain(ReviewError):
    """The chosen domain is not one of the 18."""


@dataclass(frozen=True)
class QueueItem:
    """One ``tied_manual`` document as a reviewer sees it."""

    hash: str
    filename: str
    #: None when the document is not in the catalogue or its video has no channel
    channel: str | None
    #: the video's catalogue path and its canonical UUID (None for non-videos)
    path: str | None
    uuid: str | None
    #: (domain, concepts) of the domains sharing the top count now, in DOMAINS order
    tied: tuple[tuple[str, int], ...]
    #: the display fallback pass 2 stored in ``recon_domain``
    fallback: str | None
    #: tied domain -> concepts over the channel's other videos (empty: mega channel, no
    #: channel, or not asked for)
    channel_counts: Mapping[str, int] = field(default_factory=dict)
    #: videos of the channel in the catalogue
    channel_videos: int = 0
    #: window files that could not be read
    problems: tuple[ConceptProblem, ...] = ()

    @property
    def mega(self) -> bool:
        return self.channel_videos > MEGA_CHANNEL_VIDEOS


def _connect(db_path: Path) -> sqlite3.Connection:
    """A connection to an existing RECON database whose documents have the new columns."""
    db_path = Path(db_path)
    if not db_path.is_file():
        raise ResourceError(f"no RECON database at {db_path}")
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        cols = {r[1] for r in conn.execute("PRAGMA table_info(documents)")}
    except sqlite3.DatabaseError as e:
        conn.close()
        raise ResourceError(f"{db_path} is not a readable SQLite database: {e}") from e
    missing = [
        c for c in ("hash", "filename", "recon_domain", "recon_domain_status") if c not in cols
    ]
    if missing:
        conn.close()
        raise ResourceError(
            f"table documents of {db_path} lacks column(s) {', '.join(missing)}",
            hint="run the migration's schema step first",
        )
    return conn


def list_queue(
    db_path: Path,
    concepts_root: Path | None = None,
    *,
    channel_counts: bool = True,
) -> list[QueueItem]:
    """Every ``tied_manual`` document, ordered by channel, filename and hash.

    ``concepts_root`` defaults to ``concepts/`` beside the database. With
    ``channel_counts=False`` the channels' other videos are not read (faster).
    """
    db_path = Path(db_path)
    root = Path(concepts_root) if concepts_root is not None else db_path.parent / "concepts"
    conn = _connect(db_path)
    try:
        has_catalogue = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='catalogue'"
        ).fetchone()
        if has_catalogue:
            cols = "NULLIF(c.channel, ''), c.path"
            join = "LEFT JOIN catalogue c ON c.hash = d.hash"
            order = "c.channel IS NULL, c.channel, "
        else:
            cols, join, order = "NULL, NULL", "", ""
        rows = conn.execute(
            f"SELECT d.hash, d.filename, {cols}, d.recon_domain FROM documents d {join} "
            f"WHERE d.recon_domain_status = ? ORDER BY {order}d.filename, d.hash",
            (Status.TIED_MANUAL.value,),
        ).fetchall()
    finally:
        conn.close()
    index = ChannelIndex(root, Catalogue.sqlite(db_path)) if has_catalogue else None
    items = []
    for doc_hash, filename, channel, path, fallback in rows:
        scan = count_domains(root / doc_hash)
        tied = tuple((d, scan.counts[d]) for d in scan.top())
        counts: dict[str, int] = {}
        videos = 0
        if index is not None and channel is not None:
            videos = len(index.catalogue.channel_hashes(channel))
            if channel_counts:
                view = index.view(doc_hash)
                counts = {d: view.others.get(d, 0) for d, _ in tied} if not view.mega else {}
        items.append(
            QueueItem(
                hash=doc_hash,
                filename=filename,
                channel=channel,
                path=path,
                uuid=uuid_of(path),
                tied=tied,
                fallback=fallback,
                channel_counts=counts,
                channel_videos=videos,
                problems=scan.problems,
            )
        )
    return items


def resolve(
    db_path: Path,
    doc_hash: str,
    domain: str,
    *,
    who: str,
    at: str | None = None,
) -> str:
    """Assign ``domain`` to a ``tied_manual`` document as ``manual_assigned``; returns the
    document's full hash.

    ``doc_hash`` is the full hash or a prefix of at least :data:`MIN_PREFIX` characters
    that exactly one document's hash starts with (:class:`AmbiguousHash` names them
    otherwise).

    Sets ``recon_domain``, ``recon_domain_status`` and ``recon_domain_assigned_at`` (``at``,
    default now in UTC, ISO 8601) and appends a row to :data:`REVIEWS_TABLE`, in one
    transaction; the row is only changed if it is still ``tied_manual`` when written. Any
    of the 18 domains may be chosen, not only the tied ones.
    """
    if domain not in CATEGORY_OF:
        raise UnknownDomain(
            f"cannot assign {domain!r} to document {doc_hash}: not one of the 18 domains",
            hint="one of: " + ", ".join(DOMAINS),
        )
    if not who.strip():
        raise ReviewError(f"resolving document {doc_hash}: say who decided (who=...)")
    stamp = at or datetime.now(UTC).isoformat(timespec="seconds")
    conn = _connect(Path(db_path))
    try:
        with transaction(conn):
            doc_hash, status, fallback = _find(conn, doc_hash, db_path)
            if status != Status.TIED_MANUAL.value:
                raise NotInQueue(
                    f"document {doc_hash} is not in the review queue: its status is "
                    f"{status!r}, not 'tied_manual'"
                )
            conn.execute(
                "UPDATE documents SET recon_domain = ?, recon_domain_status = ?, "
                "recon_domain_assigned_at = ? WHERE hash = ? AND recon_domain_status = ?",
                (domain, Status.MANUAL_ASSIGNED.value, stamp, doc_hash, Status.TIED_MANUAL.value),
            )
            conn.execute(_REVIEWS_DDL)
            conn.execute(
                f"INSERT INTO {REVIEWS_TABLE} (hash, domain, fallback, who, at) "
                "VALUES (?, ?, ?, ?, ?)",
                (doc_hash, domain, fallback, who, stamp),
            )
    finally:
        conn.close()
    return doc_hash


def _find(conn: sqlite3.Connection, prefix: str, db_path: Path) -> tuple[str, str, str | None]:
    """(hash, status, recon_domain) of the one document whose hash is or starts with
    ``prefix``."""
    row = conn.execute(
        "SELECT hash, recon_domain_status, recon_domain FROM documents WHERE hash = ?",
        (prefix,),
    ).fetchone()
    if row is not None:
        return row[0], row[1], row[2]
    if len(prefix) < MIN_PREFIX:
        raise UnknownDocument(
            f"no document with hash {prefix!r} in {db_path}",
            hint=f"give the full hash or at least {MIN_PREFIX} of its first characters",
        )
    # substr, not LIKE: a hash may hold '_' or '%', which LIKE would treat as wildcards
    rows = conn.execute(
        "SELECT hash, recon_domain_status, recon_domain FROM documents "
        "WHERE substr(hash, 1, ?) = ? ORDER BY hash LIMIT 11",
        (len(prefix), prefix),
    ).fetchall()
    if not rows:
        raise UnknownDocument(
            f"no document with hash {prefix!r} in {db_path}, nor one whose hash starts with it"
        )
    if len(rows) > 1:
        listed = ", ".join(f"{h} ({s})" for h, s, _ in rows[:10])
        more = " and more" if len(rows) > 10 else ""
        raise AmbiguousHash(
            f"{len(rows) if len(rows) <= 10 else 'over 10'} documents' hashes start with "
            f"{prefix!r}: {listed}{more}",
            hint="give more characters of the hash (`handrail ties list --json` shows them whole)",
        )
    return rows[0][0], rows[0][1], rows[0][2]
