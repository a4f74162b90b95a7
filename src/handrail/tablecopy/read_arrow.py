"""COPY lines built by Arrow from a SQLite batch read through ADBC.

The SQL-lines reader (:mod:`handrail.tablecopy.read_sql`) makes SQLite evaluate one string
expression per row, about 5.5 µs a row for a ten-column table. This reader asks SQLite
only for type-stable projections of the raw values (ADBC's SQLite driver reads them into
Arrow columns at about 1.3 µs a row), checks and converts whole columns with Arrow's
compute kernels, and writes the CSV lines with Arrow's CSV writer. The result is the same
:class:`~handrail.tablecopy.read_sql.LineBatch`: the lines of the rows handled here, joined, and
the source keys of the rows left to Python, which stays the authority (it converts them,
or builds their reject).

What this reader handles is the subset the SQL reader proves equal to Python's
conversions (see :mod:`handrail.tablecopy.read_sql`), and no more; any other row goes to Python:

- ``text``: TEXT without a NUL; ``integer``: INTEGER; ``boolean``: INTEGER 0 or 1;
- ``real`` into ``double precision``: a finite, non-subnormal REAL, or an INTEGER of at
  most 2^53 in magnitude (exact as a double); binary COPY carries the double itself, and
  Arrow's CSV writes the shortest text that reads back to it, which PostgreSQL's float
  input reads exactly;
- ``timestamptz`` into ``timestamp with time zone``: the ISO 8601 shapes the SQL reader
  accepts (naive means UTC), INTEGER epoch seconds from 0 to 10^11 - 1, TEXT of 9 or 10
  digits as epoch seconds;
- ``jsonb`` into ``jsonb``: TEXT that SQLite's strict ``json_valid`` accepts and that
  holds no NUL, no ``\\u0000`` escape and at most ``MAX_JSON_DEPTH`` brackets; blank
  text (spaces, tabs, newlines) is NULL.

A natural-key column takes only its own storage class, never NULL, so the key Python
would read back is the key written.

Why each projection is ``CASE WHEN typeof(x) = '<class>' THEN x END``: ADBC's SQLite
driver infers a column's Arrow type from the values it sees, and silently turns a column
of mixed storage classes into strings (a REAL 3.7 becomes ``'3.700000e+00'``). Each
projection holds one storage class, so its type is fixed; one SQL flag per row marks the
rows holding any other class, and those go to Python.

pyarrow and adbc-driver-sqlite come with the ``postgres`` extra; without them
:func:`available` is False and the copy uses the SQL reader.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..resources.names import quote_ident
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
from .read_sql import Capabilities, LineBatch

__all__ = [
    "Arrays",
    "ArrowColumn",
    "ArrowPlan",
    "arrow_plan",
    "available",
    "build_lines",
    "connect",
    "fetch_arrow",
    "read_arrow",
    "strict_json",
]

# the ISO 8601 shapes of read_sql._timestamp: hours below 24, minutes and seconds below
# 60, optional microseconds, then nothing (UTC), Z, or an offset below 15 hours
_DATE_TIME = "[0-9]{4}-[01][0-9]-[0-3][0-9][ T]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
_ISO = f"^{_DATE_TIME}(\\.[0-9]{{6}})?(Z|[+-](0[0-9]|1[0-4]):[0-5][0-9])?$"
_NAIVE = f"^{_DATE_TIME}(\\.[0-9]{{6}})?$"
_EPOCH_TEXT = "^[0-9]{9,10}$"
_EPOCH_MAX = 99_999_999_999
_EXACT_INT = 2**53
_MIN_NORMAL = 2.2250738585072014e-308
_BLANK = " \t\n\r"  # what the SQL reader trims (read_sql._WS)

#: source storage classes each conversion takes here, in projection order
_CLASSES: dict[str, tuple[str, ...]] = {
    "text": ("text",),
    "int": ("integer",),
    "bool": ("integer",),
    "float": ("real", "integer"),
    "timestamptz": ("text", "integer"),
    "json": ("text",),
}


def available() -> bool:
    """Whether pyarrow, NumPy and ADBC's SQLite driver can be imported."""
    try:
        import adbc_driver_sqlite.dbapi  # noqa: F401
        import numpy  # noqa: F401
        import pyarrow.compute
        import pyarrow.csv  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class ArrowColumn:
    """One target column: its conversion, the quoted source column, whether it is part
    of the natural key."""

    conv: str
    source: str
    key: bool
    encoding: str | None = None  # its binary COPY encoding (None: the column has none)

    def projections(self, guarded: bool) -> list[str]:
        """The SQL projections of this column.

        Unguarded (the first read of a batch), a column is read as it is wherever the
        Arrow type ADBC infers proves the storage classes (int64: INTEGER only; double:
        REAL and INTEGER, the latter as exact doubles), or where the mixed-class text ADBC
        makes is harmless (an INTEGER read as its digits is what Python would read;
        anything else fails the checks and goes to Python). A text column turns any other
        class into a NUL, which the NUL check sends to Python, because ADBC would write a
        REAL into text as ``'3.700000e+00'``. Guarded (a batch whose first read came back
        with an unexpected type), each class has its own projection.
        """
        x = self.source
        if guarded:
            out = [f"CASE WHEN typeof({x}) = '{c}' THEN {x} END" for c in _CLASSES[self.conv]]
        elif self.conv == "text":
            null = "" if self.key else " WHEN 'null' THEN NULL"
            out = [f"CASE typeof({x}) WHEN 'text' THEN {x}{null} ELSE char(0) END"]
        else:
            out = [x]
        if self.conv == "json":
            out.append(f"CASE WHEN typeof({x}) = 'text' THEN json_valid({x}) END")
        return out

    def off_class(self) -> str:
        """SQL true when the value's storage class is not one handled here."""
        classes = [*_CLASSES[self.conv], *(() if self.key else ("null",))]
        listed = ", ".join(f"'{c}'" for c in classes)
        return f"typeof({self.source}) NOT IN ({listed})"


