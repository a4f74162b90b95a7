"""COPY lines built in SQLite store exactly what the Python conversions store.

Each value goes into a real SQLite column, through :func:`column_expression`, and where
SQL gives a field, that field and the Python authority's field are both COPYed into a
real PostgreSQL column of the target type: the stored values must be equal (and equal
as text, so a float differing in its last bit or a timestamp a microsecond off fails).
"""

from __future__ import annotations

import json
import math
import sqlite3
import struct
from collections.abc import Iterator, Sequence
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handrail.resources.postgres import Postgres
from handrail.resources.sqlite import SQLite
from handrail.tablecopy.copy import CopyJob, _csv_field, _line_function, copy_table
from handrail.tablecopy.mapping import (
    Column,
    ConversionError,
    TableMap,
    boolean,
    jsonb,
    real,
    text,
    timestamptz,
)
from handrail.tablecopy.mapping import (
    to_bool as _to_bool,
)
from handrail.tablecopy.mapping import (
    to_float as _to_float,
)
from handrail.tablecopy.mapping import (
    to_int as _to_int,
)
from handrail.tablecopy.mapping import (
    to_json as _to_json,
)
from handrail.tablecopy.mapping import (
    to_text as _to_text,
)
from handrail.tablecopy.mapping import (
    to_timestamp as _to_timestamp,
)
from handrail.tablecopy.read_sql import Capabilities, column_expression, needs_python

pytestmark = pytest.mark.postgres

CAPS = Capabilities(hex_floats=True, strict_json=True)


@pytest.fixture(scope="module")
def pg(pg_cluster: Any) -> Iterator[psycopg.Connection]:
    dsn = pg_cluster.create_database("pgcopy_sql")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        yield conn


def sql_fields(values: Sequence[Any], fn: object, pg_type: str, key: bool = False) -> list[Any]:
    with closing(sqlite3.connect(":memory:")) as conn:
        conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, v)")
        conn.executemany("INSERT INTO t (v) VALUES (?)", [(v,) for v in values])
        expr = column_expression("v", fn, pg_type, CAPS, key=key)
        fields = [r[0] for r in conn.execute(f"SELECT {expr} FROM t ORDER BY n")]
    # as the copy does: a field holding NUL or a \u0000 escape goes to Python
    return [None if needs_python(f) else f for f in fields]


def python_field(value: Any, fn: Any) -> str | None:
    """The authority's CSV field, or None when Python refuses the value."""
    try:
        return _csv_field(fn(value))
    except ConversionError:
        return None


def stored(conn: psycopg.Connection, pg_type: str, fields: Sequence[str]) -> list[str | None]:
    """Each CSV field COPYed alone into a column of ``pg_type``, read back as text; an
    error (PostgreSQL refuses the field) reads back as ``'<error>'``."""
    out: list[str | None] = []
    for f in fields:
        try:
            with conn.transaction():
                conn.execute(f"CREATE TEMP TABLE x (v {pg_type}) ON COMMIT DROP")
                with conn.cursor().copy("COPY x FROM STDIN (FORMAT csv)") as cp:
                    cp.write(f + "\n")
                row = conn.execute(
                    "SELECT CASE WHEN v IS NULL THEN NULL ELSE v::text END FROM x"
                ).fetchone()
                out.append(row[0] if row else "<none>")
        except psycopg.Error:
            out.append("<error>")
    return out


def check_same(
    conn: psycopg.Connection, values: Sequence[Any], fn: Any, pg_type: str, key: bool = False
) -> list[Any]:
    """Assert that every field SQL gives stores what Python's stores; return the fields."""
    got = sql_fields(values, fn, pg_type, key)
    pairs = [(v, f, python_field(v, fn)) for v, f in zip(values, got, strict=True)]
    handled = [(v, f, p) for v, f, p in pairs if f is not None]
    ours = stored(conn, pg_type, [f for _, f, _ in handled])
    theirs = stored(conn, pg_type, [p if p is not None else "<refused>" for _, _, p in handled])
    for (v, f, p), a, b in zip(handled, ours, theirs, strict=True):
        if p is None:
            # Python refuses the value: PostgreSQL must refuse SQL's field too
            assert a == "<error>", f"{v!r}: Python refuses it, SQL sent {f!r} which stored {a}"
        else:
            assert a == b, f"{v!r}: SQL field {f!r} stored {a}, Python field {p!r} stored {b}"
    return got


