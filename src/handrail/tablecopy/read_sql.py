"""COPY lines built inside SQLite, for the common conversions.

A table copy spends most of its Python time turning source rows into CSV lines. For a
SQLite source, :func:`line_expression` writes that work as one SQL expression per row,
evaluated by SQLite in C. It handles a value only where its text is provably what the
Python conversion (:mod:`handrail.tablecopy.mapping`, the authority) would send PostgreSQL, and
yields NULL for the whole line otherwise; those rows go through Python as before.

What SQL handles, by conversion (anything else: the row goes to Python):

- ``text``: TEXT (quoted), INTEGER (as its decimal digits);
- ``integer``: INTEGER; ``boolean``: INTEGER 0 or 1;
- ``real`` into ``double precision``: INTEGER; REAL as an exact hexadecimal float
  (``0x<mantissa>p<exponent>``, which PostgreSQL's float input reads exactly through
  ``strtod``); only when the target server accepts hex floats and SQLite has ``log2``;
- ``timestamptz`` into ``timestamp with time zone``: ``YYYY-MM-DD[T ]HH:MM:SS`` with an
  optional ``.ffffff``, then ``Z``, ``±HH:MM`` (hours below 15) or nothing (UTC), each
  field range-checked; INTEGER and 9-11-digit TEXT epoch seconds below 10^11;
- ``jsonb`` into ``jsonb``: TEXT that SQLite's strict ``json_valid`` accepts (PostgreSQL
  parses it as Python would have); blank text is NULL.

SQL does not look for NUL characters (PostgreSQL text cannot hold them) or for the
``\\u0000`` escape (jsonb cannot): :func:`needs_python` finds them in the built lines, and
those rows go through Python, which refuses or converts them.

Natural-key columns take the stricter path (TEXT for text, INTEGER for integer) so that
the key Python reads back is the converted key.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sqlite3
import sys
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..resources.names import quote_ident

if TYPE_CHECKING:  # the SQLite readers run without psycopg (parity of two SQLite files)
    import psycopg

from .mapping import (
    MAX_JSON_DEPTH,
    RowMapper,
    to_bool,
    to_float,
    to_int,
    to_json,
    to_text,
    to_timestamp,
)

__all__ = [
    "Branches",
    "Capabilities",
    "LineBatch",
    "SqlRows",
    "column_expression",
    "fetch_lines",
    "line_expression",
    "lines_sql",
    "needs_python",
    "read_lines",
    "read_rows",
    "reader_init",
    "split_rows",
]

_D = "[0-9]"
_DATE_TIME = f"{_D * 4}-{_D * 2}-{_D * 2}[ T]{_D * 2}:{_D * 2}:{_D * 2}"
_MICROS = f".{_D * 6}"
_OFFSET = f"[+-]{_D * 2}:{_D * 2}"
_WS = "' '||char(9)||char(10)||char(13)"


@dataclass(frozen=True)
class Capabilities:
    """What the two databases at hand can do for the SQL path."""

    hex_floats: bool  # the target reads 0x...p... as float8, and SQLite has log2()
    strict_json: bool  # SQLite's json_valid() rejects JSON5 (it did before 3.42)

    @classmethod
    def probe(cls, src: sqlite3.Connection, target: psycopg.Connection) -> Capabilities:
        import psycopg  # a copy into PostgreSQL has it; the SQLite readers do not need it

        hex_ok = False
        try:
            with target.transaction():
                row = target.execute("SELECT '0x1.8p1'::float8 = 3").fetchone()
            hex_ok = bool(row and row[0])
        except psycopg.Error:
            hex_ok = False
        try:
            (log2,) = src.execute("SELECT log2(8.0)").fetchone()
            hex_ok = hex_ok and log2 == 3.0
        except sqlite3.Error:
            hex_ok = False
        (lenient,) = src.execute("SELECT json_valid('[1,]') OR json_valid('{a:1}')").fetchone()
        return cls(hex_floats=hex_ok, strict_json=not lenient)


# Each builder gives the branches of ``CASE typeof(x) WHEN 'null' THEN '' ... END``, keyed
# by SQLite storage class; a class without a branch gives NULL (the row goes to Python).
Branches = dict[str, str]


def _quoted(x: str) -> str:
    return f"""'"'||replace({x},'"','""')||'"'"""


def _text(x: str, key: bool) -> Branches:
    out = {"text": _quoted(x)}
    if not key:  # a key must read back as the converted key: text stays text
        out["integer"] = f"""'"'||{x}||'"'"""
    return out


def _hex_float(x: str) -> str:
    # e = trunc(log2|x|) - 3 lies 1 to 4 below the exponent of |x| (log2 may be off by
    # one ulp; trunc rounds negative logs up), so |x| * 2^(52-e) is the 53-bit significand
    # shifted left 1 to 4 places: an exact integer below 2^57, printed exactly in hex.
    e = f"(CAST(log2(abs({x})) AS INTEGER)-3)"
    return (
        f"CASE WHEN abs({x}) BETWEEN 1e-270 AND 1e270 THEN "
        f"printf('%s0x%xp%d',CASE WHEN {x}<0 THEN '-' ELSE '' END,"
        f"CAST(abs({x})*pow(2.0,52-{e}) AS INTEGER),{e}-52) END"
    )


def _timestamp(x: str) -> Branches:
    # The pattern bounds minutes and seconds below 60 (PostgreSQL reads a leap second
    # that Python refuses); hours below 24 and offsets below 15 hours are checked for the
    # same reason. Months and days out of range are refused by both, so they need no
    # check: the batch's COPY fails and the merge path rejects that row.
    pattern = f"{_D * 4}-[01]{_D}-[0-3]{_D}[ T][0-2]{_D}:[0-5]{_D}:[0-5]{_D}"
    epoch = f"strftime('%Y-%m-%d %H:%M:%S',{x},'unixepoch')||'+00:00'"
    z = f"substr({x},20)"
    offset = f"GLOB '[+-][01]{_D}:[0-5]{_D}' AND substr({x},{{h}},2)<'15'"
    suffix = (
        f"CASE {z} WHEN '' THEN '+00:00' WHEN 'Z' THEN '' ELSE CASE "
        f"WHEN {z} {offset.format(h=21)} THEN '' "
        f"WHEN {z} GLOB '.{_D * 6}' THEN '+00:00' "
        f"WHEN {z} GLOB '.{_D * 6}Z' THEN '' "
        f"WHEN {z} GLOB '.{_D * 6}*' AND substr({x},27) {offset.format(h=28)} THEN '' "
        "END END"
    )
    iso = (
        # years 0001 and 9999: an offset may move them out of Python's range
        f"CASE WHEN {x} GLOB '{pattern}*' AND {x}>='0002' AND {x}<'9999' "
        f"AND substr({x},12,2)<'24' THEN {x}||{suffix} "
        f"WHEN length({x}) BETWEEN 9 AND 10 AND {x} NOT GLOB '*[^0-9]*' "
        f"THEN {epoch} END"
    )
    return {"text": iso, "integer": f"CASE WHEN {x} BETWEEN 0 AND 99999999999 THEN {epoch} END"}


def _json(x: str) -> Branches:
    return {
        # more brackets than MAX_JSON_DEPTH: Python decides (it may keep it as raw text)
        "text": f"CASE WHEN json_valid({x}) AND length({x}) - length(replace(replace({x}, "
        f"'[', ''), '{{', '')) <= {MAX_JSON_DEPTH} THEN {_quoted(x)} "
        f"WHEN trim({x},{_WS})='' THEN '' END"
    }


def needs_python(line: str | None) -> bool:
    """Whether a line SQL built must be rebuilt by Python: no line, or one holding a NUL
    character or a ``\\u0000`` escape."""
    return line is None or "\x00" in line or "\\u0000" in line


def column_expression(
    x: str, fn: object, target_type: str, caps: Capabilities, *, key: bool = False
) -> str:
    """SQL giving the CSV field of source column expression ``x`` converted by ``fn``:
    ``''`` for NULL, the field's text where SQL is exact, NULL where it is not."""
    branches: Branches = {}
    if fn is to_text:
        branches = _text(x, key)
    elif fn is to_int:
        branches = {"integer": f"CAST({x} AS TEXT)"}
    elif key:
        pass  # other conversions may change a key's value: Python converts it
    elif fn is to_bool:
        branches = {"integer": f"CASE {x} WHEN 1 THEN 't' WHEN 0 THEN 'f' END"}
    elif fn is to_float and target_type == "double precision":
        branches = {"integer": f"CAST({x} AS TEXT)"}
        if caps.hex_floats:
            branches["real"] = _hex_float(x)
    elif fn is to_timestamp and target_type == "timestamp with time zone":
        branches = _timestamp(x)
    elif fn is to_json and target_type == "jsonb" and caps.strict_json:
        branches = _json(x)
    cases = " ".join(f"WHEN '{cls}' THEN {sql}" for cls, sql in branches.items())
    return f"(CASE typeof({x}) WHEN 'null' THEN '' {cases} END)"