@dataclass(frozen=True)
class ArrowPlan:
    """How to read a mapping's rows as Arrow columns and write them as CSV lines or as a
    binary COPY stream.

    Picklable: reader processes receive it with each query.
    """

    columns: tuple[ArrowColumn, ...]
    source_key: tuple[str, ...]  # quoted source key columns
    max_rows: int  # ADBC's batch size: a range's rows arrive as one Arrow batch
    binary: bool = False  # write PostgreSQL's binary COPY format instead of CSV

    @property
    def can_binary(self) -> bool:
        """Whether every column has a binary COPY encoding for its target type."""
        return all(c.encoding is not None for c in self.columns)

    def as_binary(self, binary: bool) -> ArrowPlan:
        """This plan writing binary COPY (if every column can), else CSV."""
        return replace(self, binary=binary and self.can_binary)

    def select(self, guarded: bool) -> str:
        """The select list: each column's projections, the source key and, guarded, a
        flag of the rows holding a storage class no projection takes."""
        parts = []
        for i, c in enumerate(self.columns):
            parts += [f"{p} AS _hr_{i}_{j}" for j, p in enumerate(c.projections(guarded))]
        parts += [f"{k} AS _hr_k{i}" for i, k in enumerate(self.source_key)]
        if guarded:
            parts.append(f"({' OR '.join(c.off_class() for c in self.columns)}) AS _hr_slow")
        return ", ".join(parts)


def _conversion(fn: object, target_type: str, caps: Capabilities) -> str | None:
    """The name of a conversion this reader handles, or None."""
    if fn is to_text:
        return "text"
    if fn is to_int:
        return "int"
    if fn is to_bool and target_type == "boolean":
        return "bool"  # Arrow writes true/false, Python t/f: equal only as booleans
    if fn is to_float and target_type == "double precision":
        return "float"
    if fn is to_timestamp and target_type == "timestamp with time zone":
        return "timestamptz"
    if fn is to_json and target_type == "jsonb" and caps.strict_json:
        return "json"
    return None


def _encoding(conv: str, target_type: str) -> str | None:
    """The binary COPY encoding of a conversion's values into ``target_type``; None where
    the type's binary input is not the one written here (the batch then goes as CSV)."""
    base = target_type.split("(")[0].strip()
    if conv == "text" and base in ("text", "character varying"):
        return "text"
    if conv == "int":
        return {"bigint": "int8", "integer": "int4", "smallint": "int2"}.get(base)
    pairs = {
        ("bool", "boolean"): "bool",
        ("float", "double precision"): "float8",
        ("timestamptz", "timestamp with time zone"): "timestamptz",
        ("json", "jsonb"): "jsonb",
    }
    return pairs.get((conv, base))


