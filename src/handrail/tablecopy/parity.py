"""Prove that a source and a target hold the same rows, and make them so.

:func:`parity` compares the mapped columns of a source table (SQLite or PostgreSQL) with
a target table (SQLite or PostgreSQL) by natural key, *after* the mapping's conversions:
each value becomes one canonical text (:func:`handrail.tablecopy.mapping.canonical`), so a TEXT
timestamp copied into TIMESTAMPTZ, or JSON text copied into JSONB, is not a false
difference.

How. Segment boundaries are every ``segment_rows``-th distinct natural key of the
source. Each side hashes every segment (``md5`` over the key-ordered row texts), both
sides at once (the target's in a thread; each side has its own connection):

- PostgreSQL hashes inside the server; only the digests travel. With a btree index on
  the key (the unique index a copy's upsert needs) one query reads each segment as an
  index range (``LATERAL``, ``md5(string_agg(row_text, E'\\n' ORDER BY key))``);
  without one, a single pass finds each row's segment with ``width_bucket``. Each
  canonical text is computed once per row (an ``OFFSET 0`` subquery), JIT is off;
- SQLite builds each row's text in SQL (C) for the common shapes of values
  (:mod:`handrail.tablecopy.parity_sqlite`: text, integers, booleans, floats to 15 digits away from
  rounding ties, ISO 8601 and epoch timestamps), calling Python only for the others
  (JSON, memoised per document; odd timestamps; near-tie floats); Python hashes the
  texts per segment. A source of :data:`PROCESS_MIN_ROWS` rows or more is hashed by
  forked reader processes, a run of segments each (Python's sqlite3 holds the GIL for
  every row, so threads would share one core), while a thread looks for duplicate
  natural keys as the segment boundaries are read.

Keys order as bytes on both sides (``C`` collation in PostgreSQL, SQLite's BINARY).
Segments whose digests differ are split again (recursively) until they are small, then
their rows are compared one by one: keys only in the source are *missing*, keys only in
the target are *extra*, keys in both with other values are *different* (with samples).

Row texts are unambiguous: each value is ``~`` for NULL, ``<text>,`` for kinds whose
texts never hold ``,`` or ``~`` (numbers, booleans, timestamps, uuids, bytes), else
``<length>:<text>``.

:func:`reconcile` makes a PostgreSQL target equal to the source for the mapped columns
(upserts for missing and different rows, deletes for extra ones, one transaction), or
with ``dry_run`` only counts what it would do.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from contextlib import closing, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..errors import BadInput
from ..model import Reject
from ..resources.names import pg_literal_percent, qualified, quote_ident, split_table
from ..resources.sqlite import SQLite
from .mapping import (
    BoundColumn,
    Column,
    Converted,
    CopySpec,
    MappingError,
    RowMapper,
    TableMap,
    canonical,
    for_kind,
    key_text,
    kind_of_pg_type,
    kind_of_sqlite_type,
)
from .parity_sqlite import float_probe_ok, token_sql
from .sources import find_losers, open_source, reader_processes

if TYPE_CHECKING:  # psycopg loads only when a side is PostgreSQL
    import psycopg

    from ..resources.postgres import Postgres

__all__ = [
    "BARE_KINDS",
    "NULL_TOKEN",
    "PROCESS_MIN_ROWS",
    "Difference",
    "Digests",
    "Key",
    "ParityReport",
    "Range",
    "ReconcileResult",
    "parity",
    "reconcile",
    "token",
]

NULL_TOKEN = "~"

#: kinds whose canonical texts hold neither ``,`` nor ``~`` (digits, signs, ``.``, ``:``,
#: letters): their token is the text and a ``,``, with no length to compute
BARE_KINDS = frozenset({"int", "float", "float4", "numeric", "bool", "timestamp", "uuid", "bytes"})


def token(text: str | None, kind: str = "text") -> str:
    """One value of a row text: ``~`` for NULL, ``<text>,`` for :data:`BARE_KINDS`,
    else ``<length>:<text>``."""
    if text is None:
        return NULL_TOKEN
    return f"{text}," if kind in BARE_KINDS else f"{len(text)}:{text}"


@dataclass
class Difference:
    """A key present on both sides with other values: ``{column: (source, target)}``."""

    key: str
    columns: dict[str, tuple[str | None, str | None]]


@dataclass
class ParityReport:
    """What differs, by natural key. ``equal`` when nothing does."""

    source_rows: int = 0
    target_rows: int = 0
    segments: int = 0
    segments_differing: int = 0
    missing: list[tuple[Any, ...]] = field(default_factory=list)  # in source, not target
    extra: list[tuple[Any, ...]] = field(default_factory=list)  # in target, not source
    different: list[tuple[Any, ...]] = field(default_factory=list)
    samples: list[Difference] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not (self.missing or self.extra or self.different)

    def summary(self) -> str:
        if self.equal:
            return f"{self.source_rows} rows equal in {self.segments} segments"
        return (
            f"{len(self.missing)} missing, {len(self.extra)} extra, "
            f"{len(self.different)} different (source {self.source_rows} rows, "
            f"target {self.target_rows})"
        )


# -- sides -------------------------------------------------------------------------------
Key = tuple[Any, ...]
Range = tuple[Key | None, Key | None]  # lo <= key < hi (None: unbounded)
Digests = dict[int, tuple[int, str]]


def _md5_lines(lines: list[str]) -> str:
    return hashlib.md5("\n".join(lines).encode(), usedforsecurity=False).hexdigest()


def _hash_segments(rows: Iterable[Sequence[Any]], nk: int, bounds: list[Key]) -> Digests:
    """{segment: (rows, md5)} of key-ordered rows (key..., row text); segment i holds
    bounds[i-1] <= key < bounds[i]."""
    out: Digests = {}
    seg, nxt = 0, (bounds[0] if bounds else None)
    buf: list[str] = []
    for row in rows:
        if nxt is not None and tuple(row[:nk]) >= nxt:
            if buf:
                out[seg] = (len(buf), _md5_lines(buf))
                buf = []
            key = tuple(row[:nk])
            while seg < len(bounds) and key >= bounds[seg]:
                seg += 1
            nxt = bounds[seg] if seg < len(bounds) else None
        buf.append(row[nk])
    if buf:
        out[seg] = (len(buf), _md5_lines(buf))
    return out


class _Side:
    """One table seen as canonical rows in natural-key order."""

    columns: list[str]

    def thresholds(self, every: int, rng: Range) -> list[Key]:
        """Keys in ``rng`` at positions every+1, 2*every+1, ... (segment starts)."""
        raise NotImplementedError

    def digests(self, bounds: list[Key], rng: Range) -> Digests:
        """{segment: (rows, md5)}; segment i holds bounds[i-1] <= key < bounds[i]."""
        raise NotImplementedError

    def rows(self, rng: Range) -> dict[Key, list[str | None]]:
        """Canonical values of the rows in ``rng``, by key."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class _StreamSide(_Side):
    """Rows streamed in key order as (key..., canonical values...) or (key..., row text);
    hashed in Python per segment."""

    def __init__(
        self,
        columns: list[str],
        key_len: int,
        stream: Callable[[Range, bool | None], Iterator[Sequence[Any]]],
        closer: Callable[[], None],
        parallel: Callable[[list[Key], Range], Digests | None] | None = None,
    ) -> None:
        self.columns = columns
        self.key_len = key_len
        self._stream = stream  # (range, as_text; None: keys only, losers included) -> rows
        self._closer = closer
        self._parallel = parallel  # digests by reader processes, or None to hash here

    def thresholds(self, every: int, rng: Range) -> list[Key]:
        # Keys come in order, so the rows sharing a natural key are adjacent: counting each
        # natural key once counts exactly the rows left after the duplicates' losers, and
        # needs no loser list (this runs while the losers are still being looked for).
        out: list[Key] = []
        nk = self.key_len
        n, last = 0, None
        for row in self._stream(rng, None):
            key = tuple(row[:nk])
            if key == last:
                continue
            if n and n % every == 0:
                out.append(key)
            n, last = n + 1, key
        return out

    def digests(self, bounds: list[Key], rng: Range) -> Digests:
        if self._parallel is not None:
            got = self._parallel(bounds, rng)
            if got is not None:
                return got
        return _hash_segments(self._stream(rng, True), self.key_len, bounds)

    def rows(self, rng: Range) -> dict[Key, list[str | None]]:
        nk = self.key_len
        return {tuple(r[:nk]): list(r[nk:]) for r in self._stream(rng, False)}

    def close(self) -> None:
        self._closer()