def line_expression(
    mapper: RowMapper, target_types: dict[str, str], caps: Capabilities
) -> str | None:
    """One SQL expression giving each source row's whole CSV line (with its newline), or
    NULL for rows Python must convert. None when the mapping computes columns."""
    if mapper.has_compute:
        return None
    keys = set(mapper.spec.key)
    parts = []
    for b in mapper.columns:
        assert b.source_index is not None
        x = quote_ident(mapper.select[b.source_index])
        parts.append(
            column_expression(x, b.convert.fn, target_types[b.target], caps, key=b.target in keys)
        )
    return "||','||".join(parts) + "||char(10)"


# -- reader processes ----------------------------------------------------------------------
_CONNECTIONS: dict[str, sqlite3.Connection] = {}


def reader_init(parent: int | None = None) -> None:
    """In a reader process: Ctrl-C is the parent's to handle, and the reader dies with
    its parent (Linux), so a killed copy leaves no process holding its files open."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent is not None and sys.platform == "linux":
        with suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)


_PR_SET_PDEATHSIG = 1


SqlRows = tuple[list[str | None], list[tuple[Any, ...]], list[tuple[Any, ...]]]


def split_rows(rows: list[tuple[Any, ...]], nn: int, nk: int) -> SqlRows:
    """Rows of (line, natural key..., source key...) as three lists."""
    return (
        [r[0] for r in rows],
        [r[1 : 1 + nn] for r in rows],
        [r[len(r) - nk :] for r in rows],
    )


def _reader_conn(uri: str) -> sqlite3.Connection:
    conn = _CONNECTIONS.get(uri)
    if conn is None:
        conn = _CONNECTIONS[uri] = sqlite3.connect(uri, uri=True, timeout=30)
    return conn


def read_rows(uri: str, query: str, params: list[Any], nn: int, nk: int) -> SqlRows:
    """Run one range's line query in a reader process (its own read-only connection)."""
    return split_rows(_reader_conn(uri).execute(query, params).fetchall(), nn, nk)


