"""Declarative column mappings and value conversions, shared by table copies and parity.

A :class:`TableMap` says how rows of a source table become rows of a target table: which
target column comes from which source column (renames), through which :class:`Convert`
(TEXT timestamps to TIMESTAMPTZ, JSON held in TEXT to JSONB, 0/1 to booleans, ...), or
computed by a Python function from the whole source row. A value that does not convert
makes the row a reject (key and reason); it never raises out of :meth:`RowMapper.convert`.

Conventions, chosen once so copy and parity agree:

- timestamps without a zone are UTC; epoch numbers are seconds, or milliseconds when
  above 10^11 (10^11 seconds is in the year 5138); output is an aware UTC ``datetime``;
- JSON held in TEXT: empty or NULL is NULL; text that is not JSON, or nested deeper than
  :data:`MAX_JSON_DEPTH` levels, is kept as ``{"raw_text": text}``; the value is carried
  as :class:`JsonText` in PostgreSQL's own ``jsonb`` text form (keys by length then
  bytes, numbers as ``numeric``);
- booleans accept 0/1, t/f, true/false, yes/no, on/off (any case);
- text never holds NUL (PostgreSQL cannot store it): such a value is a reject.

:func:`canonical` gives one text per value of a kind; parity compares those texts, so a
converted timestamp or JSON document is not a false difference.

Example::

    content = TableMap(
        "content", "content", key=["video_id"], order_by=["indexed_at"],
        columns=[
            Column("video_id"),
            Column("published_at", convert=timestamptz()),
            Column("topics_json", source="key_topics", convert=jsonb()),
            Column("has_audio", convert=boolean()),
            Column("slug", compute=lambda row: row["title"].lower(), kind="text"),
        ],
    )
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from ..errors import BadInput
from ..model import Reject
from ..runbook import describe_callable

__all__ = [
    "KINDS",
    "MAX_JSON_DEPTH",
    "BoundColumn",
    "Column",
    "ConversionError",
    "Convert",
    "Converted",
    "CopySpec",
    "JsonText",
    "MappingError",
    "RowMapper",
    "TableMap",
    "as_is",
    "boolean",
    "brackets",
    "bytea",
    "canonical",
    "date_",
    "float_text",
    "for_kind",
    "integer",
    "json_depth",
    "jsonb",
    "jsonb_text",
    "key_text",
    "kind_of_pg_type",
    "kind_of_sqlite_type",
    "numeric",
    "real",
    "text",
    "timestamp_text",
    "timestamptz",
    "to_bool",
    "to_float",
    "to_int",
    "to_json",
    "to_text",
    "to_timestamp",
    "uuid_",
]

#: kinds of values a mapped column holds, each with one canonical text
KINDS = (
    "text",
    "int",
    "float",
    "float4",
    "numeric",
    "bool",
    "timestamp",
    "date",
    "json",
    "bytes",
    "uuid",
    "any",
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS_THRESHOLD = 10**11
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_ZONE_WORD = re.compile(r"\s*(UTC|GMT|Z)$", re.IGNORECASE)
_TRUE = frozenset({"1", "t", "true", "y", "yes", "on"})
_FALSE = frozenset({"0", "f", "false", "n", "no", "off"})


#: JSON nested deeper than this is kept as raw text. Python's decoder and encoder recurse
#: per level, so without a fixed limit the outcome would depend on how deep the caller's
#: stack already is; every copy reader sends such documents here.
MAX_JSON_DEPTH = 256


def json_depth(s: str) -> int:
    """How deeply the arrays and objects of JSON text ``s`` nest (brackets inside strings
    do not count)."""
    depth = top = 0
    in_string = escaped = False
    for ch in s:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            top = max(top, depth)
        elif ch in "]}":
            depth -= 1
    return top


def brackets(s: str) -> int:
    """The ``[`` and ``{`` in ``s``: a bound on its JSON depth, cheap to count."""
    return s.count("[") + s.count("{")


class ConversionError(ValueError):
    """A value that does not convert; the row becomes a reject with this reason."""


class MappingError(BadInput):
    """A table mapping is inconsistent with the tables it maps."""


class JsonText(str):
    """A JSON document as text, already in PostgreSQL's ``jsonb`` output form."""

    __slots__ = ()


# -- converters --------------------------------------------------------------------------
@dataclass(frozen=True)
class Convert:
    """A named conversion of one source value to a value of ``kind`` (raises
    :class:`ConversionError` when it cannot)."""

    name: str
    kind: str
    fn: Callable[[Any], Any]

    def __call__(self, value: Any) -> Any:
        return self.fn(value)


def to_text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, str):
        s = v
    elif isinstance(v, bytes):
        try:
            s = v.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConversionError(f"bytes are not UTF-8 text ({exc.reason})") from None
    elif isinstance(v, float):
        s = repr(v)
    else:
        s = str(v)
    if "\x00" in s:
        raise ConversionError("text holds a NUL character, which PostgreSQL cannot store")
    return s


def to_int(v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        if v.is_integer():
            return int(v)
        raise ConversionError(f"{v!r} is not a whole number")
    if isinstance(v, Decimal):
        if v == v.to_integral_value():
            return int(v)
        raise ConversionError(f"{v} is not a whole number")
    if isinstance(v, str):
        s = v.strip()
        if s == "":
            return None
        try:
            return int(s)
        except ValueError:
            pass
        try:
            f = float(s)
        except ValueError:
            raise ConversionError(f"{v!r} is not an integer") from None
        if f.is_integer():
            return int(f)
        raise ConversionError(f"{v!r} is not a whole number")
    raise ConversionError(f"{type(v).__name__} value {v!r} is not an integer")


def to_float(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float | Decimal):
        return float(v)
    if isinstance(v, str):
        s = v.strip()
        if s == "":
            return None
        try:
            return float(s)
        except ValueError:
            raise ConversionError(f"{v!r} is not a number") from None
    raise ConversionError(f"{type(v).__name__} value {v!r} is not a number")


def _to_numeric(v: Any) -> Decimal | None:
    if v is None:
        return None
    if isinstance(v, str) and v.strip() == "":
        return None
    try:
        d = Decimal(repr(v) if isinstance(v, float) else str(v).strip())
    except InvalidOperation:
        raise ConversionError(f"{v!r} is not a number") from None
    if not d.is_finite():
        raise ConversionError(f"{v!r} is not a finite number")
    return d


def to_bool(v: Any) -> bool | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float) and v in (0, 1):
        return bool(v)
    if isinstance(v, str):
        s = v.strip().lower()
        if s == "":
            return None
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
    raise ConversionError(f"{v!r} is not a boolean (expected 0/1, t/f, true/false, yes/no)")


def _epoch(x: float) -> datetime:
    if not math.isfinite(x):
        raise ConversionError(f"{x!r} is not a time")
    seconds = x / 1000 if abs(x) >= _MS_THRESHOLD else x
    try:
        return _EPOCH + timedelta(seconds=seconds)
    except OverflowError:
        raise ConversionError(f"epoch {x!r} is out of range") from None


def to_timestamp(v: Any) -> datetime | None:
    if v is None:
        return None
    if isinstance(v, datetime):
        dt = v
    elif isinstance(v, date):
        dt = datetime(v.year, v.month, v.day)
    elif isinstance(v, bool):
        raise ConversionError(f"{v!r} is not a time")
    elif isinstance(v, int | float):
        return _epoch(float(v))
    elif isinstance(v, str):
        s = v.strip()
        if s == "":
            return None
        try:
            dt = datetime.fromisoformat(s)
        except ValueError:
            if _NUMBER.match(s):
                return _epoch(float(s))
            zoned = _ZONE_WORD.sub("+00:00", s)
            try:
                dt = datetime.fromisoformat(zoned.replace(" +", "+").replace(" -", "-"))
            except ValueError:
                raise ConversionError(f"{v!r} is not an ISO 8601 time or epoch") from None
    else:
        raise ConversionError(f"{type(v).__name__} value {v!r} is not a time")
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)  # naive times are UTC by convention
    try:
        return dt.astimezone(UTC)
    except OverflowError:  # 0001-01-01 00:00+05:00 is in year 0, 9999-12-31 23:00-02:00 in 10000
        raise ConversionError(f"{v!r} falls outside the years 1 to 9999 in UTC") from None