def arrow_plan(
    mapper: RowMapper,
    target_types: dict[str, str],
    source_key: Sequence[str],
    caps: Capabilities,
    *,
    max_rows: int,
) -> ArrowPlan | None:
    """The plan of a mapping, or None when a column is computed or its conversion is not
    one this reader handles (the copy then uses the SQL reader)."""
    if mapper.has_compute:
        return None
    keys = set(mapper.spec.key)
    cols = []
    for b in mapper.columns:
        assert b.source_index is not None
        conv = _conversion(b.convert.fn, target_types[b.target], caps)
        if conv is None or (b.target in keys and conv not in ("text", "int")):
            return None
        source = quote_ident(mapper.select[b.source_index])
        encoding = _encoding(conv, target_types[b.target])
        cols.append(ArrowColumn(conv, source, b.target in keys, encoding))
    return ArrowPlan(tuple(cols), tuple(quote_ident(k) for k in source_key), max(1024, max_rows))


# -- the Arrow side ------------------------------------------------------------------------
class _Unexpected(Exception):
    """A column arrived with a type its read does not take: read the batch guarded."""


#: storage class -> Arrow type name, and back (of the types ADBC's SQLite driver makes)
_TYPES = {"text": "string", "integer": "int64", "real": "double"}
_CLASS_OF = {"string": "text", "large_string": "text", "int64": "integer", "double": "real"}

Arrays = dict[str, Any]  # storage class -> the values of that class (NULL elsewhere)


def _by_class(conv: str, arrays: list[Any], guarded: bool) -> Arrays:
    """A column's value arrays by storage class.

    Guarded, projection j holds class ``_CLASSES[conv][j]``. Unguarded, the one array's
    Arrow type says which class it holds (an all-NULL array holds none), and must be
    one the conversion takes.
    """
    import pyarrow as pa

    classes = _CLASSES[conv]
    got: list[tuple[str, Any]]
    if guarded:
        got = list(zip(classes, arrays, strict=True))
    else:
        arr = arrays[0]
        if arr.null_count == len(arr):
            return {}
        cls = _CLASS_OF.get(str(arr.type))
        if cls is None or cls not in classes:
            raise _Unexpected(f"{arr.type} in a {conv} column")
        # a double column of a float conversion may hold INTEGERs too: ADBC converted
        # them as C does, correctly rounded, which is what Python's float(int) gives
        got = [(cls, arr)]
    out: Arrays = {}
    for cls, arr in got:
        if arr.null_count == len(arr):
            continue  # all NULL: ADBC types it int64
        if str(arr.type) != _TYPES[cls]:
            if cls == "text" and str(arr.type) == "large_string":
                arr = arr.cast(pa.string())
            else:
                raise _Unexpected(f"{arr.type} where {_TYPES[cls]} was expected")
        out[cls] = arr
    return out


def _nulls(n: int, cls: str) -> Any:
    import pyarrow as pa

    return pa.nulls(n, {"text": pa.string(), "integer": pa.int64(), "real": pa.float64()}[cls])


def _text(d: Arrays, n: int, extra: list[Any], binary: bool) -> tuple[Any, Any]:
    import pyarrow.compute as pc

    v = d.get("text")
    if v is None:
        return _nulls(n, "text"), None
    return v, pc.match_substring(v, "\x00")


def _int(d: Arrays, n: int, extra: list[Any], binary: bool) -> tuple[Any, Any]:
    return d.get("integer", _nulls(n, "integer")), None


def _bool(d: Arrays, n: int, extra: list[Any], binary: bool) -> tuple[Any, Any]:
    import pyarrow as pa
    import pyarrow.compute as pc

    v = d.get("integer")
    if v is None:
        return pa.nulls(n, pa.bool_()), None
    return pc.equal(v, 1), pc.and_(pc.not_equal(v, 0), pc.not_equal(v, 1))