class _PgSide(_Side):
    """A PostgreSQL table (one-column key) whose rows are hashed inside the server."""

    def __init__(
        self,
        conn: psycopg.Connection,
        rel: str,
        key: str,
        key_type: str,
        canon: list[str],
        kinds: list[str],
        columns: list[str],
    ) -> None:
        self.conn = conn
        self.rel = rel
        self.key = key
        self.key_type = key_type
        self.canon = canon
        self.kinds = kinds
        self.columns = columns
        self._k, self._indexed = _pg_key_access(conn, rel, key, key_type)

    def _range(self, rng: Range) -> tuple[str, list[Any]]:
        conds, params = [], []
        if rng[0] is not None:
            conds.append(f"{self._k} >= %s")
            params.append(rng[0][0])
        if rng[1] is not None:
            conds.append(f"{self._k} < %s")
            params.append(rng[1][0])
        return (" WHERE " + " AND ".join(conds)) if conds else "", params

    def thresholds(self, every: int, rng: Range) -> list[Key]:
        cond, params = self._range(rng)
        rows = self.conn.execute(
            f"SELECT k FROM (SELECT {self._k} AS k, row_number() OVER (ORDER BY {self._k}) "
            f"AS n FROM {self.rel}{cond}) s WHERE n > 1 AND (n - 1) % {int(every)} = 0 "
            "ORDER BY 1".encode(),
            params,
        ).fetchall()
        return [tuple(r) for r in rows]

    def _canon_rows(self, cond: str) -> str:
        """Rows (k, c0, c1, ...) of canonical texts. OFFSET 0 keeps the subquery apart,
        so each canonical text is computed once, not once per use in its token."""
        cols = "".join(f", {e} AS c{i}" for i, e in enumerate(self.canon))
        return f"(SELECT {self._k} AS k{cols} FROM {self.rel}{cond} OFFSET 0)"

    def _agg(self) -> str:
        """count and md5 of the key-ordered row texts of a group of :meth:`_canon_rows`."""
        text = " || ".join(_pg_token(f"c{i}", k) for i, k in enumerate(self.kinds)) or "''"
        return f"count(*) AS n, md5(string_agg({text}, E'\\n' ORDER BY k)) AS h"

    def digests(self, bounds: list[Key], rng: Range) -> Digests:
        if self._indexed and bounds:
            return self._digests_by_range(bounds, rng)
        # No btree index to read key ranges from: one pass, each row's segment found by
        # width_bucket (a binary search, but one that walks variable-width elements).
        cond, params = self._range(rng)
        base = self.key_type.split("(")[0]
        rows = self.conn.execute(
            f"SELECT width_bucket(k, %s::{base}[]) AS b, {self._agg()} "
            f"FROM {self._canon_rows(cond)} s GROUP BY b".encode(),
            [[b[0] for b in bounds], *params],
        ).fetchall()
        return {int(b): (int(n), str(h)) for b, n, h in rows}

    def _digests_by_range(self, bounds: list[Key], rng: Range) -> Digests:
        """One index range scan per segment: no bucket search, rows already in key order."""
        k, base = self._k, self.key_type.split("(")[0]
        parts, params = [], []
        first, fparams = self._range((rng[0], bounds[0]))
        parts.append(f"SELECT 0 AS i, {self._agg()} FROM {self._canon_rows(first)} s")
        params += fparams
        if len(bounds) > 1:
            mid = f" WHERE {k} >= g.lo AND {k} < g.hi"
            parts.append(
                f"SELECT g.i::int, d.n, d.h FROM unnest(%s::{base}[], %s::{base}[]) "
                f"WITH ORDINALITY g(lo, hi, i), "
                f"LATERAL (SELECT {self._agg()} FROM {self._canon_rows(mid)} s) d"
            )
            params += [[b[0] for b in bounds[:-1]], [b[0] for b in bounds[1:]]]
        last, lparams = self._range((bounds[-1], rng[1]))
        parts.append(f"SELECT {len(bounds)}, {self._agg()} FROM {self._canon_rows(last)} s")
        params += lparams
        rows = self.conn.execute(" UNION ALL ".join(parts).encode(), params).fetchall()
        return {int(i): (int(n), str(h)) for i, n, h in rows if n}

    def rows(self, rng: Range) -> dict[Key, list[str | None]]:
        cond, params = self._range(rng)
        vals = ", ".join(self.canon) or "NULL"
        rows = self.conn.execute(
            f"SELECT {quote_ident(self.key)}, {vals} FROM {self.rel}{cond}".encode(), params
        ).fetchall()
        return {(r[0],): list(r[1:]) for r in rows}

    def close(self) -> None:
        with suppress(Exception):
            self.conn.close()


