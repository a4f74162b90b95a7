"""Reading the source table of a copy or a parity check, in key order.

A :class:`Source` reads one table of a SQLite file or a PostgreSQL database: its columns
and their kinds, key ranges (:meth:`Source.boundaries`), rows of a range, and the rows that
share a natural key (:func:`find_losers` picks the winner of each). :func:`reader_processes`
starts the forked SQLite readers that copy and parity share.

Nothing here imports psycopg until a PostgreSQL source is opened: parity between two
SQLite files runs without it.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, Any

from ..errors import BadInput
from ..model import Reject
from ..resources.names import pg_literal_percent, qualified, quote_ident, split_table
from ..resources.sqlite import SQLite
from .mapping import (
    MappingError,
    RowMapper,
    TableMap,
    key_text,
    kind_of_pg_type,
    kind_of_sqlite_type,
)
from .read_sql import lines_sql, reader_init

if TYPE_CHECKING:
    from ..resources.postgres import Postgres

__all__ = [
    "PostgresSource",
    "SQLiteSource",
    "Source",
    "find_losers",
    "open_source",
    "reader_processes",
]


class Source:
    """Reads one table of a source database in key order."""

    table: str
    key: list[str]
    columns: list[str]
    dialect: str
    ph: str  # the driver's parameter placeholder

    def kinds(self) -> dict[str, str]:
        raise NotImplementedError

    def _fetch(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """All rows of ``query`` run on this thread's connection."""
        raise NotImplementedError

    def _filter(self, where: str) -> str:
        """A mapping's ``where`` as it goes into a query of this driver."""
        return where

    def read(
        self,
        cols: Sequence[str],
        lo: tuple[Any, ...] | None,
        hi: tuple[Any, ...] | None,
        where: str | None,
    ) -> list[tuple[Any, ...]]:
        query, params = self.range_sql(cols, lo, hi, where, self.ph)
        return self._fetch(query, params)

    def rows_where_in(
        self, cols: Sequence[str], match: Sequence[str], values: Sequence[tuple[Any, ...]]
    ) -> list[tuple[Any, ...]]:
        """Rows (``cols``, then the source key) whose ``match`` columns equal one of
        ``values``, in key order per chunk (both drivers take 30,000 parameters)."""
        out: list[tuple[Any, ...]] = []
        m = ", ".join(self.q(c) for c in match)
        sel = ", ".join([*(self.select_expr(c) for c in cols), *(self.q(c) for c in self.key)])
        k = ", ".join(self.q(c) for c in self.key)
        step = max(1, 30000 // max(1, len(match)))
        for i in range(0, len(values), step):
            chunk = values[i : i + step]
            ph = ", ".join("(" + ", ".join([self.ph] * len(match)) + ")" for _ in chunk)
            out += self._fetch(
                f"SELECT {sel} FROM {self.rel} WHERE ({m}) IN (VALUES {ph}) ORDER BY {k}",
                [v for t in chunk for v in t],
            )
        return out

    def duplicates(
        self, natural: Sequence[str], order_by: Sequence[str], where: str | None
    ) -> list[tuple[Any, ...]]:
        return self._fetch(self._dups_sql(natural, order_by, where), [])

    def close(self) -> None:
        pass

    # helpers shared by both dialects (row values work in SQLite >= 3.15 and PostgreSQL)
    def q(self, name: str) -> str:
        return quote_ident(name)

    def range_sql(
        self,
        cols: Sequence[str],
        lo: Any,
        hi: Any,
        where: str | None,
        ph: str,
        *,
        exprs: bool = False,
    ) -> tuple[str, list[Any]]:
        k = ", ".join(self.q(c) for c in self.key)
        cond, params = self._range_cond(lo, hi, where, ph)
        picked = cols if exprs else [self.select_expr(c) for c in cols]
        sel = ", ".join([*picked, *(self.q(c) for c in self.key)])
        return f"SELECT {sel} FROM {self.rel} {cond} ORDER BY {k}", params

    def _range_cond(self, lo: Any, hi: Any, where: str | None, ph: str) -> tuple[str, list[Any]]:
        """`` WHERE`` and the conditions of the key range (lo, hi] and ``where``."""
        k = ", ".join(self.q(c) for c in self.key)
        conds, params = [], []
        if lo is not None:
            conds.append(f"({k}) > ({', '.join([ph] * len(lo))})")
            params += list(lo)
        if hi is not None:
            conds.append(f"({k}) <= ({', '.join([ph] * len(hi))})")
            params += list(hi)
        if where:
            conds.append(f"({self._filter(where)})")
        return (f" WHERE {' AND '.join(conds)}" if conds else ""), params

    def select_expr(self, col: str) -> str:
        return self.q(col)

    @property
    def rel(self) -> str:
        return self.q(self.table)

    def boundaries(self, every: int, where: str | None) -> list[tuple[Any, ...]]:
        """Every ``every``-th key in key order: one index walk of ``every`` rows per
        boundary (``OFFSET`` from the previous one), never a sort of the whole table."""
        k = ", ".join(self.q(c) for c in self.key)
        out: list[tuple[Any, ...]] = []
        while True:
            conds = [f"({self._filter(where)})"] if where else []
            params: list[Any] = []
            if out:
                conds.append(f"({k}) > ({', '.join([self.ph] * len(self.key))})")
                params = list(out[-1])
            cond = f" WHERE {' AND '.join(conds)}" if conds else ""
            rows = self._fetch(
                f"SELECT {k} FROM {self.rel}{cond} ORDER BY {k} LIMIT 1 OFFSET {int(every) - 1}",
                params,
            )
            row = rows[0] if rows else None
            if row is None:
                return out
            out.append(tuple(row))

    def _dups_sql(self, natural: Sequence[str], order_by: Sequence[str], where: str | None) -> str:
        n = ", ".join(self.q(c) for c in natural)
        cond = f" WHERE ({self._filter(where)})" if where else ""
        and_cond = f" AND ({self._filter(where)})" if where else ""
        sel = ", ".join(self.q(c) for c in [*natural, *self.key, *order_by])
        return (
            f"SELECT {sel} FROM {self.rel} WHERE ({n}) IN (SELECT {n} FROM {self.rel}{cond} "
            f"GROUP BY {n} HAVING count(*) > 1){and_cond}"
        )


class SQLiteSource(Source):
    dialect = "sqlite"
    ph = "?"

    def __init__(self, db: SQLite, table: str, key: Sequence[str] | None) -> None:
        if not db.path.exists():
            raise BadInput(f"{db.name}: source database {db.path} does not exist")
        self.uri = f"file:{db.path}?mode=ro"
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.table = table
        info = self.conn.execute(f"PRAGMA table_info({quote_ident(table)})").fetchall()
        if not info:
            raise MappingError(f"{db.name}: source table {table!r} does not exist in {db.path}")
        self.columns = [r[1] for r in info]
        self._decl = {r[1]: str(r[2] or "") for r in info}
        pk = [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5] > 0]
        self.key = list(key) if key else (pk or ["rowid"])

    @property
    def _uri(self) -> str:
        """:attr:`uri` by its name before the package was one (kept for one release)."""
        return self.uri

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's read-only connection (copy_table reads batches in threads)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # check_same_thread=False: close() runs in the thread that made the source
            conn = sqlite3.connect(self.uri, uri=True, timeout=30, check_same_thread=False)
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def kinds(self) -> dict[str, str]:
        return {c: kind_of_sqlite_type(d) for c, d in self._decl.items()}

    def _fetch(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self.conn.execute(query, params).fetchall()

    def range_from(
        self,
        lo: tuple[Any, ...] | None,
        hi: tuple[Any, ...] | None,
        where: str | None,
        excluded: Sequence[tuple[Any, ...]],
    ) -> tuple[str, list[Any]]:
        """``FROM ... WHERE ...`` of a key range, leaving out the rows whose source keys
        are ``excluded`` (integers and texts, passed as one JSON parameter)."""
        cond, params = self._range_cond(lo, hi, where, "?")
        if excluded:
            k = ", ".join(self.q(c) for c in self.key)
            if len(self.key) == 1:
                sub = "SELECT value FROM json_each(?)"
                payload = json.dumps([t[0] for t in excluded])
            else:
                picks = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(self.key)))
                sub = f"SELECT {picks} FROM json_each(?)"
                payload = json.dumps([list(t) for t in excluded])
            cond += f"{' AND' if cond else ' WHERE'} ({k}) NOT IN ({sub})"
            params.append(payload)
        return f"FROM {self.rel}{cond}", params

    def lines_query(
        self,
        line: str,
        lo: tuple[Any, ...] | None,
        hi: tuple[Any, ...] | None,
        where: str | None,
        excluded: Sequence[tuple[Any, ...]],
    ) -> tuple[str, list[Any]]:
        """The :func:`~handrail.tablecopy.read_sql.lines_sql` query of a key range (see
        :meth:`range_from`)."""
        rest, params = self.range_from(lo, hi, where, excluded)
        return lines_sql(line, [self.q(c) for c in self.key], rest), params

    def close(self) -> None:
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()