FLOATS = [
    0.1,
    -0.1,
    1.0,
    2.0,
    0.5,
    3.0,
    1 / 3,
    2**52 + 1.0,
    2.0**-1000 * 1.5,
    1e-270,
    1.7976931348623157e308,
    5e-324,
    123456789.123456789,
    -2.5e-300,
    7.0,
    math.nextafter(4.0, 0.0),
    math.nextafter(4.0, 8.0),
    math.nextafter(0.5, 0.0),
]


def test_floats_are_exact_in_hex(pg: psycopg.Connection) -> None:
    got = check_same(pg, FLOATS, _to_float, "double precision")
    assert got[0].startswith("0x")  # the SQL path is taken
    assert got[FLOATS.index(5e-324)] is None  # subnormal: Python's


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=40))
def test_random_floats_are_exact(pg: psycopg.Connection, values: list[float]) -> None:
    got = check_same(pg, values, _to_float, "double precision")
    for v, f in zip(values, got, strict=True):
        if 1e-270 <= abs(v) <= 1e270:
            assert f is not None, v


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=0, max_value=2**64 - 1), min_size=1, max_size=40))
def test_random_bit_patterns_are_exact(pg: psycopg.Connection, bits: list[int]) -> None:
    values = [struct.unpack("<d", struct.pack("<Q", b))[0] for b in bits]
    check_same(pg, [v for v in values if math.isfinite(v)] or [1.0], _to_float, "double precision")


TIMES = [
    "2024-02-29 10:11:12",
    "2024-02-29T10:11:12",
    "2024-02-29T10:11:12Z",
    "2024-02-29 10:11:12+05:30",
    "2024-02-29 10:11:12-14:59",
    "2024-02-29 10:11:12+15:00",  # PostgreSQL refuses offsets this large: Python's
    "2024-02-29T10:11:12.123456",
    "2024-02-29T10:11:12.123456Z",
    "2024-02-29T10:11:12.123456+01:00",
    "2024-02-29T10:11:12.123456-00:00",
    "2024-02-29T10:11:12.123",  # three fraction digits: Python's
    "2023-02-29 10:11:12",  # no such day: both refuse
    "2024-13-01 10:11:12",
    "2024-00-10 10:11:12",
    "2024-01-32 10:11:12",
    "2024-01-31 24:00:00",  # PostgreSQL would read next midnight; Python refuses
    "2024-01-31 23:59:60",
    "0000-01-01 00:00:00",
    "0001-01-01 00:00:00",
    "9999-12-31 23:59:59",
    "0001-01-01 00:00:00+05:00",  # year 0 in UTC: Python refuses it
    "9999-12-31 23:59:59-01:00",  # year 10000 in UTC: Python refuses it
    "0001-01-01 10:00:00-05:00",  # still year 1: Python's, and stored
    "0002-01-01 00:00:00+05:00",
    " 2024-01-31 10:00:00",
    "2024-01-31 10:00:00 UTC",
    "1600000000",
    "0160000000",
    "99999999999",
    "100000000000",  # milliseconds: Python's
    "20240101",  # a basic-format date, not an epoch
    "123456789",
    "",
    "not a time",
    1600000000,
    0,
    99999999999,
    100000000000,
    -5,
    1.5e9,
    None,
]