def _keyexpr(col: str, typ: str) -> str:
    q = quote_ident(col)
    return f'{q} COLLATE "C"' if kind_of_pg_type(typ) == "text" else q


def _pg_key_access(conn: psycopg.Connection, rel: str, key: str, typ: str) -> tuple[str, bool]:
    """(SQL for ``key`` ordered as bytes, whether a btree index reads ranges of it).

    A text key whose collation already orders as bytes (``C``/``POSIX``, or the database
    default when that is libc ``C``) is compared as it is, so its index serves ranges;
    with ``COLLATE "C"`` added no index of the column's own collation would.
    """
    row = conn.execute(
        "SELECT coll.collname, d.datcollate, to_jsonb(d) ->> 'datlocprovider', "
        "EXISTS (SELECT 1 FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid "
        "JOIN pg_am am ON am.oid = ic.relam WHERE i.indrelid = a.attrelid "
        "AND i.indkey[0] = a.attnum AND i.indpred IS NULL AND am.amname = 'btree' "
        "AND i.indcollation[0] = a.attcollation) "
        "FROM pg_attribute a LEFT JOIN pg_collation coll ON coll.oid = a.attcollation "
        "JOIN pg_database d ON d.datname = current_database() "
        "WHERE a.attrelid = to_regclass(%s) AND a.attname = %s",
        (rel, key),
    ).fetchone()
    if row is None:
        return _keyexpr(key, typ), False
    collname, datcollate, provider, indexed = row
    if kind_of_pg_type(typ) != "text":
        return quote_ident(key), bool(indexed)
    bytewise = collname in ("C", "POSIX") or (
        collname == "default" and datcollate in ("C", "POSIX") and provider in (None, "c")
    )
    if bytewise:
        return quote_ident(key), bool(indexed)
    return _keyexpr(key, typ), False


