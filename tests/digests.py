"""Digests of user data computed without handrail, for judging handrail's results.

A test that asks handrail's own ``fingerprint`` whether handrail kept the data checks
handrail against itself. These digests read the data with the standard library only
(``sqlite3``, ``os.lstat``, ``hashlib``) or plain SQL on PostgreSQL:

- :func:`sqlite_digest`: the schema text and every row of every table, sorted, each value
  paired with its SQLite storage class (``typeof``), so ``1`` and ``'1'`` differ;
- :func:`tree_digest`: every path under a directory (or one file) with its type, mode,
  owner, group, size and sha256, and a symlink's target;
- :func:`pg_digest`: every table's column types and rows as text, sorted.

``unchanged(*paths)`` is a context manager asserting that nothing under the paths changed.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HANDRAIL_TABLE_PREFIX = "_handrail_"


def sqlite_digest(path: Path, *, include_handrail: bool = True) -> dict[str, Any]:
    """Schema and typed, sorted rows of every table in a SQLite file (opened read-only)."""
    uri = f"file:{path}?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    try:
        schema = sorted(
            (r[0], r[1], r[2] or "")
            for r in conn.execute("SELECT type, name, sql FROM sqlite_master")
            if include_handrail or not str(r[1]).startswith(HANDRAIL_TABLE_PREFIX)
        )
        tables: dict[str, str] = {}
        for typ, name, _ in schema:
            if typ != "table" or name == "sqlite_sequence":
                continue
            cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{name}")')]
            select = ", ".join(f'typeof("{c}"), quote("{c}")' for c in cols)
            rows = sorted(tuple(r) for r in conn.execute(f'SELECT {select} FROM "{name}"'))
            h = hashlib.sha256()
            for row in rows:
                h.update(repr(row).encode())
            tables[name] = f"{len(rows)}:{h.hexdigest()}"
        seq: list[tuple[str, int]] = []
        if any(n == "sqlite_sequence" for _, n, _ in schema):
            seq = sorted(conn.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
        return {"schema": schema, "tables": tables, "sequence": seq}
    finally:
        conn.close()


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_digest(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every path under ``root`` (or ``root`` itself) with type, mode, owner, size, sha256.

    SQLite's transient ``-journal``/``-wal``/``-shm`` companions are left out (their
    presence says nothing about the data; :func:`sqlite_digest` reads the data)."""
    out: dict[str, tuple[Any, ...]] = {}
    paths = [root] if not root.is_dir() or root.is_symlink() else [root, *root.rglob("*")]
    for p in sorted(paths):
        if p.name.endswith(("-journal", "-wal", "-shm")):
            continue
        st = os.lstat(p)
        rel = "." if p == root else str(p.relative_to(root))
        kind = stat.S_IFMT(st.st_mode)
        perms = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("link", os.readlink(p), *perms)
        elif stat.S_ISREG(st.st_mode):
            out[rel] = ("file", st.st_size, _file_sha(p), *perms)
        else:
            out[rel] = ("dir" if stat.S_ISDIR(st.st_mode) else f"kind{kind}", *perms)
    return out


def pg_digest(dsn: str, schema: str = "public") -> dict[str, Any]:
    """Column types and sorted text rows of every table in one PostgreSQL schema."""
    import psycopg

    out: dict[str, Any] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname=%s ORDER BY 1", (schema,)
            )
        ]
        for t in tables:
            cols = conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema=%s AND table_name=%s ORDER BY ordinal_position",
                (schema, t),
            ).fetchall()
            rows = conn.execute(f'SELECT t::text FROM "{schema}"."{t}" AS t ORDER BY 1').fetchall()
            h = hashlib.sha256()
            for (r,) in rows:
                h.update(r.encode() + b"\n")
            out[t] = {"columns": cols, "rows": len(rows), "sha256": h.hexdigest()}
    return out


def digest(path: Path) -> Any:
    """The right digest for a path: a SQLite file's rows, anything else's tree."""
    if path.is_file() and path.read_bytes()[:16] == b"SQLite format 3\x00":
        return {"sqlite": sqlite_digest(path), "file": tree_digest(path)["."][3:]}
    return tree_digest(path)


@contextmanager
def unchanged(*paths: Path) -> Iterator[None]:
    """Assert that nothing under ``paths`` changed (content, mode, owner) by the block."""
    before = {str(p): (digest(p) if p.exists() else None) for p in paths}
    yield
    after = {str(p): (digest(p) if p.exists() else None) for p in paths}
    for p in before:
        assert before[p] == after[p], f"{p} changed"