@dataclass(frozen=True)
class LineBatch:
    """A batch as SQLite built it: the lines it could build, joined and UTF-8 encoded;
    how many rows it read; the source keys of the rows it left to Python."""

    data: bytes
    rows: int
    slow: list[tuple[Any, ...]]
    binary: bool = False  # data is a PostgreSQL binary COPY stream, not CSV lines


def lines_sql(line: str, keys: list[str], rest: str) -> str:
    """The query joining the lines (expression ``line``) of the rows ``rest`` selects
    (``FROM ... WHERE ...``) into one text inside SQLite, with the row count and the
    source keys (columns ``keys``, as JSON) of rows without a line. One result row per
    batch, so Python makes no object per source row it need not convert."""
    ks = ", ".join(f"{k} AS _k{i}" for i, k in enumerate(keys))
    arr = ", ".join(f"_k{i}" for i in range(len(keys)))
    return (
        f"SELECT group_concat(l, ''), count(*), json_group_array(json_array({arr})) "
        f"FILTER (WHERE l IS NULL) FROM (SELECT {line} AS l, {ks} {rest} LIMIT -1)"
    )  # LIMIT keeps SQLite from flattening the subquery, which builds each line twice


def fetch_lines(conn: sqlite3.Connection, query: str, params: list[Any]) -> LineBatch | None:
    """Run a :func:`lines_sql` query. None when the batch must be read row by row: a line
    holds a NUL or a ``\\u0000`` escape, a key left to Python is not an integer or a
    text, or the query fails (the row-by-row read then reports why)."""
    try:
        row = conn.execute(query, params).fetchone()
    except sqlite3.Error:
        return None
    text, rows, slow_json = row if row else (None, 0, "[]")
    if text is not None and needs_python(text):
        return None
    slow = [tuple(k) for k in json.loads(slow_json or "[]")]
    if any(type(v) not in (int, str) for k in slow for v in k):
        return None
    return LineBatch((text or "").encode(), rows, slow)


def read_lines(uri: str, query: str, params: list[Any]) -> LineBatch | None:
    """:func:`fetch_lines` in a reader process."""
    return fetch_lines(_reader_conn(uri), query, params)