def _to_date(v: Any) -> date | None:
    if v is None:
        return None
    if isinstance(v, datetime):
        return v.date()
    if isinstance(v, date):
        return v
    if isinstance(v, str):
        s = v.strip()
        if s == "":
            return None
        if len(s) > 10 and s[10] in "T ":
            s = s[:10]
        try:
            return date.fromisoformat(s)
        except ValueError:
            raise ConversionError(f"{v!r} is not an ISO 8601 date") from None
    raise ConversionError(f"{type(v).__name__} value {v!r} is not a date")


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=_reject_constant)


def to_json(v: Any) -> JsonText | None:
    if v is None:
        return None
    if isinstance(v, JsonText):
        return v
    if isinstance(v, bytes):
        v = to_text(v)
    if isinstance(v, str):
        s = v.strip()
        if s == "":
            return None
        if brackets(s) > MAX_JSON_DEPTH and json_depth(s) > MAX_JSON_DEPTH:
            obj: Any = {"raw_text": v}
        else:
            try:
                obj = _DECODER.decode(s)
            except (ValueError, RecursionError):
                obj = {"raw_text": v}
    else:
        obj = v
    try:
        out = jsonb_text(obj)
        out.encode("utf-8")  # a lone surrogate escape decodes to text no database can hold
    except UnicodeEncodeError:
        raise ConversionError("JSON holds a lone UTF-16 surrogate escape") from None
    except (TypeError, ValueError) as exc:
        raise ConversionError(str(exc)) from None
    except RecursionError:  # a document built in Python (a computed column), not text
        raise ConversionError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    return JsonText(out)