class PostgresSource(Source):
    dialect = "postgres"
    ph = "%s"

    def __init__(self, db: Postgres, table: str, key: Sequence[str] | None) -> None:
        from ..resources.postgres import CANONICAL_SETTINGS, table_columns

        self.conn = db._open(autocommit=True)
        for stmt in CANONICAL_SETTINGS:
            self.conn.execute(stmt.replace("SET LOCAL", "SET").encode())
        self.schema, self.table = split_table(table)
        cols = table_columns(self.conn, qualified(self.schema, self.table))
        if not cols:
            raise MappingError(f"{db.name}: source table {table!r} does not exist")
        self.columns = [c.name for c in cols]
        self.types = {c.name: c.type for c in cols}
        if key:
            self.key = list(key)
        else:
            from ..resources.postgres import table_key

            (oid,) = self.conn.execute(
                "SELECT to_regclass(%s)::oid", (qualified(self.schema, self.table),)
            ).fetchone() or (0,)
            self.key = table_key(self.conn, oid)
            if not self.key:
                raise MappingError(
                    f"{db.name}: source table {table!r} has no primary key; "
                    "give the mapping a source_key"
                )

    @property
    def rel(self) -> str:
        return qualified(self.schema, self.table)

    def select_expr(self, col: str) -> str:
        # values come as PostgreSQL's text (canonical settings): conversions see text
        return f"{self.q(col)}::text"

    def kinds(self) -> dict[str, str]:
        return {c: kind_of_pg_type(t) for c, t in self.types.items()}

    def _fetch(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self.conn.execute(query.encode(), list(params)).fetchall()

    def _filter(self, where: str) -> str:
        # psycopg reads '%' as a placeholder in a query with parameters (always a list
        # here, even empty): a LIKE pattern's '%' must reach PostgreSQL as itself
        return pg_literal_percent(where)

    def close(self) -> None:
        self.conn.close()


def open_source(db: SQLite | Postgres, table: str, key: Sequence[str] | None = None) -> Source:
    """A reader of ``table`` in ``db`` ordered by ``key`` (default: its primary key)."""
    if isinstance(db, SQLite):
        return SQLiteSource(db, table, key)
    from ..resources.postgres import Postgres

    if isinstance(db, Postgres):
        return PostgresSource(db, table, key)
    raise BadInput(f"cannot copy from a {db.kind} resource; SQLite or PostgreSQL only")


def find_losers(
    src: Source, mapping: TableMap, mapper: RowMapper
) -> tuple[dict[tuple[Any, ...], str], list[Reject]]:
    """Rows sharing a natural key: the last by ``order_by`` (then the source key) wins.

    Returns {source key of each loser: winner's source key} and one report per loser.
    """
    losers: dict[tuple[Any, ...], str] = {}
    reports: list[Reject] = []
    natural = []
    for k in mapping.key:
        b = mapper.columns[mapper.targets.index(k)]
        if b.source_index is None:
            raise MappingError(
                f"mapping {mapping.name}: natural key column {k!r} is computed; "
                "it must come from a source column"
            )
        natural.append(mapper.select[b.source_index])
    if set(natural) >= set(src.key):
        return losers, reports  # the natural key contains the source key: unique
    order = list(mapping.order_by)
    rows = src.duplicates(natural, order, mapping.where)
    nn, nk = len(natural), len(src.key)
    groups: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[:nn]), []).append(tuple(r))

    def rank(r: tuple[Any, ...]) -> tuple[Any, ...]:
        vals = [*r[nn + nk :], *r[nn : nn + nk]]
        return tuple((v is not None, type(v).__name__, v) for v in vals)

    for nat in sorted(groups, key=lambda t: [str(v) for v in t]):
        members = sorted(groups[nat], key=rank)
        winner = key_text(members[-1][nn : nn + nk])
        for m in members[:-1]:
            skey = tuple(m[nn : nn + nk])
            losers[skey] = winner
            reports.append(
                Reject(
                    mapping.source,
                    key_text(nat),
                    f"duplicate natural key: source row {key_text(skey)} superseded by "
                    f"row {winner}" + (f" (last by {', '.join(order)})" if order else ""),
                )
            )
    return losers, reports


def reader_processes(n: int) -> ProcessPoolExecutor:
    """``n`` forked reader processes, started now. They ignore Ctrl-C (the parent stops
    them) and die with the parent."""
    pool = ProcessPoolExecutor(
        n,
        mp_context=multiprocessing.get_context("fork"),
        initializer=reader_init,
        initargs=(os.getpid(),),
    )
    for fut in [pool.submit(os.getpid) for _ in range(n)]:
        fut.result()
    return pool