def test_timestamps(pg: psycopg.Connection) -> None:
    got = check_same(pg, TIMES, _to_timestamp, "timestamp with time zone")
    taken = dict(zip(map(repr, TIMES), got, strict=True))
    for common in ("2024-02-29 10:11:12", "2024-02-29T10:11:12.123456Z", "1600000000"):
        assert taken[repr(common)] is not None, common
    assert taken[repr(1600000000)] == "2020-09-13 12:26:40+00:00"
    for python_only in ("2024-01-31 24:00:00", "2024-02-29 10:11:12+15:00", "20240101"):
        assert taken[repr(python_only)] is None, python_only
    assert taken["None"] == ""


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.datetimes(
            min_value=datetime(1, 1, 2),
            max_value=datetime(9999, 12, 30),
        ).map(lambda d: d.isoformat(sep=" ") if d.microsecond % 2 else d.isoformat()),
        min_size=1,
        max_size=30,
    )
)
def test_random_iso_times(pg: psycopg.Connection, values: list[str]) -> None:
    check_same(pg, values, _to_timestamp, "timestamp with time zone")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.from_regex(r"\A[0-9]{9,11}\Z"), min_size=1, max_size=30))
def test_random_epoch_texts(pg: psycopg.Connection, values: list[str]) -> None:
    check_same(pg, values, _to_timestamp, "timestamp with time zone")


JSONS = [
    '{"a": [1, 2.50, {"b": null}], "c": "d"}',
    "  [1, 2]  ",
    "\t{}\n",
    '"text"',
    "12",
    "1e999",
    "[1,]",  # JSON5: Python's (a raw_text document)
    "{a:1}",
    "NaN",
    '{"a": "\\u0000"}',  # PostgreSQL's jsonb refuses it: Python's
    '{"x": "\\ud800"}',
    "",
    "   ",
    "\u00a0{}",  # Python strips the no-break space; SQL leaves it to Python
    "not json",
    '{"k": "quote \\" and comma ,"}',
    '{"dup": 1, "dup": 2}',
    '{"b": 1, "a": 2}',
    "[" * 200 + "]" * 200,  # within the depth limit
    "[" * 300 + "]" * 300,  # beyond it: Python keeps it as raw text
    '{"a": ' * 257 + "1" + "}" * 257,
    "[" * 999 + "]" * 999,
    '["' + "[" * 300 + '"]',  # brackets in a string: Python decides, and decodes it
    5,
    None,
]


def test_json(pg: psycopg.Connection) -> None:
    got = check_same(pg, JSONS, _to_json, "jsonb")
    taken = dict(zip(map(repr, JSONS), got, strict=True))
    assert taken[repr(JSONS[0])] is not None
    assert taken[repr("   ")] == ""
    for python_only in ("[1,]", "not json", "\u00a0{}", '{"a": "\\u0000"}'):
        assert taken[repr(python_only)] is None, python_only


#: lists of JSON documents of every shape, as json.dumps writes them
JSON_DOCUMENTS = st.lists(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
        max_leaves=8,
    ).map(json.dumps),
    min_size=1,
    max_size=10,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON_DOCUMENTS)
def test_random_json(pg: psycopg.Connection, values: list[str]) -> None:
    check_same(pg, values, _to_json, "jsonb")


TEXTS = ["plain", 'with "quotes", commas\nand newlines\r\n', "", "\\.", "tab\there", 42, -7, None]


def test_text_integer_boolean(pg: psycopg.Connection) -> None:
    got = check_same(pg, [*TEXTS, "nul\x00inside", 1.5, b"bytes"], _to_text, "text")
    assert all(f is not None for f in got[: len(TEXTS)])
    assert got[-3:] == [None, None, None]
    assert sql_fields([42, "42"], _to_text, "text", key=True) == [None, '"42"']
    ints = [0, -1, 2**63 - 1, -(2**63), "12", " 7", 3.0, None]
    got = check_same(pg, ints, _to_int, "bigint")
    assert got[:4] == ["0", "-1", str(2**63 - 1), str(-(2**63))]
    assert got[4:7] == [None, None, None]
    got = check_same(pg, [0, 1, 2, "true", None], _to_bool, "boolean")
    assert got == ["f", "t", None, None, ""]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(), min_size=1, max_size=20))