# -- canonical SQL per kind --------------------------------------------------------------
def _pg_canon(col: str, kind: str) -> str:
    """PostgreSQL text of a stored value of ``kind``, equal to :func:`canonical` (the
    session has ``extra_float_digits = 0``, so floats print with 15/6 digits)."""
    c = quote_ident(col)
    ts = '\'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\''
    return {
        "text": f"{c}::text",
        "int": f"{c}::text",
        "float": f"{c}::float8::text",
        "float4": f"{c}::float4::text",
        "numeric": f"{c}::numeric::text",
        "bool": f"CASE WHEN {c} THEN 't' WHEN NOT {c} THEN 'f' END",
        "timestamp": f"to_char({c}::timestamptz AT TIME ZONE 'UTC', {ts})",
        "date": f"to_char({c}, 'YYYY-MM-DD')",
        "json": f"{c}::jsonb::text",
        "bytes": f"encode({c}, 'hex')",
        "uuid": f"lower({c}::text)",
    }.get(kind, f"{c}::text")


def _pg_token(expr: str, kind: str) -> str:
    if kind in BARE_KINDS:
        return f"coalesce({expr} || ',', '~')"
    return f"coalesce(length({expr})::text || ':' || {expr}, '~')"


def _untoken(t: str | None, kind: str) -> str | None:
    if t is None or t == NULL_TOKEN:
        return None
    if t.startswith("!"):
        return t
    return t[:-1] if kind in BARE_KINDS else t.split(":", 1)[1]


def _py_token(b: BoundColumn) -> Callable[[Any], str]:
    """The exact token of a raw value, in Python (called from SQLite's SQL)."""
    conv, kind = b.convert.fn, b.kind

    def generic(v: Any) -> str:
        try:
            return token(canonical(kind, conv(v)), kind)
        except Exception as exc:  # a reject: a text no stored value can have
            return f"!reject: {exc}"

    if not _is_default(b):
        return generic
    if kind == "float":

        def real(v: Any) -> str:
            if type(v) is float and math.isfinite(v):
                return f"{v:.15g},"
            return generic(v)

        return real
    if kind == "timestamp":

        def ts(v: Any) -> str:
            if type(v) is str and v[4:5] == "-":
                try:
                    d = datetime.fromisoformat(v)
                    if d.tzinfo is not None:
                        d = d.astimezone(UTC).replace(tzinfo=None)
                except (ValueError, OverflowError):
                    return generic(v)
                return d.isoformat(timespec="microseconds") + "Z,"
            return generic(v)

        return ts
    if kind == "json":
        # JSON columns often repeat documents (tags, categories, settings), and parsing
        # and key-ordering one costs microseconds: remember the last few thousand
        memo: dict[str, str] = {}

        def doc(v: Any) -> str:
            if type(v) is not str or len(v) > _MEMO_CHARS:
                return generic(v)
            got = memo.get(v)
            if got is None:
                if len(memo) >= _MEMO_ENTRIES:
                    memo.clear()
                got = memo[v] = generic(v)
            return got

        return doc
    return generic


_MEMO_ENTRIES = 4096
_MEMO_CHARS = 2048


# -- building the sides ------------------------------------------------------------------
def _table_kinds(db: SQLite | Postgres, table: str) -> tuple[dict[str, str], dict[str, str]]:
    """(kinds, declared types) of a table's columns."""
    if not isinstance(db, SQLite):
        from ..resources.postgres import table_columns

        with db.connect() as conn:
            cols = table_columns(conn, qualified(*split_table(table)))
        if not cols:
            raise MappingError(f"{db.name}: table {table!r} does not exist")
        return {c.name: kind_of_pg_type(c.type) for c in cols}, {c.name: c.type for c in cols}
    if not db.path.exists():
        raise BadInput(f"{db.name}: database {db.path} does not exist")
    with closing(sqlite3.connect(f"file:{db.path}?mode=ro", uri=True)) as conn:
        info = conn.execute(f"PRAGMA table_info({quote_ident(table)})").fetchall()
    if not info:
        raise MappingError(f"{db.name}: table {table!r} does not exist in {db.path}")
    decl = {r[1]: str(r[2] or "") for r in info}
    return {c: kind_of_sqlite_type(d) for c, d in decl.items()}, decl


#: a SQLite source of at least this many rows is hashed by ``readers`` forked processes
#: (below, forking and the extra table scan cost more than the second core gives)
PROCESS_MIN_ROWS = 50_000