def _to_bytes(v: Any) -> bytes | None:
    if v is None:
        return None
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v)
    if isinstance(v, str):
        return v.encode("utf-8")
    raise ConversionError(f"{type(v).__name__} value {v!r} is not bytes")


def _to_uuid(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, str) and v.strip() == "":
        return None
    try:
        return str(v if isinstance(v, uuid.UUID) else uuid.UUID(str(v).strip()))
    except ValueError:
        raise ConversionError(f"{v!r} is not a UUID") from None


def _as_is(v: Any) -> Any:
    return v


def text() -> Convert:
    """Any scalar to text (bytes must be UTF-8)."""
    return Convert("text", "text", to_text)


def integer() -> Convert:
    """Whole numbers, from ints, integral floats and numeric text."""
    return Convert("integer", "int", to_int)


def real() -> Convert:
    """Floating point (double precision)."""
    return Convert("real", "float", to_float)


def numeric() -> Convert:
    """Exact decimals."""
    return Convert("numeric", "numeric", _to_numeric)


def boolean() -> Convert:
    """0/1 integers (and t/f, true/false, yes/no, on/off text) to booleans."""
    return Convert("boolean", "bool", to_bool)


def timestamptz() -> Convert:
    """ISO 8601 text (with or without zone, 'T' or space), epoch numbers -> UTC datetime."""
    return Convert("timestamptz", "timestamp", to_timestamp)


def date_() -> Convert:
    """ISO dates (a time part is dropped)."""
    return Convert("date", "date", _to_date)


def jsonb() -> Convert:
    """JSON held in text to a JSON document; non-JSON text becomes ``{"raw_text": ...}``."""
    return Convert("jsonb", "json", to_json)


def bytea() -> Convert:
    return Convert("bytea", "bytes", _to_bytes)


def uuid_() -> Convert:
    return Convert("uuid", "uuid", _to_uuid)


def as_is(kind: str = "any") -> Convert:
    """The value unchanged (the target parses it); compared as ``kind``."""
    return Convert("as_is", kind, _as_is)


_BY_KIND: dict[str, Callable[[], Convert]] = {
    "text": text,
    "int": integer,
    "float": real,
    "float4": lambda: Convert("real4", "float4", to_float),
    "numeric": numeric,
    "bool": boolean,
    "timestamp": timestamptz,
    "date": date_,
    "json": jsonb,
    "bytes": bytea,
    "uuid": uuid_,
    "any": as_is,
}


def for_kind(kind: str) -> Convert:
    """The default conversion into values of ``kind``."""
    try:
        return _BY_KIND[kind]()
    except KeyError:
        raise MappingError(f"unknown value kind {kind!r}; expected one of {KINDS}") from None


