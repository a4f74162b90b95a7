"""SQLite SQL for parity tokens: a stored value's canonical text, built in C where that is exact.

:func:`token_sql` returns an SQLite expression giving the parity token
(``<length>:<text>``, or ``~`` for NULL) of a source column converted to a kind, exactly
as :func:`handrail.tablecopy.mapping.canonical` would give it after the kind's default conversion.
Each expression recognises the common shapes of a stored value it can canonicalise
exactly and hands every other value to ``py`` (a registered Python function computing
the exact token), so a rare or odd value costs a Python call and a common one does not:

- text and integers: as stored (text holding NUL goes to Python, which rejects it);
- floats: ``printf('%.15g')`` for finite values in [1e-3, 1e14), unless a 19-digit probe
  (``printf('%!.18e')``) says the value lies near a rounding tie at the 15th digit, where
  SQLite's long-double rounding may differ from Python's correctly rounded one. The probe
  is only trusted after :func:`float_probe_ok` checked this SQLite's printf on known values;
- timestamps: ``YYYY-MM-DD[ T]HH:MM:SS`` with an optional 3- or 6-digit fraction and an
  optional ``Z`` or ``+HH:MM`` offset (converted to UTC by SQLite), checked to be a real
  date by a round trip; 10-digit epoch seconds, as integers or text;
- JSON text: only NULL and blank text (both NULL after conversion). Rebuilding jsonb's
  text form (keys ordered by length, then bytes) in SQLite takes a sorter per document,
  measured slower than Python; Python memoises repeated documents instead.

Tests compare every fast path with the Python canonical text (tests/test_parity_sqlite.py).
"""

from __future__ import annotations

import sqlite3

from ..resources.names import quote_ident

__all__ = ["float_probe_ok", "token_sql"]

_D = "[0-9]"
_ISO_SECONDS = f"{_D * 4}-{_D * 2}-{_D * 2}[ T]{_D * 2}:{_D * 2}:{_D * 2}"
_OFFSET = f"[+-]{_D * 2}:{_D * 2}"


def _tok(e: str) -> str:
    return f"length({e}) || ':' || {e}"


def token_sql(col: str, kind: str, py: str, *, float_ok: bool = True) -> str:
    """The token of column ``col`` converted to ``kind`` by its default conversion, with
    ``py`` (an SQL call of a Python function) for values SQL does not handle."""
    c = quote_ident(col)
    if kind == "text":
        return (
            f"CASE typeof({c}) WHEN 'null' THEN '~' "
            f"WHEN 'text' THEN CASE WHEN instr({c}, char(0)) = 0 THEN {_tok(c)} ELSE {py} END "
            f"WHEN 'integer' THEN {_tok(f'CAST({c} AS TEXT)')} ELSE {py} END"
        )
    if kind == "int":
        return (
            f"CASE typeof({c}) WHEN 'null' THEN '~' "
            f"WHEN 'integer' THEN CAST({c} AS TEXT) || ',' ELSE {py} END"
        )
    if kind == "bool":
        return (
            f"CASE WHEN {c} IS NULL THEN '~' WHEN typeof({c}) = 'integer' AND {c} = 1 "
            f"THEN 't,' WHEN typeof({c}) = 'integer' AND {c} = 0 THEN 'f,' ELSE {py} END"
        )
    if kind == "float":
        return _float_sql(c, py, float_ok)
    if kind == "timestamp":
        return _timestamp_sql(c, py)
    if kind == "json":
        return _json_sql(c, py)
    return py


def _float_sql(c: str, py: str, float_ok: bool) -> str:
    whole = (
        f"WHEN 'integer' THEN CASE WHEN {c} BETWEEN -999999999999999 AND 999999999999999 "
        f"THEN CAST({c} AS TEXT) || ',' ELSE {py} END "
    )
    real = ""
    if float_ok:
        # digits 16 and 17 of |x| (position 17 of d.ddd...); '!' drops trailing zeros, so
        # '5e' is a 16th digit 5 followed by zeros: an exact tie
        near = f"substr(printf('%!.18e', abs({c})), 17, 2) IN ('49', '50', '51', '5e')"
        real = (
            f"WHEN 'real' THEN CASE WHEN abs({c}) >= 1e-3 AND abs({c}) < 1e14 AND NOT {near} "
            f"THEN printf('%.15g', {c}) || ',' ELSE {py} END "
        )
    return f"CASE typeof({c}) WHEN 'null' THEN '~' {whole}{real}ELSE {py} END"