def _float(d: Arrays, n: int, extra: list[Any], binary: bool) -> tuple[Any, Any]:
    import pyarrow as pa
    import pyarrow.compute as pc

    r, i = d.get("real"), d.get("integer")
    bads = []
    if r is not None:
        # finite and not subnormal: a subnormal's text is refused by PostgreSQL before
        # 12, where its binary form would be stored (the SQL reader leaves it too)
        normal = pc.or_(pc.greater_equal(pc.abs(r), _MIN_NORMAL), pc.equal(r, 0.0))
        bads.append(pc.invert(pc.and_(pc.is_finite(r), normal)))
    if i is not None:
        big = pc.or_kleene(pc.greater(i, _EXACT_INT), pc.less(i, -_EXACT_INT))
        bads.append(big)
        # beyond 2^53 a double is not exact (Arrow's cast refuses it): Python's rows
        i = pc.cast(pc.if_else(big, pa.scalar(None, pa.int64()), i), pa.float64())
    parts = [a for a in (r, i) if a is not None]
    out = parts[0] if len(parts) == 1 else pc.coalesce(*parts) if parts else _nulls(n, "real")
    return out, _any_bad(bads)


def _any_bad(bads: list[Any]) -> Any:
    """Kleene OR of the checks of a column's classes: a row holds one class, so the
    checks of the others are NULL there (and True OR NULL must stay True)."""
    import pyarrow.compute as pc

    if not bads:
        return None
    out = bads[0]
    for b in bads[1:]:
        out = pc.or_kleene(out, b)
    return out


def _timestamptz(d: Arrays, n: int, extra: list[Any], binary: bool) -> tuple[Any, Any]:
    """CSV: the text PostgreSQL parses (an ISO text as it is, naive ones with ``+00:00``;
    epochs as ``YYYY-MM-DD HH:MM:SS+00:00``). Binary: microseconds since 2000-01-01 UTC,
    computed as PostgreSQL computes them from that very text."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t, i = d.get("text"), d.get("integer")
    kind = pa.int64() if binary else pa.string()
    none = pa.scalar(None, kind)
    outs, bads = [], []
    seconds = []
    if t is not None:
        iso = pc.and_(pc.match_substring_regex(t, _ISO), pc.invert(_edge_year(t)))
        if binary:
            micros, real_date = _iso_micros(t, iso)
            iso = pc.and_(iso, real_date)  # 30 February: Python refuses it, so does PostgreSQL
            outs.append(micros)
        else:
            # an ISO match of 19 or 26 characters has no zone: it is UTC
            width = pc.binary_length(t)
            naive = pc.or_(pc.equal(width, 19), pc.equal(width, 26))
            zoned = pc.if_else(naive, pc.binary_join_element_wise(t, "+00:00", ""), t)
            outs.append(pc.if_else(iso, zoned, none))
        epoch = pc.match_substring_regex(t, _EPOCH_TEXT)
        if pc.any(epoch).as_py():
            seconds.append(pc.cast(pc.if_else(epoch, t, pa.scalar(None, pa.string())), pa.int64()))
            bads.append(pc.and_(pc.invert(iso), pc.invert(epoch)))
        else:
            bads.append(pc.invert(iso))
    if i is not None:
        ok = pc.and_(pc.greater_equal(i, 0), pc.less_equal(i, _EPOCH_MAX))
        seconds.append(pc.if_else(ok, i, pa.scalar(None, pa.int64())))
        bads.append(pc.invert(ok))
    if seconds:
        s = seconds[0] if len(seconds) == 1 else pc.coalesce(*seconds)
        if binary:
            outs.append(pc.subtract(pc.multiply(s, 1_000_000), _PG_EPOCH_MICROS))
        else:
            # a naive timestamp's text is 'YYYY-MM-DD HH:MM:SS' (seconds below 10^11 end
            # in the year 5138), 20 times cheaper than strftime; the zone is spelled out
            when = pc.cast(pc.cast(s, pa.timestamp("s")), pa.string())
            outs.append(pc.binary_join_element_wise(when, "+00:00", ""))
    if not outs:
        return pa.nulls(n, kind), None
    return (outs[0] if len(outs) == 1 else pc.coalesce(*outs)), _any_bad(bads)


def _edge_year(t: Any) -> Any:
    """Years 0000, 0001 and 9999: Python refuses the first, and an offset can move the
    others out of its range (PostgreSQL would store year 0 or 10000): Python's rows."""
    import pyarrow.compute as pc

    return pc.match_substring_regex(t, "^(0000|0001|9999)")


