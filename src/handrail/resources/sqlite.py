"""SQLite files: online-backup snapshots, logical fingerprints, an in-database ledger.

Snapshots use SQLite's online backup API in a single step, which copies a consistent
image even while another process writes (in WAL mode the writer is not blocked).
Restores go through the same API in the other direction, so live connections see an
atomic change instead of a file swapped under them.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, ClassVar

from ..errors import ResourceError
from ..hashing import digest_parts, sha256_file
from .base import ABSENT, Backup, Fingerprint, Resource

#: tables handrail keeps inside a database it changes; never part of a fingerprint
LEDGER_PREFIX = "_handrail_"
_SIDE_FILES = ("-wal", "-shm", "-journal")
_WS = re.compile(r"\s+")


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def connect(path: Path, *, timeout: float = 30.0) -> sqlite3.Connection:
    """A connection in autocommit mode (we issue BEGIN ourselves) with sane defaults."""
    conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None)
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _digest_rows(cur: sqlite3.Cursor) -> tuple[int, str]:
    """(row count, sha256) of a cursor's rows, encoded type-exactly.

    Rows are pickled (protocol 4, memo off so only values count, not object identity) in
    fixed-size batches: ints, floats, text, blobs and NULL all encode distinctly and
    exactly, and the encoding runs in C at close to the speed of fetching the rows
    (measured 3x faster than building a canonical text per row in SQL).
    """
    h = hashlib.sha256()
    count = 0
    while rows := cur.fetchmany(8192):
        buf = io.BytesIO()
        pickler = pickle.Pickler(buf, protocol=4)
        pickler.fast = True
        pickler.dump(rows)
        h.update(buf.getvalue())
        count += len(rows)
    return count, h.hexdigest()


class SQLite(Resource):
    """A SQLite database file.

    The file may be absent before the run (a migration that creates it): its snapshot
    then records "absent", and restoring it removes the file.
    """

    kind: ClassVar[str] = "sqlite"
    transactional: ClassVar[bool] = True

    def __init__(
        self,
        name: str,
        path: str | os.PathLike[str],
        *,
        create: bool = False,
        backup_when_read: bool = True,
    ) -> None:
        super().__init__(name, backup_when_read=backup_when_read)
        self.path = Path(path)
        self.must_exist = not create

    def location(self) -> str:
        return str(self.path)

    def exists(self) -> bool:
        return self.path.exists()

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection that is closed on exit (an open file is not created by reading)."""
        conn = connect(self.path)
        try:
            yield conn
        finally:
            conn.close()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only query (the database is opened read-only)."""
        if not self.path.exists():
            raise ResourceError(f"{self.name}: database {self.path} does not exist")
        with closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)) as conn:
            return [tuple(r) for r in conn.execute(sql, tuple(params)).fetchall()]

    def schema(self) -> dict[str, dict[str, Any]]:
        """Tables with their columns, and indexes/views/triggers (handrail's own excluded)."""
        if not self.path.exists():
            return {}
        with closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)) as conn:
            return schema_of(conn)

    def validate(self) -> None:
        if not self.path.exists():
            if self.must_exist:
                raise ResourceError(
                    f"{self.name}: database {self.path} does not exist",
                    hint="check the path; pass create=True if the runbook creates it",
                )
            return
        if self.path.is_dir():
            raise ResourceError(f"{self.name}: {self.path} is a directory, not a SQLite file")
        try:
            with closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)) as conn:
                row = conn.execute("PRAGMA quick_check").fetchone()
        except sqlite3.DatabaseError as exc:
            raise ResourceError(
                f"{self.name}: {self.path} is not a usable SQLite database ({exc})",
                hint="restore it from a backup, or point the runbook at the right file",
            ) from exc
        if row is None or row[0] != "ok":
            raise ResourceError(
                f"{self.name}: {self.path} failed PRAGMA quick_check: {row[0] if row else '?'}",
                hint="the database is corrupt; restore it from a backup before migrating",
            )

    # -- fingerprint ------------------------------------------------------------------
    can_clone_schema = True

    def size_bytes(self) -> int | None:
        return sum(
            p.stat().st_size
            for p in (self.path, Path(f"{self.path}-wal"))
            if p.exists() and p.is_file()
        )

    def clone_schema(self, scratch: Path) -> SQLite:
        """Tables, indexes, views and triggers (and ``user_version``), with no rows."""
        copy = self.clone_empty(scratch)
        if not self.path.exists():
            return copy
        with (
            closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)) as src,
            closing(sqlite3.connect(str(copy.path))) as dst,
        ):
            objects = src.execute(
                "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE "
                "'sqlite\\_%' ESCAPE '\\' ORDER BY CASE type WHEN 'table' THEN 0 "
                "WHEN 'index' THEN 1 ELSE 2 END, rowid"
            ).fetchall()
            for (sql,) in objects:
                try:
                    dst.execute(sql)
                except sqlite3.OperationalError as exc:
                    if "already exists" not in str(exc):  # a virtual table's own shadows
                        raise
            version = src.execute("PRAGMA user_version").fetchone()[0]
            dst.execute(f"PRAGMA user_version={int(version)}")
            dst.commit()
        return copy

    def fingerprint(self) -> Fingerprint:
        if not self.path.exists():
            return ABSENT
        self.validate()
        with closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)) as conn:
            return fingerprint_connection(conn)

    # -- backups ----------------------------------------------------------------------
    def snapshot(self, dest: Path) -> Backup:
        if not self.path.exists():
            return Backup(self.name, self.kind, None, "", 0, ABSENT, {"absent": True})
        self.validate()
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / f"{self.name}.sqlite"
        tmp = target.with_suffix(".partial")
        tmp.unlink(missing_ok=True)
        with (
            closing(sqlite3.connect(str(self.path), timeout=30)) as src,
            closing(sqlite3.connect(str(tmp))) as dst,
        ):
            src.backup(dst)  # one step: a consistent image under one read transaction
            fp = fingerprint_connection(dst)
            dst.execute("PRAGMA journal_mode=DELETE")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        tmp.replace(target)
        digest, size = sha256_file(target)
        return Backup(self.name, self.kind, target, digest, size, fp, {"source": str(self.path)})

    def restore(self, backup: Backup) -> None:
        if backup.path is None:
            for suffix in ("", *_SIDE_FILES):
                Path(str(self.path) + suffix).unlink(missing_ok=True)
            return
        backup.check_artefact()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with (
            closing(sqlite3.connect(f"file:{backup.path}?mode=ro", uri=True)) as src,
            closing(sqlite3.connect(str(self.path), timeout=30)) as dst,
        ):
            src.backup(dst)

    def clone(self, scratch: Path) -> SQLite:
        copy = self.clone_empty(scratch)
        if self.path.exists():
            with (
                closing(sqlite3.connect(str(self.path), timeout=30)) as src,
                closing(sqlite3.connect(str(copy.path))) as dst,
            ):
                src.backup(dst)
        return copy

    def restored_matches(self, copy: Resource, backup: Backup) -> bool:
        # The backup API copies pages: a restore into an empty file reproduces the backup
        # byte for byte, which proves it without a second logical fingerprint.
        return isinstance(copy, SQLite) and sha256_file(copy.path)[0] == backup.sha256

    def clone_empty(self, scratch: Path) -> SQLite:
        scratch.mkdir(parents=True, exist_ok=True)
        return SQLite(self.name, scratch / (self.path.name or f"{self.name}.sqlite"), create=True)

    # -- ledger: batch records committed with the batch --------------------------------
    LEDGER_DDL: ClassVar[str] = (
        f"CREATE TABLE IF NOT EXISTS {LEDGER_PREFIX}ledger ("
        "run_id TEXT NOT NULL, step TEXT NOT NULL, batch INTEGER NOT NULL, "
        "items INTEGER NOT NULL, at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')), "
        "PRIMARY KEY (run_id, step, batch))"
    )

    @staticmethod
    def ledger_mark(
        conn: sqlite3.Connection, run_id: str, step: str, batch: int, items: int
    ) -> None:
        """Record a batch inside the caller's open transaction, beside the change itself."""
        conn.execute(SQLite.LEDGER_DDL)
        conn.execute(
            f"INSERT INTO {LEDGER_PREFIX}ledger (run_id, step, batch, items) VALUES (?,?,?,?)",
            (run_id, step, batch, items),
        )

    def ledger_batches(self, run_id: str, step: str) -> set[int]:
        """Batches of ``step`` in ``run_id`` that committed in this database."""
        if not self.path.exists():
            return set()
        with self.connect() as conn:
            if not _has_table(conn, f"{LEDGER_PREFIX}ledger"):
                return set()
            rows = conn.execute(
                f"SELECT batch FROM {LEDGER_PREFIX}ledger WHERE run_id=? AND step=?",
                (run_id, step),
            ).fetchall()
        return {int(r[0]) for r in rows}

    @staticmethod
    def ledger_clear(conn: sqlite3.Connection, run_id: str, step: str) -> None:
        """Forget a step's batches (inside a rollback's transaction); drop empty ledgers."""
        if not _has_table(conn, f"{LEDGER_PREFIX}ledger"):
            return
        conn.execute(f"DELETE FROM {LEDGER_PREFIX}ledger WHERE run_id=? AND step=?", (run_id, step))
        drop_empty_ledger_tables(conn)


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)
    ).fetchone()
    return row is not None


