"""The SQL fast paths of parity's SQLite side give exactly the Python canonical tokens, and
hand every value they cannot canonicalise exactly to Python."""

from __future__ import annotations

import random
import sqlite3
import struct
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from handrail.tablecopy.mapping import canonical, for_kind
from handrail.tablecopy.parity import token
from handrail.tablecopy.parity_sqlite import float_probe_ok, token_sql

FALLBACK = "<python>"


def python_token(kind: str, value: Any) -> str:
    try:
        return token(canonical(kind, for_kind(kind).fn(value)), kind)
    except Exception:
        return "!reject"


def fast_tokens(kind: str, values: list[Any]) -> list[tuple[Any, str]]:
    """(value, token) by the SQL expression, FALLBACK where it hands the value to Python."""
    with closing(sqlite3.connect(":memory:")) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.executemany("INSERT INTO t VALUES (?)", [(v,) for v in values])
        conn.create_function("py", 1, lambda v: FALLBACK, deterministic=True)
        ok = float_probe_ok(conn)
        sql = token_sql("x", kind, "py(x)", float_ok=ok)
        return conn.execute(f"SELECT x, {sql} FROM t ORDER BY rowid").fetchall()


def check(kind: str, values: list[Any]) -> tuple[int, int]:
    """Assert every fast-path token equals Python's; return (fast, to Python) counts."""
    got = fast_tokens(kind, values)
    wrong = [(v, t, python_token(kind, v)) for v, t in got if t != FALLBACK]
    wrong = [w for w in wrong if w[1] != w[2]]
    assert wrong[:5] == []
    fallback = sum(1 for _, t in got if t == FALLBACK)
    return len(got) - fallback, fallback


def random_floats(n: int) -> Iterator[Any]:
    rnd = random.Random(11)
    for i in range(n):
        form = i % 5
        if form == 0:
            yield rnd.random() * 100
        elif form == 1:
            yield struct.unpack("d", struct.pack("Q", rnd.getrandbits(64)))[0]
        elif form == 2:
            yield rnd.uniform(-1e14, 1e14)
        elif form == 3:
            yield float(f"{rnd.random() * 1000:.{rnd.randint(1, 16)}f}")
        else:
            yield round(rnd.random() * 1e6, 3) + 0.0005  # near a tie at some digit


def test_float_probe_trusts_this_sqlite() -> None:
    with closing(sqlite3.connect(":memory:")) as conn:
        assert float_probe_ok(conn)  # else the float fast path is off and slower


def test_floats_match_python_to_15_digits() -> None:
    fast, slow = check("float", list(random_floats(100_000)))
    assert fast > 50_000  # the fast path is taken for most values in range
    assert slow > 0


@pytest.mark.parametrize(
    ("value", "fast"),
    [
        (86.56067342856295, False),  # near a tie at the 15th digit: SQLite rounds up
        (1234567890123.125, False),  # an exact tie: Python rounds half to even
        (55912724071733.75, False),
        (-0.0, False),  # Python prints -0
        (0.0, False),
        (1e-5, False),  # exponent form
        (1e14, False),
        (float("inf"), False),  # (SQLite stores NaN as NULL)
        (12.5, True),
        (-3.25, True),
        (5, True),  # an integer in a REAL column
        (10**15, False),
        ("1.5", False),
        (None, True),
    ],
)
def test_float_values(value: Any, fast: bool) -> None:
    ((_, tok),) = fast_tokens("float", [value])
    assert (tok != FALLBACK) == fast
    if fast:
        assert tok == python_token("float", value)


def timestamp_values() -> list[Any]:
    rnd = random.Random(5)
    base = datetime(2020, 1, 1, tzinfo=UTC)
    out: list[Any] = []
    for i in range(20_000):
        t = base + timedelta(
            seconds=rnd.randrange(-2_000_000_000, 2_000_000_000),
            microseconds=rnd.choice([0, rnd.randrange(1_000_000)]),
        )
        zone = timezone(timedelta(minutes=rnd.randrange(-23 * 60, 23 * 60)))
        out += [
            t.strftime("%Y-%m-%d %H:%M:%S"),
            t.strftime("%Y-%m-%dT%H:%M:%SZ"),
            t.isoformat(timespec="microseconds"),
            t.astimezone(zone).isoformat(timespec=["seconds", "milliseconds"][i % 2]),
            t.strftime("%Y-%m-%dT%H:%M:%S.%f")[: [23, 26][i % 2]] + ["", "Z"][i % 2],
            str(int(t.timestamp())),
            int(t.timestamp()),
        ]
    return out


ODD_TIMES = [
    None,
    "",
    " ",
    "now",
    "2020-01-01",
    "20200101",
    "2020010112",
    1.5e9,
    10**12,
    -5,
    "1e9",
    " 2020-01-01 00:00:00 ",
    "0001-01-01T00:00:00+01:00",  # leaves Python's range in UTC
    "9999-12-31T23:59:59-01:00",
    "0000-01-01 00:00:00",
    "2020-02-30 00:00:00",  # not a date: SQLite would normalise it to 03-01
    "2019-02-29 12:00:00",
    "2020-02-29 12:00:00",
    "2020-01-01 24:00:00",
    "2020-01-01 23:60:00",
    "2020-01-01t00:00:00",
    "2020-01-01T00:00:00+15:00",  # SQLite takes offsets up to 14 hours
    "2020-01-01T00:00:00+14:00",
    "2020-01-01T00:00:00-00:00",
    "2020-01-01T00:00:00.1234567",
    "2020-01-01T00:00:00.123+05:30",
    "1999-12-31 23:59:59Z",
]


def test_timestamps_match_python() -> None:
    fast, slow = check("timestamp", timestamp_values() + ODD_TIMES)
    assert fast > 100_000
    assert slow > 0


@pytest.mark.parametrize(
    ("value", "fast"),
    [
        ("2020-02-30 00:00:00", False),
        ("2020-01-01 24:00:00", False),
        ("0000-01-01 00:00:00", False),
        ("2020-01-01T00:00:00+15:00", False),
        ("2020-01-01 03:04:05", True),
        ("2020-01-01T03:04:05.250000+02:00", True),
        ("1600000000", True),
        (1600000000, True),
        (None, True),
    ],
)
def test_timestamp_values(value: Any, fast: bool) -> None:
    ((_, tok),) = fast_tokens("timestamp", [value])
    assert (tok != FALLBACK) == fast
    if fast:
        assert tok == python_token("timestamp", value)


TEXTS = ["a", "", "é😀 unicode", "x\x00y", 5, 1.5, None, b"ab", "  ", "1:2", "~", "tab\tcomma,"]


@pytest.mark.parametrize(
    ("kind", "values"),
    [
        ("text", TEXTS),
        ("int", [1, -5, 0, 2**63 - 1, 1.0, 1.5, "7", " 8 ", "", "x", None, b"1"]),
        ("bool", [0, 1, 2, "t", "false", None, 1.0, 0.0, "", "yes"]),
        ("json", [None, "", "   ", '{"b": 1, "a": [1, 2]}', "not json", "null", 5, "\t"]),
    ],
)
def test_other_kinds_match_python(kind: str, values: list[Any]) -> None:
    fast, _ = check(kind, values)
    assert fast > 0