def test_random_texts(pg: psycopg.Connection, values: list[str]) -> None:
    check_same(pg, values, _to_text, "text")


# -- the Python path's line function -------------------------------------------------------
@pytest.mark.parametrize(
    ("values", "conv", "pg_type"),
    [
        (TIMES, timestamptz(), "timestamp with time zone"),
        (JSONS, jsonb(), "jsonb"),
        (FLOATS, real(), "double precision"),
        ([*TEXTS, "nul\x00inside", 1.5], text(), "text"),
        ([0, 1, 2, "yes", None, 1.0], boolean(), "boolean"),
    ],
    ids=["timestamptz", "jsonb", "real", "text", "boolean"],
)
def test_python_line_function_stores_what_the_conversions_store(
    pg: psycopg.Connection, values: list[Any], conv: Any, pg_type: str
) -> None:
    """The Python path builds lines with inline fast paths (one generated function per
    mapping); where they write a field, it stores what the conversion's field stores.
    Where they raise, the row goes to the conversion itself."""
    mapping = TableMap("t", "x", key=["n"], columns=[Column("n"), Column("v", convert=conv)])
    line = _line_function(mapping.bind({"n": "int", "v": conv.kind}, ["n", "v"]))
    inline = 0
    for v in values:
        try:
            field = line((0, v)).rstrip("\n").split(",", 1)[1]
        except Exception:
            continue
        inline += 1
        want = python_field(v, conv.fn)
        (ours,) = stored(pg, pg_type, [field])
        if want is None:
            assert ours == "<error>", f"{v!r}: refused by the conversion, inline sent {field!r}"
        else:
            assert ours == stored(pg, pg_type, [want])[0], f"{v!r}: inline {field!r}, not {want!r}"
    assert inline > len(values) // 2


# -- whole copies: SQL lines against Python lines ------------------------------------------
MIXED = TableMap(
    "src",
    "dst",
    key=["k"],
    order_by=["n"],
    columns=[
        Column("k"),
        Column("n"),
        Column("title"),
        Column("score", convert=real()),
        Column("at", convert=timestamptz()),
        Column("flag", convert=boolean()),
        Column("doc", convert=jsonb()),
    ],
)
TARGET = """CREATE TABLE dst (k text PRIMARY KEY, n bigint, title text CHECK (title <> 'no'),
score double precision, at timestamptz, flag boolean, doc jsonb)"""


def mixed_rows(n: int) -> list[tuple[Any, ...]]:
    out = []
    for i in range(n):
        at: Any = [
            "2024-01-02 03:04:05",
            "2024-01-02T03:04:05.000001Z",
            1_700_000_000 + i,
            "garbage",
            None,
            "2024-02-30 00:00:00",
        ][i % 6]
        doc = [f'{{"a": {i}}}', "", "not json", None, "[1, 2]"][i % 5]
        title: Any = [f"t {i}", 'q"uote', None, i, "no"][i % 5]
        flag: Any = [0, 1, None, "yes"][i % 4]
        key = f"k{i % 450:04d}"  # every key past 450 repeats: duplicates
        out.append((key, i, title, i / 7 if i % 9 else None, at, flag, doc))
    return out


def make_source(path: Path, rows: list[tuple[Any, ...]]) -> SQLite:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(
            "CREATE TABLE src (n INTEGER PRIMARY KEY, k TEXT, title TEXT, score REAL, at, "
            "flag, doc TEXT)"
        )
        conn.executemany(
            "INSERT INTO src (k, n, title, score, at, flag, doc) VALUES (?,?,?,?,?,?,?)", rows
        )
        conn.commit()
    return SQLite("src", path)


def table_text(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT k, n, title, score::text, at::text, flag, doc::text FROM dst ORDER BY k"
        ).fetchall()