def _timestamp_sql(c: str, py: str) -> str:
    base = f"substr({c}, 1, 19)"
    # a real date and time: SQLite's parser bounds each field (month 1-12, day 1-31, hour
    # 0-24, minutes and seconds 0-59) and keeps 02-30 or 24:00 as parsed until a modifier
    # normalises them (to 03-01, to 00:00 the next day), which changes the day of month;
    # years 2..9998 so that an offset cannot leave Python's datetime range
    valid = (
        f"{c} GLOB '{_ISO_SECONDS}*' AND substr({c}, 1, 4) BETWEEN '0002' AND '9998' "
        f"AND strftime('%d', {base}, '+0 seconds') = substr({c}, 9, 2)"
    )
    same = f"replace({base}, ' ', 'T')"  # no offset: the text itself
    shifted = f"strftime('%Y-%m-%dT%H:%M:%S', {base} || substr({c}, length({c}) - 5))"
    rest = f"substr({c}, 20)"  # what follows the seconds: fraction, zone
    f6, f3 = "." + _D * 6, "." + _D * 3
    micro6 = f"substr({c}, 21, 6)"
    micro3 = f"substr({c}, 21, 3) || '000'"
    cases = [
        (f"length({c}) = 19 OR {rest} = 'Z'", f"{same} || '.000000Z,'"),
        (f"{rest} GLOB '{f6}' OR {rest} GLOB '{f6}Z'", f"{same} || '.' || {micro6} || 'Z,'"),
        (f"{rest} GLOB '{f3}' OR {rest} GLOB '{f3}Z'", f"{same} || '.' || {micro3} || 'Z,'"),
        (f"{rest} GLOB '{_OFFSET}'", f"{shifted} || '.000000Z,'"),
        (f"{rest} GLOB '{f6}{_OFFSET}'", f"{shifted} || '.' || {micro6} || 'Z,'"),
        (f"{rest} GLOB '{f3}{_OFFSET}'", f"{shifted} || '.' || {micro3} || 'Z,'"),
    ]
    text = " ".join(f"WHEN {cond} THEN {out}" for cond, out in cases)
    epoch = f"strftime('%Y-%m-%dT%H:%M:%S.000000Z,', CAST({c} AS INTEGER), 'unixepoch')"
    # shifted is NULL for an offset SQLite does not take (hours above 14): Python then
    return (
        f"CASE typeof({c}) WHEN 'null' THEN '~' "
        f"WHEN 'text' THEN coalesce(CASE WHEN {valid} THEN CASE {text} END "
        f"WHEN {c} GLOB '[1-9]{_D * 9}' THEN {epoch} END, {py}) "
        f"WHEN 'integer' THEN CASE WHEN {c} BETWEEN 0 AND 99999999999 THEN "
        f"strftime('%Y-%m-%dT%H:%M:%S.000000Z,', {c}, 'unixepoch') ELSE {py} END "
        f"ELSE {py} END"
    )


def _json_sql(c: str, py: str) -> str:
    # Rebuilding jsonb's text (keys ordered by length) in SQLite takes a sorter per
    # document, slower than Python; Python memoises documents instead (parity._py_token)
    return (
        f"CASE WHEN {c} IS NULL THEN '~' "
        f"WHEN typeof({c}) = 'text' AND trim({c}, ' ') = '' THEN '~' ELSE {py} END"
    )


# values whose 15-digit rounding SQLite's printf must get right for the float fast path to
# be used: near ties, tiny and large exponents, and a few digits past the 15th
_FLOAT_CHECKS = (
    0.1,
    1 / 3,
    2 / 3,
    0.001,
    0.0012345678901234567,
    12.345678901234567,
    99999999999999.99,
    1234567890123.125,
    1234567890123.1251,
    5e-3,
    7.000000000000001,
    31.415926535897932,
    72.59999999999999,
    0.3000000000000000444,
    98765432109876.5,
)


def float_probe_ok(conn: sqlite3.Connection) -> bool:
    """Whether this SQLite prints floats precisely enough for the float fast path: its
    long-double printf gives the 19th significant digit of known values to within a few
    units, and the fast path's output equals Python's on them."""
    for x in _FLOAT_CHECKS:
        row = conn.execute(
            "SELECT printf('%!.18e', ?1), " + _float_sql("?1", "NULL", True), (x,)
        ).fetchone()
        if row is None:
            return False
        probe, got = row
        digits, _, exp = str(probe).partition("e")
        want_digits, _, want_exp = f"{x:.18e}".partition("e")
        try:
            off = int(digits.replace(".", "").ljust(19, "0")) - int(want_digits.replace(".", ""))
        except ValueError:
            return False
        if exp != want_exp or abs(off) > 3:
            return False
        if got is not None and got != f"{x:.15g},":
            return False
    return True