_PG_EPOCH_MICROS = 946_684_800 * 1_000_000  # 2000-01-01, PostgreSQL's epoch, in Unix µs
_DAYS_IN_MONTH = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _iso_micros(t: Any, iso: Any) -> tuple[Any, Any]:
    """Microseconds since 2000-01-01 UTC of the ISO texts where ``iso`` holds (the shape
    :data:`_ISO` fixes every field's position), and whether each date exists.

    The digits are gathered from the string array's buffer at their fixed offsets, and
    the day count is Hinnant's ``days_from_civil``: the arithmetic PostgreSQL does on
    the same fields (an offset moves the instant, a naive time is UTC).
    """
    import numpy as np
    import pyarrow as pa

    n = len(t)
    rows = np.flatnonzero(iso.fill_null(False).to_numpy(zero_copy_only=False))
    offsets = np.frombuffer(t.buffers()[1], dtype=np.int32, count=n + 1, offset=t.offset * 4)
    data = np.frombuffer(t.buffers()[2], dtype=np.uint8) if len(rows) else np.zeros(1, np.uint8)
    start = offsets[rows].astype(np.int64)
    width = offsets[rows + 1].astype(np.int64) - start
    last = len(data) - 1

    def char(pos: Any) -> Any:
        return data[np.minimum(start + pos, last)].astype(np.int64)

    def number(pos: int, digits: int) -> Any:
        v = np.zeros(len(rows), np.int64)
        for j in range(digits):
            v = v * 10 + char(pos + j) - 48
        return v

    year, month, day = number(0, 4), number(5, 2), number(8, 2)
    hour, minute, sec = number(11, 2), number(14, 2), number(17, 2)
    fraction = (width >= 26) & (char(19) == ord("."))
    micro = np.where(fraction, number(20, 6), 0)
    z = np.where(fraction, 26, 19)  # where the zone starts, if there is one
    sign = char(z)
    zone_minutes = (char(z + 1) - 48) * 600 + (char(z + 2) - 48) * 60
    zone_minutes += (char(z + 4) - 48) * 10 + char(z + 5) - 48
    zone = np.where(width > z, np.where(sign == ord("-"), -1, 1) * zone_minutes, 0)
    zone = np.where((width > z) & (sign == ord("Z")), 0, zone)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    dim = np.asarray(_DAYS_IN_MONTH)[np.clip(month, 0, 12)] + ((month == 2) & leap)
    exists = (month >= 1) & (month <= 12) & (day >= 1) & (day <= dim)
    y = year - (month <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    doy = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    days = era * 146_097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719_468
    unix = (days * 86_400 + hour * 3_600 + minute * 60 + sec - zone * 60) * 1_000_000 + micro
    micros = np.zeros(n, np.int64)
    micros[rows] = unix - _PG_EPOCH_MICROS
    ok = np.zeros(n, bool)
    ok[rows] = exists
    found = np.zeros(n, bool)
    found[rows] = True
    return pa.array(micros, mask=~(found & ok)), pa.array(ok | ~found)


def _json(d: Arrays, n: int, extra: list[Any], binary: bool) -> tuple[Any, Any]:
    import pyarrow as pa
    import pyarrow.compute as pc

    v = d.get("text")
    if v is None:
        return _nulls(n, "text"), None
    (valid,) = extra
    if valid.null_count == len(valid):
        valid = pa.nulls(n, pa.int64())
    elif str(valid.type) != "int64":
        raise _Unexpected(f"json_valid gave {valid.type}")
    dirty = pc.or_(pc.match_substring(v, "\x00"), pc.match_substring(v, "\\u0000"))
    # never NULL: json_valid is NULL for a value of another class, which is not valid
    ok = pc.fill_null(pc.and_(pc.equal(valid, 1), pc.invert(dirty)), False)
    # deeper than MAX_JSON_DEPTH, Python keeps it as raw text: a bracket count bounds it
    shallow = pc.less_equal(
        pc.add(pc.count_substring(v, "["), pc.count_substring(v, "{")), MAX_JSON_DEPTH
    )
    ok = pc.and_(ok, pc.fill_null(shallow, False))
    out = pc.if_else(ok, v, pa.scalar(None, pa.string()))
    present = pc.is_valid(v)
    if not pc.any(pc.and_(present, pc.invert(ok))).as_py():
        return out, None
    blank = pc.fill_null(pc.match_substring_regex(v, "^[ \t\n\r]*$"), False)
    return out, pc.and_(pc.and_(present, pc.invert(ok)), pc.invert(blank))


_CONVERT: dict[str, Callable[[Arrays, int, list[Any], bool], tuple[Any, Any]]] = {
    "text": _text,
    "int": _int,
    "bool": _bool,
    "float": _float,
    "timestamptz": _timestamptz,
    "json": _json,
}


def build_lines(table: Any, plan: ArrowPlan, *, guarded: bool) -> LineBatch | None:
    """The :class:`LineBatch` of an Arrow table read with :meth:`ArrowPlan.select`.

    Raises :class:`_Unexpected` when a column's type is not one its read takes (read the
    batch guarded). None when a source key left to Python is not an integer or a text
    (the batch is then read row by row).
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    n = table.num_rows
    if n == 0:
        return LineBatch(b"", 0, [], binary=plan.binary)
    if not guarded and any(col.num_chunks > 1 for col in table.columns):
        # ADBC infers types from its first batch only; a later batch converts what it can
        # to them (a BLOB into a text column's type, silently): only the guarded read,
        # one storage class per projection, is sound across batches
        raise _Unexpected("the range spans more than one ADBC batch")
    pos = 0
    bads = []
    outs = []
    for c in plan.columns:
        width = len(c.projections(guarded))
        arrays = [table.column(k).combine_chunks() for k in range(pos, pos + width)]
        pos += width
        values = arrays[: len(_CLASSES[c.conv]) if guarded else 1]
        extra = arrays[len(values) :]
        out, bad = _CONVERT[c.conv](_by_class(c.conv, values, guarded), n, extra, plan.binary)
        if plan.binary and c.encoding in _INT_RANGE:
            lo, hi = _INT_RANGE[c.encoding]  # PostgreSQL refuses it; binary would wrap it
            wide = pc.or_kleene(pc.less(out, lo), pc.greater(out, hi))
            bad = _any_bad([b for b in (bad, wide) if b is not None])
        outs.append(out)
        if bad is not None:
            bads.append(bad)
        if c.key and out.null_count:
            bads.append(pc.is_null(out))
    nkey = len(plan.source_key)
    if guarded:
        flag = table.column(pos + nkey).combine_chunks()
        if flag.null_count != len(flag):
            bads.append(pc.not_equal(flag, 0))
    slow = None
    for b in bads:
        b = pc.fill_null(b, False)
        slow = b if slow is None else pc.or_(slow, b)
    good = pa.table(outs, names=[f"c{i}" for i in range(len(outs))])
    left: list[tuple[Any, ...]] = []
    if slow is not None and pc.any(slow).as_py():
        good = good.filter(pc.invert(slow))
        keys = [table.column(pos + k).filter(slow).to_pylist() for k in range(nkey)]
        left = list(zip(*keys, strict=True))
        if any(type(v) not in (int, str) for k in left for v in k):
            return None
    if plan.binary:
        encodings = [c.encoding for c in plan.columns]
        return LineBatch(_binary_copy(good, encodings), n, left, binary=True)
    sink = io.BytesIO()
    if good.num_rows:
        pcsv.write_csv(good, sink, pcsv.WriteOptions(include_header=False))
    return LineBatch(sink.getvalue(), n, left)


# -- PostgreSQL's binary COPY format -----------------------------------------------------------
# A stream is a signature, flags and header-extension length, then per row a field count
# (int16) and per field its length (int32, -1 for NULL) and bytes, all big-endian, then -1.
_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_TRAILER = b"\xff\xff"
_FIXED = {
    "int8": (">i8", 8),
    "int4": (">i4", 4),
    "int2": (">i2", 2),
    "float8": (">f8", 8),
    "timestamptz": (">i8", 8),  # microseconds since 2000-01-01 UTC
    "bool": ("u1", 1),
}
_INT_RANGE = {"int4": (-(2**31), 2**31 - 1), "int2": (-(2**15), 2**15 - 1)}


def _binary_array(n: int, width: int, payload: Any) -> Any:
    """``n`` binary values of ``width`` bytes each, from one contiguous buffer."""
    import numpy as np
    import pyarrow as pa

    offsets = np.arange(n + 1, dtype=np.int32) * width
    return pa.Array.from_buffers(
        pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(payload)]
    )


def _lengths(values: Any) -> Any:
    """Big-endian int32 length prefixes, one per value."""
    import numpy as np

    n = len(values)
    return _binary_array(n, 4, np.ascontiguousarray(values, dtype=">i4"))


def _field(arr: Any, encoding: str) -> Any:
    """Each value's length and bytes in binary COPY form (length -1 for NULL)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(arr)
    if encoding in _FIXED:
        dtype, width = _FIXED[encoding]
        filled = arr.fill_null(False if encoding == "bool" else 0)
        values = np.ascontiguousarray(filled.to_numpy(zero_copy_only=False), dtype=dtype)
        payload = np.empty((n, 4 + width), np.uint8)
        payload[:, :4] = np.frombuffer(width.to_bytes(4, "big"), np.uint8)
        payload[:, 4:] = values.view(np.uint8).reshape(n, width)
        out = _binary_array(n, 4 + width, payload)
    else:  # text, jsonb (a version byte, 1, before the JSON text)
        text = arr.cast(pa.binary())
        size = pc.binary_length(text).fill_null(0).to_numpy(zero_copy_only=False)
        if encoding == "jsonb":
            version = pa.scalar(b"\x01", pa.binary())
            out = pc.binary_join_element_wise(_lengths(size + 1), version, text, b"")
        else:
            out = pc.binary_join_element_wise(_lengths(size), text, b"")
    if arr.null_count:
        out = pc.if_else(pc.is_null(arr), pa.scalar(b"\xff\xff\xff\xff", pa.binary()), out)
    return out


def _binary_copy(table: Any, encodings: Sequence[str | None]) -> bytes:
    """A whole binary COPY stream of ``table``'s rows (columns in target order)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = table.num_rows
    if n == 0:
        return _SIGNATURE + _TRAILER
    fields = [_field(table.column(k).combine_chunks(), e or "") for k, e in enumerate(encodings)]
    count = pa.scalar(len(fields).to_bytes(2, "big"), pa.binary())
    rows = pc.binary_join_element_wise(count, *fields, b"")
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int32, count=n + 1, offset=rows.offset * 4)
    body = rows.buffers()[2][int(offsets[0]) : int(offsets[n])]
    return b"".join((_SIGNATURE, bytes(body.to_pybytes()), _TRAILER))


# -- reading -----------------------------------------------------------------------------
def _fetch(conn: Any, plan: ArrowPlan, rest: str, params: Sequence[Any], guarded: bool) -> Any:
    cur = conn.cursor()
    try:
        cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(plan.max_rows)})
        cur.execute(f"SELECT {plan.select(guarded)} {rest}", list(params))
        return cur.fetch_arrow_table()
    finally:
        cur.close()


def fetch_arrow(conn: Any, plan: ArrowPlan, rest: str, params: Sequence[Any]) -> LineBatch | None:
    """Read the rows ``rest`` selects (``FROM ... WHERE ... ORDER BY ...``) on an ADBC
    SQLite connection and build their lines: unguarded first, then guarded if a column
    came back with a type its read does not take. None when the batch must be read row
    by row (a read fails, or :func:`build_lines` says so): that read then says why."""
    for guarded in (False, True):
        try:
            table = _fetch(conn, plan, rest, params, guarded)
            return build_lines(table, plan, guarded=guarded)
        except _Unexpected:
            continue
        except Exception:
            # the driver refused the read (a later batch of another type), or a kernel
            # refused a value (say, text that is not UTF-8): the row-by-row read finds
            # that row and Python reports it
            return None
    return None


def strict_json(conn: Any) -> bool:
    """Whether ``json_valid`` on this ADBC connection rejects JSON5 (SQLite before 3.45
    may accept it, and ADBC bundles its own SQLite, not Python's)."""
    cur = conn.cursor()
    try:
        cur.execute("SELECT json_valid('[1,]') OR json_valid('{a:1}')")
        row = cur.fetchone()
    finally:
        cur.close()
    return bool(row) and not row[0]


def connect(uri: str) -> Any:
    """An ADBC connection to the SQLite database at ``uri`` (a read-only ``file:`` URI),
    in autocommit mode: each read sees the database as it is, as sqlite3's reads do."""
    import adbc_driver_sqlite.dbapi

    return adbc_driver_sqlite.dbapi.connect(uri, autocommit=True)


_CONNECTIONS: dict[str, Any] = {}


def read_arrow(uri: str, plan: ArrowPlan, rest: str, params: list[Any]) -> LineBatch | None:
    """:func:`fetch_arrow` in a reader process, on its own connection (kept per process)."""
    conn = _CONNECTIONS.get(uri)
    if conn is None:
        try:
            conn = _CONNECTIONS[uri] = connect(uri)
        except Exception:
            return None
    return fetch_arrow(conn, plan, rest, params)