@pytest.mark.parametrize("reader", ["sql", "arrow"])
def test_fast_copy_equals_python_copy(pg_cluster: Any, tmp_path: Path, reader: str) -> None:
    """A copy read whole (by SQL lines, or by Arrow with binary COPY straight into the
    target) gives the Python copy's table, rejects, duplicates and counts."""
    src = make_source(tmp_path / "src.db", mixed_rows(500))
    results = {}
    tables = {}
    for mode in ("python", reader):
        dsn = pg_cluster.create_database(f"mixed_{reader}_{mode}")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(TARGET)
        fast = mode != "python"
        with CopyJob(src, Postgres("pg", dsn), MIXED, sql_lines=fast, arrow=mode == "arrow") as job:
            assert job.reader == (mode if fast else "rows")
        results[mode] = copy_table(
            src,
            Postgres("pg", dsn),
            MIXED,
            run_id="r",
            step="s",
            batch_size=64,
            sql_lines=fast,
            direct=fast,
            arrow=mode == "arrow",
        )
        tables[mode] = table_text(dsn)
    py, ours = results["python"], results[reader]
    assert tables[reader] == tables["python"]
    assert len(tables[reader]) > 200
    # the same rows are refused (a reason may come from PostgreSQL instead of Python)
    assert sorted(r.key for r in ours.rejects) == sorted(r.key for r in py.rejects)
    assert len(py.rejects) > 10
    assert [d.key for d in ours.duplicates] == [d.key for d in py.duplicates]
    assert (ours.inserted, ours.read) == (py.inserted, py.read)


def test_direct_copy_falls_back_to_the_merge_when_keys_exist(
    pg_cluster: Any, tmp_path: Path
) -> None:
    src = make_source(tmp_path / "src.db", mixed_rows(300))
    dsn = pg_cluster.create_database("direct_fallback")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TARGET)
        # a key of the third batch exists, with other values
        conn.execute("INSERT INTO dst (k, n, title) VALUES ('k0130', -1, 'old')")
    res = copy_table(src, Postgres("pg", dsn), MIXED, run_id="r", step="s", batch_size=64)
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT n, title FROM dst WHERE k = 'k0130'").fetchone()
        (count,) = conn.execute("SELECT count(*) FROM dst").fetchone() or (0,)
    assert row == (130, "t 130")
    assert res.updated == 1
    assert count == res.inserted + res.updated
    # the rows PostgreSQL refused (title 'no', 30 February) are rejects, the rest landed
    assert {r.key for r in res.rejects} >= {"k0004", "k0005"}
    again = copy_table(src, Postgres("pg", dsn), MIXED, run_id="r2", step="s", batch_size=64)
    assert (again.inserted, again.updated) == (0, 0)


def test_direct_copy_gives_way_to_row_level_security(pg_cluster: Any, tmp_path: Path) -> None:
    """COPY FROM refuses a table with row-level security; INSERT does not: the copy goes
    through the merge and every row lands."""
    src = make_source(tmp_path / "src.db", mixed_rows(120))
    dsn = pg_cluster.create_database("direct_rls")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TARGET)
        conn.execute("CREATE ROLE writer LOGIN")
        conn.execute("GRANT ALL ON SCHEMA public TO writer")
        conn.execute("GRANT ALL ON dst TO writer")
        conn.execute("ALTER TABLE dst ENABLE ROW LEVEL SECURITY")
        conn.execute("CREATE POLICY everything ON dst USING (true) WITH CHECK (true)")
        conn.execute("GRANT CREATE ON DATABASE direct_rls TO writer")
    writer_dsn = dsn.replace("postgres@", "writer@", 1)
    assert writer_dsn != dsn
    res = copy_table(src, Postgres("pg", writer_dsn), MIXED, run_id="r", step="s", batch_size=50)
    with psycopg.connect(dsn) as conn:
        (count,) = conn.execute("SELECT count(*) FROM dst").fetchone() or (0,)
    assert count == res.inserted > 50