def drop_empty_ledger_tables(conn: sqlite3.Connection) -> None:
    """Drop handrail's bookkeeping tables once nothing in them is needed any more."""
    names = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE ? ESCAPE '\\'",
            (LEDGER_PREFIX.replace("_", "\\_") + "%",),
        )
    ]
    for name in names:
        if conn.execute(f"SELECT 1 FROM {quote_ident(name)} LIMIT 1").fetchone() is None:
            conn.execute(f"DROP TABLE {quote_ident(name)}")


def schema_of(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """Tables (and their columns) and indexes, without handrail's own tables."""
    out: dict[str, dict[str, Any]] = {}
    for typ, name, tbl in conn.execute(
        "SELECT type, name, tbl_name FROM sqlite_master "
        "WHERE type IN ('table','index','view','trigger') ORDER BY type, name"
    ):
        if name.startswith((LEDGER_PREFIX, "sqlite_")) or tbl.startswith(LEDGER_PREFIX):
            continue
        if typ == "table":
            cols = [r[1] for r in conn.execute(f"PRAGMA table_info({quote_ident(name)})")]
            out[name] = {"type": "table", "columns": cols}
        else:
            out[name] = {"type": typ, "table": tbl}
    return out


def table_order(conn: sqlite3.Connection, table: str) -> tuple[list[str], str]:
    """The table's columns and an ORDER BY that gives a total order by key."""
    info = conn.execute(f"PRAGMA table_info({quote_ident(table)})").fetchall()
    cols = [r[1] for r in info]
    pk = [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5] > 0]
    keys = pk or cols
    # Without a primary key, rows are ordered by all their values: duplicates are adjacent
    # and hash the same in either database, so the order is total for hashing purposes.
    order = ", ".join(quote_ident(c) for c in keys) if keys else "rowid"
    return cols, order


def fingerprint_connection(conn: sqlite3.Connection) -> Fingerprint:
    """Normalized schema plus every table's rows in key order, one part per object."""
    parts: dict[str, str] = {}
    for typ, name, sql in conn.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY type, name"
    ).fetchall():
        if name.startswith(LEDGER_PREFIX):
            continue
        norm = _WS.sub(" ", str(sql)).strip()
        parts[f"schema:{typ}:{name}"] = hashlib.sha256(norm.encode()).hexdigest()
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"
        ).fetchall()
    ]
    for table in tables:
        if table.startswith(LEDGER_PREFIX) or (
            table.startswith("sqlite_") and table != "sqlite_sequence"
        ):
            continue
        cols, order = table_order(conn, table)
        if table == "sqlite_sequence":
            order = "name"
        select = ", ".join(quote_ident(c) for c in cols) or "NULL"
        count, digest = _digest_rows(
            conn.execute(f"SELECT {select} FROM {quote_ident(table)} ORDER BY {order}")
        )
        parts[f"rows:{table}"] = f"{count}:{digest}"
    return Fingerprint(digest_parts("sqlite", parts), parts)