#: the Python token functions of SQLite sides hashed by reader processes, by job number:
#: set before the readers fork, so they inherit them (closures do not pickle)
_READER_TOKENS: dict[int, list[Callable[[Any], str]]] = {}
_JOBS = itertools.count(1)


def _reader_digests(
    job: int,
    uri: str,
    query: str,
    params: list[Any],
    nn: int,
    losers: frozenset[Key],
    bounds: list[Key],
    first: int,
) -> Digests:
    """In a reader process: the digests of one share of a SQLite table's segments, read on
    the process's own connection; its first segment is segment ``first`` of the table.
    The query gives rows (natural key..., source key..., row text)."""

    def rows(cur: sqlite3.Cursor) -> Iterator[Sequence[Any]]:
        while batch := cur.fetchmany(5000):
            for row in batch:
                if not losers or tuple(row[nn:-1]) not in losers:
                    yield (*row[:nn], row[-1])

    with closing(sqlite3.connect(uri, uri=True, timeout=30)) as conn:
        for i, f in enumerate(_READER_TOKENS[job]):
            conn.create_function(f"hr_tok_{i}", 1, f, deterministic=True)
        got = _hash_segments(rows(conn.execute(query, params)), nn, bounds)
    return {first + seg: v for seg, v in got.items()}


def _shares(bounds: list[Key], n: int) -> list[tuple[Range, list[Key], int]]:
    """The segments between ``bounds`` cut into ``n`` runs of about equal length:
    (key range, the run's own bounds, its first segment number) each."""
    out: list[tuple[Range, list[Key], int]] = []
    lo: Key | None = None
    first = 0
    for j in range(1, n):
        cut = j * len(bounds) // n  # this run ends below bounds[cut]
        if cut < first:
            continue
        out.append(((lo, bounds[cut]), bounds[first:cut], first))
        lo, first = bounds[cut], cut + 1
    out.append(((lo, None), bounds[first:], first))
    return out


def _stream_side(
    db: SQLite | Postgres, spec: TableMap, mapper: RowMapper, *, readers: int = 1
) -> _Side:
    """A side converted by ``mapper`` and streamed in natural-key order (losers of
    duplicate natural keys left out, as a copy leaves them out): see :class:`_SourceStream`."""
    s = _SourceStream(db, spec, mapper, readers)
    return _StreamSide(mapper.targets, s.nn, s.stream, s.close, s.parallel)