def kind_of_pg_type(typname: str) -> str:
    """The value kind of a PostgreSQL type name (``format_type`` or ``typname``)."""
    t = typname.lower().split("(")[0].strip()
    if t.endswith("[]"):
        return "any"
    return {
        "smallint": "int",
        "integer": "int",
        "bigint": "int",
        "int2": "int",
        "int4": "int",
        "int8": "int",
        "double precision": "float",
        "float8": "float",
        "real": "float4",
        "float4": "float4",
        "numeric": "numeric",
        "boolean": "bool",
        "bool": "bool",
        "timestamp with time zone": "timestamp",
        "timestamptz": "timestamp",
        "timestamp without time zone": "timestamp",
        "timestamp": "timestamp",
        "date": "date",
        "json": "json",
        "jsonb": "json",
        "bytea": "bytes",
        "uuid": "uuid",
    }.get(t, "text")


def kind_of_sqlite_type(decl: str) -> str:
    """The value kind of a SQLite declared type, by SQLite's affinity rules."""
    d = decl.upper()
    if "INT" in d:
        return "int"
    if any(x in d for x in ("CHAR", "CLOB", "TEXT")):
        return "text"
    if "BLOB" in d:
        return "bytes"
    if any(x in d for x in ("REAL", "FLOA", "DOUB")):
        return "float"
    return "any"


# -- canonical texts ---------------------------------------------------------------------
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": "), allow_nan=False).encode


def _jkey(k: str) -> tuple[int, str]:
    return (len(k.encode()), k)


def _order(o: Any) -> Any:
    t = type(o)
    if t is dict:
        return {k: _order(o[k]) for k in sorted(o, key=_jkey)}
    if t is list:
        return [_order(v) for v in o]
    if t is float:
        raise TypeError("floats print as numeric: the slow path formats them")
    return o


def jsonb_text(obj: Any) -> str:
    """``obj`` as PostgreSQL prints a ``jsonb`` value: keys ordered by length then bytes,
    ``", "`` and ``": "`` separators, numbers in ``numeric`` form."""
    try:
        out = _ENCODE(_order(obj))  # C encoder: all but Decimal and odd types
    except (TypeError, ValueError):
        return _jsonb_text(obj)
    if "\\u0000" in out:
        return _jsonb_text(obj)
    return out


def _jsonb_text(obj: Any) -> str:
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, str):
        if "\x00" in obj:
            raise ValueError("JSON text holds \\u0000, which PostgreSQL's jsonb cannot store")
        return json.dumps(obj, ensure_ascii=False)
    if isinstance(obj, int):
        return str(obj)
    if isinstance(obj, Decimal):
        return _numeric_text(obj)
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"{obj!r} is not a JSON number")
        return _numeric_text(Decimal(repr(obj)))
    if isinstance(obj, Mapping):
        items = sorted(((str(k), v) for k, v in obj.items()), key=lambda kv: _jkey(kv[0]))
        return "{" + ", ".join(f"{_jsonb_text(k)}: {_jsonb_text(v)}" for k, v in items) + "}"
    if isinstance(obj, list | tuple):
        return "[" + ", ".join(_jsonb_text(v) for v in obj) + "]"
    raise TypeError(f"{type(obj).__name__} is not a JSON value")


def _numeric_text(d: Decimal) -> str:
    if not d.is_finite():
        raise ValueError(f"{d} is not a JSON number")
    s = format(d, "f")
    return s[1:] if d.is_zero() and s.startswith("-") else s