# -- joined batches: one text per batch, built in SQLite ------------------------------------
def batch_lines(prep: Any) -> tuple[list[str], int, list[str]]:
    """A prepared batch as (sorted lines, rows read, reject keys)."""
    text = prep.raw.decode() if prep.raw is not None else "".join(prep.lines)
    assert text.count("\n") == prep.count
    return sorted(text.splitlines()), prep.read, sorted(r.key for r in prep.rejects)


def test_joined_batches_equal_row_by_row(pg_cluster: Any, tmp_path: Path) -> None:
    """Every range read as one joined text holds the very lines, rows read and rejects of
    the row-by-row read: duplicate-key losers left out in SQL, rows SQL cannot convert
    converted in Python. A range with a NUL in a text is read row by row."""
    rows = mixed_rows(600)
    rows[500] = (rows[500][0], 500, "nul\x00inside", *rows[500][3:])  # a winner
    src = make_source(tmp_path / "src.db", rows)
    dsn = pg_cluster.create_database("joined_batches")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TARGET)
    with CopyJob(src, Postgres("pg", dsn), MIXED, batch_size=64, arrow=False) as job:
        ranges = job.plan_batches()
        assert len(job.losers()) == 150
        excluded = joined = 0
        for rng in ranges:
            fast = job.lines_query(rng)
            assert fast is not None
            excluded += fast[1]
            prep = job.prepare(rng)
            nul = (rng.lo or (-1,)) < (500,) <= (rng.hi or (10**9,))
            assert (prep.raw is None) is nul, rng
            joined += prep.raw is not None
            assert batch_lines(prep) == batch_lines(job._prepare_sql(rng))
        assert excluded == 150
        assert joined == len(ranges) - 1


def test_joined_batches_with_a_composite_source_key(pg_cluster: Any, tmp_path: Path) -> None:
    """Losers keyed by two columns are left out by a JSON list of pairs."""
    path = tmp_path / "pairs.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(
            "CREATE TABLE src (a TEXT, b INTEGER, k TEXT, n INTEGER, PRIMARY KEY (a, b)) "
            "WITHOUT ROWID"
        )
        conn.executemany(
            "INSERT INTO src VALUES (?, ?, ?, ?)",
            [(f"g{i % 3}", i, f"k{i % 70:03d}", i) for i in range(200)],
        )
        conn.commit()
    mapping = TableMap("src", "dst", key=["k"], order_by=["n"], columns=[Column("k"), Column("n")])
    dsn = pg_cluster.create_database("joined_pairs")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE dst (k text PRIMARY KEY, n bigint)")
    with CopyJob(
        SQLite("src", path), Postgres("pg", dsn), mapping, batch_size=32, arrow=False
    ) as job:
        assert job.src.key == ["a", "b"]
        for rng in job.plan_batches():
            prep = job.prepare(rng)
            assert prep.raw is not None
            assert batch_lines(prep) == batch_lines(job._prepare_sql(rng))
    res = copy_table(
        SQLite("src", path), Postgres("pg", dsn), mapping, run_id="r", step="s", batch_size=32
    )
    with psycopg.connect(dsn) as conn:
        got = dict(conn.execute("SELECT k, n FROM dst").fetchall())
    # the last row of each natural key (by n) won
    assert got == {f"k{j:03d}": max(i for i in range(200) if i % 70 == j) for j in range(70)}
    assert res.inserted == 70
    assert len(res.duplicates) == 130


def test_a_refused_joined_batch_is_read_again_and_merged(pg_cluster: Any, tmp_path: Path) -> None:
    """PostgreSQL refuses a joined batch's COPY (a CHECK): the range is read again row by
    row and merged, which isolates the refused rows; the rest of the batch lands."""
    src = make_source(tmp_path / "src.db", mixed_rows(100))
    dsn = pg_cluster.create_database("joined_refused")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TARGET)
    with CopyJob(src, Postgres("pg", dsn), MIXED, batch_size=64, arrow=False) as job:
        rng = job.plan_batches()[0]
        prep = job.prepare(rng)
        assert prep.raw is not None
        res = job.write_batch(rng.batch, prep, run_id="r", step="s")
        assert job.direct  # not a key conflict: later batches still try the direct COPY
    with psycopg.connect(dsn) as conn:
        keys = {k for (k,) in conn.execute("SELECT k FROM dst").fetchall()}
    refused = {r.key for r in res.rejects}
    assert {"k0004", "k0009", "k0014"} <= refused  # title 'no'
    assert res.read == 64
    assert len(keys) == res.inserted == 64 - len(refused)
    assert not keys & refused