class _SourceStream:
    """A source table read through the copy's source reader, in natural-key order.

    A SQLite side without computed columns builds its row texts in SQL (the token
    functions of :mod:`.parity_sqlite`, Python functions where a conversion is not the
    default); otherwise rows are converted by ``mapper`` in Python, as the copy converts
    them. A SQLite side with its row texts in SQL and at least :data:`PROCESS_MIN_ROWS`
    rows is hashed by ``readers`` forked processes, each taking a run of segments:
    Python's sqlite3 takes the GIL back for every row, so threads would not use another
    core. They fork here, before any thread of this side starts (spawn would re-run the
    caller's main module). Duplicate natural keys of a SQLite side are looked for in a
    thread meanwhile (the query runs in SQLite, without the GIL).
    """

    def __init__(self, db: SQLite | Postgres, spec: TableMap, mapper: RowMapper, readers: int):
        self.spec, self.mapper, self.readers = spec, mapper, readers
        self.src: Any = open_source(db, spec.source, spec.source_key)
        self._closers: list[Callable[[], None]] = [self.src.close]
        try:
            self._key_order(isinstance(db, SQLite))
            self.tokens = self._sql_tokens()
            self._registered: set[int] = set()
            self.pool, self.job = self._start_readers()
            self._start_losers()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for f in reversed(self._closers):
            with suppress(Exception):
                f()

    # -- setting up ----------------------------------------------------------------------
    def _key_order(self, is_sqlite: bool) -> None:
        """The natural key's columns, their ORDER BY and the keys selected with a row."""
        src, mapper = self.src, self.mapper
        natural = [mapper.select[_source_index(mapper, k)] for k in self.spec.key]
        self.nn, self.nsk = len(natural), len(src.key)
        self.is_sqlite = is_sqlite
        self.ph = "?" if is_sqlite else "%s"
        if is_sqlite:
            self.korder = ", ".join(quote_ident(k) for k in natural)
        else:
            types: dict[str, str] = getattr(src, "types", {})
            # Qualified: when the natural key is also the source key, a column is selected
            # twice and a bare name in ORDER BY would be ambiguous.
            self.korder = ", ".join(
                f"{src.rel}.{_keyexpr(k, types.get(k, 'text'))}" for k in natural
            )
        self.keys_sel = ", ".join(quote_ident(k) for k in [*natural, *src.key])
        self.raw_sel = ", ".join(src.select_expr(c) for c in mapper.select)
        self.kinds = [b.kind for b in mapper.columns]
        self.py_tokens = [_py_token(b) for b in mapper.columns]

    def _sql_tokens(self) -> list[str] | None:
        """The SQL expression of each value's token, or None: rows converted in Python."""
        if not self.is_sqlite or self.mapper.has_compute:
            return None
        float_ok = float_probe_ok(self.src.conn)
        tokens = []
        for i, b in enumerate(self.mapper.columns):
            col = self.mapper.select[b.source_index or 0]
            py = f"hr_tok_{i}({quote_ident(col)})"
            tokens.append(token_sql(col, b.kind, py, float_ok=float_ok) if _is_default(b) else py)
        return tokens

    def _start_readers(self) -> tuple[ProcessPoolExecutor | None, int]:
        """The reader processes and their job number, for a large enough SQLite side."""
        if self.tokens is None or self.readers <= 1:
            return None, 0
        (count,) = self.src.conn.execute(f"SELECT count(*) FROM {self.src.rel}").fetchone()
        if count < PROCESS_MIN_ROWS:
            return None, 0
        job = next(_JOBS)
        _READER_TOKENS[job] = self.py_tokens
        try:
            pool = reader_processes(self.readers)
        finally:
            del _READER_TOKENS[job]
        self._closers.append(lambda: pool.shutdown(cancel_futures=True))
        return pool, job

    def _start_losers(self) -> None:
        self._found: Future[tuple[dict[Key, str], list[Reject]]] | None = None
        self._loser_keys: set[Key] | None = None
        if self.is_sqlite:
            finder = ThreadPoolExecutor(1, thread_name_prefix="parity-losers")
            found = finder.submit(find_losers, self.src, self.spec, self.mapper)
            finder.shutdown(wait=False)
            self._found = found
            self._closers.append(lambda: wait([found]) and None)  # before the source closes
        else:
            self._loser_keys = set(find_losers(self.src, self.spec, self.mapper)[0])

    def losers(self) -> set[Key]:
        if self._loser_keys is None:
            assert self._found is not None
            self._loser_keys = set(self._found.result()[0])
        return self._loser_keys

    # -- reading -------------------------------------------------------------------------
    def connect(self) -> Any:
        """This thread's connection (a SQLite source has one per thread), with the token
        functions registered."""
        c: Any = getattr(self.src, "conn", None)
        if self.tokens is not None and id(c) not in self._registered:
            for i, f in enumerate(self.py_tokens):
                c.create_function(f"hr_tok_{i}", 1, f, deterministic=True)
            self._registered.add(id(c))
        return c

    def where(self, rng: Range) -> tuple[str, list[Any]]:
        parts, params = [], []
        marks = ", ".join([self.ph] * self.nn)
        if rng[0] is not None:
            parts.append(f"({self.korder}) >= ({marks})")
            params += list(rng[0])
        if rng[1] is not None:
            parts.append(f"({self.korder}) < ({marks})")
            params += list(rng[1])
        if self.spec.where:
            w = self.spec.where
            parts.append(f"({w if self.is_sqlite else pg_literal_percent(w)})")
        return (" WHERE " + " AND ".join(parts)) if parts else "", params

    def _query(self, sel: str, rng: Range) -> tuple[str, list[Any]]:
        cond, params = self.where(rng)
        return f"SELECT {sel} FROM {self.src.rel}{cond} ORDER BY {self.korder}", params

    def _execute(self, query: str, params: list[Any]) -> Any:
        return self.connect().execute(query if self.is_sqlite else query.encode(), params)

    def text_query(self, rng: Range) -> tuple[str, list[Any]]:
        """(natural key..., source key..., row text) of the SQL row texts, in key order."""
        assert self.tokens is not None
        return self._query(f"{self.keys_sel}, {' || '.join(self.tokens)}", rng)

    def stream(self, rng: Range, as_text: bool | None) -> Iterator[Sequence[Any]]:
        """Rows of ``rng``: (key..., row text) with ``as_text``, (key..., canonical
        values...) without, or with None the keys alone (natural, then source key),
        losers included."""
        if as_text is None:
            cur = self._execute(*self._query(self.keys_sel, rng))
            while batch := cur.fetchmany(10000):
                yield from batch
            return
        if self.tokens is not None:
            sel = " || ".join(self.tokens) if as_text else ", ".join(self.tokens)
        else:
            sel = self.raw_sel
        skip = self.losers()
        nn, nsk = self.nn, self.nsk
        cur = self._execute(*self._query(f"{self.keys_sel}, {sel}", rng))
        while batch := cur.fetchmany(5000):
            for row in batch:
                if skip and tuple(row[nn : nn + nsk]) in skip:
                    continue
                if self.tokens is None:
                    yield self._converted(row, as_text)
                elif as_text:
                    yield (*row[:nn], row[-1])
                else:
                    yield (*row[:nn], *map(_untoken, row[nn + nsk :], self.kinds))

    def _converted(self, row: Sequence[Any], as_text: bool) -> tuple[Any, ...]:
        """A row converted in Python by the mapper, as the copy converts it; a reject
        stands as a value no converted row can have."""
        head = row[: self.nn]
        got = self.mapper.convert(row[self.nn + self.nsk :])
        if isinstance(got, Converted):
            vals: list[str | None] = self.mapper.canonical_row(got.values)
        else:
            vals = [f"!reject: {got.reason}"] * len(self.mapper.columns)
        if not as_text:
            return (*head, *vals)
        text = "".join(
            v if v and v[0] == "!" else token(v, k) for v, k in zip(vals, self.kinds, strict=True)
        )
        return (*head, text)

    def parallel(self, bounds: list[Key], rng: Range) -> Digests | None:
        """The whole table's digests from the reader processes, a run of segments each."""
        if self.pool is None or rng != (None, None) or len(bounds) < self.readers:
            return None
        skip = frozenset(self.losers())
        futures = []
        for share, sub, first in _shares(bounds, self.readers):
            query, params = self.text_query(share)
            futures.append(
                self.pool.submit(
                    _reader_digests,
                    self.job,
                    self.src.uri,
                    query,
                    params,
                    self.nn,
                    skip,
                    sub,
                    first,
                )
            )
        out: Digests = {}
        for fut in futures:
            out.update(fut.result())
        return out


