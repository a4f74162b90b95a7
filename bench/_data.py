"""Shared data for the PostgreSQL benches: a SQLite ``content`` table of mixed types.

Columns: id (INTEGER PRIMARY KEY), video_id (TEXT, the natural key; a few duplicated),
title (TEXT), views (INTEGER), score (REAL), published_at (TEXT timestamps in several
ISO 8601 forms, some epoch numbers), indexed_at (TEXT, 'YYYY-MM-DD HH:MM:SS'), has_audio
(0/1), subcategories_json (JSON in TEXT, some empty, some not JSON), summary (TEXT, often
NULL). Deterministic for a given row count and seed.
"""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE content (
    id INTEGER PRIMARY KEY,
    video_id TEXT NOT NULL,
    title TEXT,
    views INTEGER,
    score REAL,
    published_at TEXT,
    indexed_at TEXT,
    has_audio INTEGER,
    subcategories_json TEXT,
    summary TEXT
)
"""

#: the PostgreSQL target of the same table, keyed by video_id
PG_SCHEMA = """
CREATE TABLE content (
    video_id text PRIMARY KEY,
    id bigint,
    title text,
    views bigint,
    score double precision,
    published_at timestamptz,
    indexed_at timestamptz,
    has_audio boolean,
    subcategories_json jsonb,
    summary text
)
"""

COLUMNS = [
    "id",
    "video_id",
    "title",
    "views",
    "score",
    "published_at",
    "indexed_at",
    "has_audio",
    "subcategories_json",
    "summary",
]

_WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
]
_SUBS = ["Medical", "Water Systems", "Navigation", "Power Systems", "Vehicles", "Tools"]
_BASE = datetime(2020, 1, 1, tzinfo=UTC)


def rows(n: int, seed: int = 7) -> Iterator[tuple[Any, ...]]:
    rnd = random.Random(seed)
    for i in range(1, n + 1):
        t = _BASE + timedelta(seconds=rnd.randrange(0, 150_000_000))
        form = i % 5
        if form == 0:
            published: Any = t.strftime("%Y-%m-%d %H:%M:%S")
        elif form == 1:
            published = t.strftime("%Y-%m-%dT%H:%M:%SZ")
        elif form == 2:
            published = t.isoformat(timespec="microseconds")
        elif form == 3:
            published = str(int(t.timestamp()))
        else:
            published = None
        if i % 7 == 0:
            subs = ""
        elif i % 101 == 0:
            subs = "not json: " + rnd.choice(_WORDS)
        else:
            subs = json.dumps({"subcategories": rnd.sample(_SUBS, 2), "v": i % 3})
        vid = f"v{(i if i % 997 else i - 1):09d}"  # every 997th row repeats a natural key
        yield (
            i,
            vid,
            " ".join(rnd.choice(_WORDS) for _ in range(4)) + f' "{i}"',
            rnd.randrange(0, 1_000_000),
            rnd.random() * 100,
            published,
            (t + timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S"),
            i % 2,
            subs,
            None if i % 3 else "summary\twith tab, comma and \\ backslash " + str(i),
        )


def make_sqlite(path: Path, n: int, seed: int = 7) -> Path:
    """Write the table to ``path`` (replaced if present)."""
    path.unlink(missing_ok=True)
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute(SCHEMA)
        conn.executemany(f"INSERT INTO content VALUES ({','.join('?' * 10)})", rows(n, seed))
        conn.commit()
    return path


def cached_sqlite(directory: Path, n: int, seed: int = 7) -> Path:
    """The table for ``n`` rows, made once and kept in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"content-{n}-{seed}.sqlite"
    if not path.exists():
        tmp = path.with_suffix(".partial")
        make_sqlite(tmp, n, seed)
        tmp.replace(path)
    return path