def test_joined_batches_merge_into_a_full_table(pg_cluster: Any, tmp_path: Path) -> None:
    """Once keys exist, a joined batch is staged whole and merged with ON CONFLICT: only
    changed rows are updated, and the totals match the row-by-row merge."""
    rows = mixed_rows(300)
    src = make_source(tmp_path / "src.db", rows)
    counts = {}
    for mode in ("joined", "rows"):
        dsn = pg_cluster.create_database(f"joined_merge_{mode}")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(TARGET)
        pg = Postgres("pg", dsn)
        first = copy_table(src, pg, MIXED, run_id="r", step="s", batch_size=64, arrow=False)
        with closing(sqlite3.connect(src.path)) as conn:
            conn.execute("UPDATE src SET title = title || '!' WHERE n % 10 = 1")
            conn.commit()
        with CopyJob(src, pg, MIXED, batch_size=64, direct=False, arrow=False) as job:
            job.losers()
            for rng in job.plan_batches():
                prep = job.prepare(rng) if mode == "joined" else job._prepare_sql(rng)
                assert (prep.raw is not None) is (mode == "joined")
                res = job.write_batch(rng.batch, prep, run_id="r2", step="s")
                counts.setdefault(mode, []).append((res.inserted, res.updated, res.unchanged))
        with closing(sqlite3.connect(src.path)) as conn:
            conn.execute(
                "UPDATE src SET title = substr(title, 1, length(title) - 1) WHERE n % 10 = 1"
            )
            conn.commit()
        with psycopg.connect(dsn) as conn:
            (edited,) = conn.execute("SELECT count(*) FROM dst WHERE title LIKE '%!'").fetchone()
        assert first.inserted > 100
        assert sum(u for _, u, _ in counts[mode]) == edited > 2  # only the edited rows
    assert counts["joined"] == counts["rows"]


def test_a_joined_merge_refused_is_read_again(pg_cluster: Any, tmp_path: Path) -> None:
    """Two rows of one batch share a natural key only after conversion (an INTEGER 7 and
    the TEXT '7'): ON CONFLICT cannot touch a row twice, so the batch is read again row by
    row, where the later row wins and the earlier is reported."""
    path = tmp_path / "conv.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE src (n INTEGER PRIMARY KEY, k, title TEXT)")
        conn.executemany(
            "INSERT INTO src VALUES (?, ?, ?)",
            [(i, str(i) if i != 20 else 7, f"t{i}") for i in range(40)],
        )
        conn.commit()
    mapping = TableMap(
        "src", "dst", key=["k"], order_by=["n"], columns=[Column("k"), Column("n"), Column("title")]
    )
    dsn = pg_cluster.create_database("joined_conv")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE dst (k text PRIMARY KEY, n bigint, title text)")
        conn.execute("INSERT INTO dst VALUES ('0', -1, 'old')")  # direct COPY gives way
    with CopyJob(
        SQLite("src", path), Postgres("pg", dsn), mapping, batch_size=100, arrow=False
    ) as job:
        job.losers()
        (rng,) = job.plan_batches()
        prep = job.prepare(rng)
        assert prep.raw is not None
        res = job.write_batch(rng.batch, prep, run_id="r", step="s")
        assert not job.direct
    with psycopg.connect(dsn) as conn:
        got = dict(conn.execute("SELECT k, n FROM dst").fetchall())
    assert got["7"] == 20
    assert got["0"] == 0
    assert len(got) == 39
    assert (res.inserted, res.updated) == (38, 1)
    assert [d.key for d in job.duplicates] == ["7"]