def _source_index(mapper: RowMapper, target: str) -> int:
    b = mapper.columns[mapper.targets.index(target)]
    if b.source_index is None:
        raise MappingError(f"mapping {mapper.spec.name}: natural key {target!r} is computed")
    return b.source_index


def _is_default(b: BoundColumn) -> bool:
    return b.convert.name == for_kind(b.kind).name


def _target_side(
    db: SQLite | Postgres, spec: TableMap, kinds: dict[str, str], types: dict[str, str]
) -> _Side:
    """The target's stored values of the mapped columns, read as their kinds."""
    if not isinstance(db, SQLite) and len(spec.key) == 1:
        conn = db._open(autocommit=True)
        # jit off: compiling the wide row-text expressions costs more than it saves here
        for stmt in ("SET extra_float_digits = 0", "SET TimeZone = 'UTC'", "SET jit = off"):
            conn.execute(stmt.encode())
        schema, name = split_table(spec.target)
        canon = [_pg_canon(c.target, kinds[c.target]) for c in spec.columns]
        return _PgSide(
            conn,
            qualified(schema, name),
            spec.key[0],
            types[spec.key[0]],
            canon,
            [kinds[c.target] for c in spec.columns],
            [c.target for c in spec.columns],
        )
    identity = TableMap(
        spec.target,
        spec.target,
        key=spec.key,
        columns=[Column(c.target, kind=kinds[c.target]) for c in spec.columns],
        source_key=spec.key,
    )
    mapper = identity.bind(kinds, list(types))
    return _stream_side(db, identity, mapper)


# -- the comparison ----------------------------------------------------------------------
def parity(
    source: SQLite | Postgres,
    target: SQLite | Postgres,
    mapping: TableMap | CopySpec,
    *,
    segment_rows: int = 1000,
    fanout: int = 32,
    samples: int = 10,
    readers: int = 2,
) -> ParityReport:
    """Compare the mapped columns of ``source`` and ``target`` by natural key.

    Segments hold about ``segment_rows`` source rows; a differing segment holding more
    than twice that on either side is split into about ``fanout`` parts and compared
    again; small ones are compared row by row. ``samples`` differing rows are kept with
    their values. A SQLite source of at least :data:`PROCESS_MIN_ROWS` rows is hashed by
    ``readers`` processes (1: in this one); the report is the same either way.
    """
    spec = mapping.mapping if isinstance(mapping, CopySpec) else mapping
    kinds, types = _table_kinds(target, spec.target)
    _, src_types = _table_kinds(source, spec.source)
    mapper = spec.bind(kinds, list(src_types))
    for k in spec.key:
        _source_index(mapper, k)
    tspec = TableMap(
        spec.target,
        spec.target,
        key=spec.key,
        columns=[Column(b.target, kind=b.kind) for b in mapper.columns],
    )
    tkinds = dict(kinds) | {b.target: b.kind for b in mapper.columns}
    a = _stream_side(source, spec, mapper, readers=readers)
    try:
        b = _target_side(target, tspec, tkinds, types)
    except BaseException:
        a.close()
        raise
    report = ParityReport()
    try:
        bounds = a.thresholds(segment_rows, (None, None))
        _compare(a, b, (None, None), bounds, segment_rows, fanout, samples, report, top=True)
    finally:
        a.close()
        b.close()
    return report