def float_text(x: float, digits: int = 15) -> str:
    """A float to ``digits`` significant digits, as ``%.{digits}g`` prints it (PostgreSQL
    with ``extra_float_digits = 0``, SQLite's ``printf('%.15g')``)."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return f"{x:.{digits}g}"


def timestamp_text(dt: datetime) -> str:
    """UTC, ISO 8601 with microseconds and a ``Z``: ``2024-01-02T03:04:05.000000Z``."""
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt.isoformat(timespec="microseconds") + "Z"


def canonical(kind: str, value: Any) -> str | None:
    """The one text of a (converted) value of ``kind``; None for SQL NULL.

    Floats compare to 15 significant digits (``float4`` to 6): what both databases can
    print alike. Use it on values that went through :func:`for_kind` (or a conversion
    of that kind).
    """
    if value is None:
        return None
    if kind == "text":
        return value if isinstance(value, str) else str(value)
    if kind == "int":
        return str(int(value))
    if kind == "float":
        return float_text(float(value))
    if kind == "float4":
        return float_text(float(value), 6)
    if kind == "numeric":
        return _numeric_text(value if isinstance(value, Decimal) else Decimal(str(value)))
    if kind == "bool":
        return "t" if value else "f"
    if kind == "timestamp":
        return timestamp_text(value)
    if kind == "date":
        return value.isoformat() if isinstance(value, date) else str(value)
    if kind == "json":
        return value if isinstance(value, JsonText) else jsonb_text(value)
    if kind == "bytes":
        return bytes(value).hex()
    if kind == "uuid":
        return str(value).lower()
    # "any": compared as text
    if isinstance(value, float):
        return float_text(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return str(value)


# -- table mappings ----------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    """One target column: from ``source`` (default: the same name) through ``convert``
    (default: the conversion for the target column's kind), or computed by ``compute``
    from the whole source row (a dict) and then converted to ``kind``."""

    target: str
    source: str | None = None
    convert: Convert | None = None
    compute: Callable[[dict[str, Any]], Any] | None = None
    kind: str | None = None
    needs: tuple[str, ...] = ()  # source columns a computed column reads

    def __post_init__(self) -> None:
        if self.compute is not None and self.source is not None:
            raise MappingError(f"column {self.target!r}: give source= or compute=, not both")
        if self.kind is not None and self.kind not in KINDS:
            raise MappingError(f"column {self.target!r}: unknown kind {self.kind!r}")

    @property
    def source_name(self) -> str | None:
        if self.compute is not None:
            return None
        return self.source or self.target

    def describe(self) -> dict[str, Any]:
        """What defines the column, for the plan hash: the same in every process (a
        function is described by its source text, never by its address)."""
        return {
            "target": self.target,
            "source": self.source,
            "convert": None
            if self.convert is None
            else [self.convert.name, self.convert.kind, describe_callable(self.convert.fn)],
            "compute": None if self.compute is None else describe_callable(self.compute),
            "kind": self.kind,
            "needs": list(self.needs),
        }


@dataclass
class TableMap:
    """How rows of ``source`` become rows of ``target``.

    ``key`` is the target's natural key (target column names; each must come from a
    source column unchanged or through a conversion). ``source_key`` orders the source
    for batches (default: its primary key, else SQLite's rowid). Source rows sharing a
    natural key are resolved deterministically: the last by ``order_by`` (source
    columns, then ``source_key``) wins and the others are reported. Without ``columns``
    every target column is copied from the source column of the same name.
    """

    source: str
    target: str
    key: Sequence[str]
    columns: Sequence[Column] = ()
    source_key: Sequence[str] | None = None
    order_by: Sequence[str] = ()
    where: str | None = None  # an SQL filter on the source, in the source's dialect
    name: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            raise MappingError(f"mapping {self.source}->{self.target}: a natural key is needed")
        self.key = list(self.key)
        self.columns = list(self.columns)
        self.order_by = list(self.order_by)
        if self.source_key is not None:
            self.source_key = list(self.source_key)
        self.name = self.name or f"{self.source}->{self.target}"
        targets = [c.target for c in self.columns]
        dup = {t for t in targets if targets.count(t) > 1}
        if dup:
            raise MappingError(f"mapping {self.name}: target column(s) mapped twice: {dup}")
        if self.columns:
            missing = [k for k in self.key if k not in targets]
            if missing:
                raise MappingError(f"mapping {self.name}: key column(s) {missing} are not mapped")

    def bind(self, target_kinds: Mapping[str, str], source_columns: Sequence[str]) -> RowMapper:
        """Resolve defaults against the real tables; checks names on both sides."""
        return RowMapper(self, dict(target_kinds), list(source_columns))


@dataclass
class BoundColumn:
    target: str
    kind: str
    convert: Convert
    source_index: int | None  # None: computed
    compute: Callable[[dict[str, Any]], Any] | None = None


@dataclass
class Converted:
    """One converted row: natural-key values and the target values in column order."""

    key: tuple[Any, ...]
    values: tuple[Any, ...]


@dataclass
class RowMapper:
    """A :class:`TableMap` resolved against real columns; converts source rows."""

    spec: TableMap
    target_kinds: dict[str, str]
    source_columns: list[str]
    columns: list[BoundColumn] = field(init=False)
    select: list[str] = field(init=False)  # source columns to read, in this order
    key_index: list[int] = field(init=False)  # positions of the natural key in values
    has_compute: bool = field(init=False)

    def __post_init__(self) -> None:
        spec = self.spec
        cols = list(spec.columns) or [
            Column(t) for t in self.target_kinds if t in self.source_columns
        ]
        src_lower = {c.lower(): c for c in self.source_columns}
        select: list[str] = []
        bound: list[BoundColumn] = []
        for col in cols:
            if col.target not in self.target_kinds:
                raise MappingError(
                    f"mapping {spec.name}: target table {spec.target!r} has no column "
                    f"{col.target!r}"
                )
            kind = col.kind or (col.convert.kind if col.convert else None)
            kind = kind or self.target_kinds[col.target]
            conv = col.convert or for_kind(kind)
            if col.compute is not None:
                for need in col.needs:
                    if need.lower() not in src_lower:
                        raise MappingError(
                            f"mapping {spec.name}: computed column {col.target!r} needs "
                            f"source column {need!r}, which {spec.source!r} lacks"
                        )
                bound.append(BoundColumn(col.target, kind, conv, None, col.compute))
                continue
            name = col.source_name or col.target
            real_name = src_lower.get(name.lower())
            if real_name is None:
                raise MappingError(
                    f"mapping {spec.name}: source table {spec.source!r} has no column {name!r}"
                )
            if real_name not in select:
                select.append(real_name)
            bound.append(BoundColumn(col.target, kind, conv, select.index(real_name)))
        self.has_compute = any(b.compute is not None for b in bound)
        if self.has_compute:
            # a computed column sees the whole source row
            for c in self.source_columns:
                if c not in select:
                    select.append(c)
        self.columns = bound
        self.select = select
        targets = [b.target for b in bound]
        self.key_index = [targets.index(k) for k in spec.key]

    @property
    def targets(self) -> list[str]:
        return [b.target for b in self.columns]

    def convert(self, row: Sequence[Any], *, source_key: str = "") -> Converted | Reject:
        """Convert one source row (values in :attr:`select` order)."""
        values: list[Any] = []
        record: dict[str, Any] | None = None
        for b in self.columns:
            try:
                if b.compute is not None:
                    if record is None:
                        record = dict(zip(self.select, row, strict=True))
                    try:
                        raw = b.compute(record)
                    except ConversionError:
                        raise
                    except Exception as exc:
                        raise ConversionError(f"compute failed: {exc!r}") from None
                else:
                    assert b.source_index is not None
                    raw = row[b.source_index]
                values.append(b.convert.fn(raw))
            except ConversionError as exc:
                where = self._key_text(row, values) or source_key
                return Reject(self.spec.source, where, f"{b.target}: {exc}")
        key = tuple(values[i] for i in self.key_index)
        if any(k is None for k in key):
            return Reject(self.spec.source, source_key, "natural key is NULL")
        return Converted(key, tuple(values))

    def _key_text(self, row: Sequence[Any], done: list[Any]) -> str:
        parts = []
        for i in self.key_index:
            b = self.columns[i]
            if i < len(done):
                parts.append(str(done[i]))
            elif b.source_index is not None:
                parts.append(str(row[b.source_index]))
            else:
                return ""
        return "/".join(parts)

    def canonical_row(self, values: Sequence[Any]) -> list[str | None]:
        """The canonical texts of a converted row's values."""
        return [canonical(b.kind, v) for b, v in zip(self.columns, values, strict=True)]


def key_text(key: Sequence[Any]) -> str:
    """A natural key as one string for reports: values joined by ``/``."""
    return "/".join(str(k) for k in key)


@dataclass(frozen=True)
class CopySpec:
    """What to copy: a mapping, and what to do when the natural key already exists
    (``"update"``: overwrite changed rows; ``"nothing"``: keep the target's row)."""

    mapping: TableMap
    on_conflict: str = "update"

    def __post_init__(self) -> None:
        if self.on_conflict not in ("update", "nothing"):
            raise MappingError(
                f"on_conflict must be 'update' or 'nothing', not {self.on_conflict!r}"
            )