def _compare(
    a: _Side,
    b: _Side,
    rng: Range,
    bounds: list[Key],
    segment_rows: int,
    fanout: int,
    samples: int,
    report: ParityReport,
    *,
    top: bool,
) -> None:
    da, db = _both(a, b, bounds, rng)
    if top:
        report.segments = len(bounds) + 1
        report.source_rows = sum(n for n, _ in da.values())
        report.target_rows = sum(n for n, _ in db.values())
    for seg in sorted(set(da) | set(db)):
        if da.get(seg) == db.get(seg):
            continue
        if top:
            report.segments_differing += 1
        lo = bounds[seg - 1] if seg > 0 else rng[0]
        hi = bounds[seg] if seg < len(bounds) else rng[1]
        na, nb = da.get(seg, (0, ""))[0], db.get(seg, (0, ""))[0]
        bigger = a if na >= nb else b
        if max(na, nb) > 2 * segment_rows:
            sub = bigger.thresholds(max(1, max(na, nb) // fanout), (lo, hi))
            if sub:  # split further
                _compare(a, b, (lo, hi), sub, segment_rows, fanout, samples, report, top=False)
                continue
        _diff_rows(a, b, (lo, hi), samples, report)


def _both(a: _Side, b: _Side, bounds: list[Key], rng: Range) -> tuple[Digests, Digests]:
    """Both sides' digests, computed at the same time: the target's in a thread (mostly
    waiting for its database; a PostgreSQL server hashes on its own CPU), the source's here.
    Each side has its own connection."""
    with ThreadPoolExecutor(1, thread_name_prefix="parity") as pool:
        theirs = pool.submit(b.digests, bounds, rng)
        try:
            ours = a.digests(bounds, rng)
        finally:
            done = theirs.result()
    return ours, done


def _diff_rows(a: _Side, b: _Side, rng: Range, samples: int, report: ParityReport) -> None:
    ra, rb = a.rows(rng), b.rows(rng)
    for key in sorted(set(ra) | set(rb)):
        va, vb = ra.get(key), rb.get(key)
        if vb is None:
            report.missing.append(key)
        elif va is None:
            report.extra.append(key)
        elif va != vb:
            report.different.append(key)
            if len(report.samples) < samples:
                cols = {c: (x, y) for c, x, y in zip(a.columns, va, vb, strict=True) if x != y}
                report.samples.append(Difference(key_text(key), cols))


# -- reconcile ---------------------------------------------------------------------------
@dataclass
class ReconcileResult:
    """What reconcile did (or, in a dry run, would do), and parity before and after."""

    dry_run: bool
    inserts: int = 0
    updates: int = 0
    deletes: int = 0
    rejects: list[Reject] = field(default_factory=list)
    before: ParityReport | None = None
    after: ParityReport | None = None


def reconcile(
    source: SQLite | Postgres,
    target: Postgres,
    mapping: TableMap | CopySpec,
    *,
    dry_run: bool = False,
    segment_rows: int = 1000,
) -> ReconcileResult:
    """Make ``target`` equal to ``source`` for the mapped columns, deletions included.

    Missing and different rows are upserted from the source (converted as the copy
    converts them) and extra rows deleted, in one transaction; then parity runs again
    (``after``). With ``dry_run`` nothing is written and the counts say what would be.
    """
    # the writer loads psycopg: imported here so that parity alone never needs it
    from ..resources.postgres import Postgres
    from .copy import CopyJob, upsert_rows

    if not isinstance(target, Postgres):
        raise BadInput("reconcile writes PostgreSQL targets only")
    spec = mapping if isinstance(mapping, CopySpec) else CopySpec(mapping)
    before = parity(source, target, spec, segment_rows=segment_rows)
    res = ReconcileResult(dry_run, before=before)
    res.inserts, res.updates, res.deletes = (
        len(before.missing),
        len(before.different),
        len(before.extra),
    )
    if dry_run or before.equal:
        res.after = before
        return res
    m = spec.mapping
    with CopyJob(source, target, spec) as job:
        natural = [job.mapper.select[_source_index(job.mapper, k)] for k in m.key]
        wanted = before.missing + before.different
        deleted = 0
        with job.conn.transaction():
            rows = job.src.rows_where_in(job.mapper.select, natural, wanted) if wanted else []
            ins, upd, rejects = upsert_rows(job, rows)
            keys = ", ".join(quote_ident(k) for k in m.key)
            for i in range(0, len(before.extra), 5000):
                chunk = before.extra[i : i + 5000]
                ph = ", ".join("(" + ", ".join(["%s"] * len(m.key)) + ")" for _ in chunk)
                cur = job.conn.execute(
                    f"DELETE FROM {job.target.rel} WHERE ({keys}) IN (VALUES {ph})".encode(),
                    [v for t in chunk for v in t],
                )
                deleted += max(cur.rowcount, 0)
        res.inserts, res.updates, res.deletes, res.rejects = ins, upd, deleted, rejects
    res.after = parity(source, target, spec, segment_rows=segment_rows)
    return res
