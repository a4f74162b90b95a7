"""The Arrow reader (pgcopy_arrow) stores exactly what the Python conversions store.

Each value goes into a real SQLite column, is read by ADBC into Arrow, and where the
reader writes a field for it (CSV, or binary COPY), that field is COPYed into a real
PostgreSQL column of the target type; the Python authority's field is COPYed likewise,
and the two stored values must be equal as text. Both reads are checked: unguarded (the
Arrow type ADBC infers proves the storage classes) and guarded (one projection per class).
"""

from __future__ import annotations

import math
import sqlite3
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handrail.resources.postgres import Postgres
from handrail.resources.sqlite import SQLite
from handrail.tablecopy.copy import CopyJob, copy_table
from handrail.tablecopy.mapping import (
    Column,
    Convert,
    TableMap,
    boolean,
    integer,
    jsonb,
    real,
    text,
    timestamptz,
)
from handrail.tablecopy.read_arrow import (
    ArrowPlan,
    _fetch,
    _Unexpected,
    arrow_plan,
    build_lines,
    connect,
    fetch_arrow,
)
from handrail.tablecopy.read_sql import Capabilities

from .test_pgcopy_sql import (
    FLOATS,
    JSON_DOCUMENTS,
    JSONS,
    MIXED,
    TARGET,
    TEXTS,
    TIMES,
    make_source,
    mixed_rows,
    python_field,
    table_text,
)

pytestmark = pytest.mark.postgres

UNCHECKED = TARGET.replace("CHECK (title <> 'no')", "")

CAPS = Capabilities(hex_floats=True, strict_json=True)
MODES = [(binary, guarded) for binary in (False, True) for guarded in (False, True)]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def pg(pg_cluster: Any) -> Iterator[psycopg.Connection]:
    dsn = pg_cluster.create_database("pgcopy_arrow")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        yield conn


def one_column_plan(conv: Convert, pg_type: str, *, binary: bool) -> ArrowPlan:
    """The plan of a table (n INTEGER PRIMARY KEY, v) copied into (n bigint, v pg_type)."""
    mapping = TableMap("t", "x", key=["n"], columns=[Column("n"), Column("v", convert=conv)])
    mapper = mapping.bind({"n": "int", "v": conv.kind}, ["n", "v"])
    plan = arrow_plan(mapper, {"n": "bigint", "v": pg_type}, ["n"], CAPS, max_rows=1024)
    assert plan is not None
    if binary:
        assert plan.can_binary, pg_type
    return plan.as_binary(binary)


def copy_in(conn: psycopg.Connection, pg_type: str, data: bytes, binary: bool) -> str | None:
    """One row (n, v) COPYed into a table (n bigint, v ``pg_type``), v read back as text:
    ``'<null>'`` for NULL, ``'<error>'`` if PostgreSQL refuses the row."""
    try:
        with conn.transaction():
            conn.execute(f"CREATE TEMP TABLE x (n bigint, v {pg_type}) ON COMMIT DROP".encode())
            fmt = "binary" if binary else "csv"
            with conn.cursor().copy(f"COPY x FROM STDIN (FORMAT {fmt})".encode()) as cp:
                cp.write(data)
            row = conn.execute("SELECT coalesce(v::text, '<null>') FROM x").fetchone()
            return row[0] if row else "<none>"
    except psycopg.Error:
        return "<error>"


@contextmanager
def one_column_source(values: Sequence[Any]) -> Iterator[Any]:
    """An ADBC connection to a SQLite table (n INTEGER PRIMARY KEY, v) of ``values``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.db"
        with closing(sqlite3.connect(path)) as db:
            db.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, v)")
            db.executemany("INSERT INTO t (n, v) VALUES (?, ?)", list(enumerate(values)))
            db.commit()
        ad = connect(f"file:{path}?mode=ro")
        try:
            yield ad
        finally:
            ad.close()


def arrow_fields(
    conn: psycopg.Connection,
    values: Sequence[Any],
    conv: Convert,
    pg_type: str,
    *,
    binary: bool,
    guarded: bool,
) -> list[str | None]:
    """What each value stores through the Arrow reader; None where it leaves the row to
    Python. Also checks that the whole batch is the rows' own outputs, joined."""
    plan = one_column_plan(conv, pg_type, binary=binary)
    with one_column_source(values) as ad:
        table = _fetch(ad, plan, "FROM t ORDER BY n", [], guarded)
    if not guarded and not unguarded_types_fit(table, plan):
        # an unguarded read of mixed classes: the guarded read's job, as fetch_arrow does
        with pytest.raises(_Unexpected):
            build_lines(table, plan, guarded=False)
        return arrow_fields(conn, values, conv, pg_type, binary=binary, guarded=True)
    whole = build_lines(table, plan, guarded=guarded)
    assert whole is not None
    assert whole.binary is plan.binary
    out: list[str | None] = []
    bodies = []
    for i in range(len(values)):
        row = build_lines(table.slice(i, 1), plan, guarded=guarded)
        assert row is not None
        if row.slow:
            assert row.slow == [(i,)]
            out.append(None)
            continue
        out.append(copy_in(conn, pg_type, row.data, binary))
        bodies.append(row.data[19:-2] if binary else row.data)
    assert whole.slow == [(i,) for i, f in enumerate(out) if f is None]
    joined = b"".join(bodies)
    assert (whole.data[19:-2] if binary else whole.data) == joined
    return out


def unguarded_types_fit(table: Any, plan: ArrowPlan) -> bool:
    """Whether the value column's Arrow type is one its conversion takes unguarded."""
    col = table.column(1)
    if col.null_count == len(col):
        return True
    taken = {
        "text": {"string"},
        "int": {"int64"},
        "bool": {"int64"},
        "float": {"int64", "double"},
        "timestamptz": {"string", "int64"},
        "json": {"string"},
    }
    return str(col.type) in taken[plan.columns[1].conv]


def check_same(
    conn: psycopg.Connection, values: Sequence[Any], conv: Convert, pg_type: str
) -> dict[tuple[bool, bool], list[str | None]]:
    """Every field the Arrow reader writes, in every mode, stores what Python's stores.
    Returns what each mode stored (None: left to Python)."""
    theirs: list[str | None] = []
    for v in values:
        p = python_field(v, conv.fn)
        theirs.append(None if p is None else copy_in(conn, pg_type, f"0,{p}\n".encode(), False))
    got = {}
    for binary, guarded in MODES:
        ours = arrow_fields(conn, values, conv, pg_type, binary=binary, guarded=guarded)
        for v, a, b in zip(values, ours, theirs, strict=True):
            if a is None:
                continue
            mode = f"binary={binary} guarded={guarded}"
            if b is None:  # Python refuses it: PostgreSQL must refuse what Arrow sent
                assert a == "<error>", f"{v!r}: Python refuses it, Arrow ({mode}) stored {a}"
            else:
                assert a == b, f"{v!r}: Arrow ({mode}) stored {a}, Python stored {b}"
        got[(binary, guarded)] = ours
    return got


# -- the driver's contract ----------------------------------------------------------------
def test_conversions_into_other_types_are_left_to_the_sql_reader() -> None:
    """A boolean into a text column would store 'true' where Python stores 't'; a float
    into numeric, a time into a timestamp without zone are not the reader's either: the
    copy then uses the SQL reader. An integer into a text column stays (digits either
    way), as CSV: binary COPY needs the value's own type."""
    mapping = TableMap("t", "x", key=["n"], columns=[Column("n"), Column("v")])

    def plan(conv: Convert, pg_type: str) -> ArrowPlan | None:
        m = TableMap("t", "x", key=["n"], columns=[Column("n"), Column("v", convert=conv)])
        mapper = m.bind({"n": "int", "v": conv.kind}, ["n", "v"])
        return arrow_plan(mapper, {"n": "bigint", "v": pg_type}, ["n"], CAPS, max_rows=10)

    assert mapping.key == ["n"]
    assert plan(boolean(), "text") is None
    assert plan(real(), "numeric") is None
    assert plan(timestamptz(), "timestamp without time zone") is None
    assert plan(jsonb(), "json") is None
    as_text = plan(integer(), "text")
    assert as_text is not None
    assert not as_text.can_binary
    assert not as_text.as_binary(True).binary
    assert plan(integer(), "integer") is not None
    assert plan(text(), "character varying(20)").can_binary  # type: ignore[union-attr]


def test_adbc_infers_types_as_the_reader_assumes(tmp_path: Path) -> None:
    """The unguarded read trusts ADBC's inference: INTEGER only is int64, INTEGER and REAL
    are double (integers as exact doubles), any TEXT makes a string column (INTEGER as its
    digits), any BLOB a binary one, all NULL is int64. A driver that changed this must
    fail here, not corrupt a copy."""
    path = tmp_path / "types.db"
    cases = {
        "ints": [1, None, 2**62 + 1],
        "ints and reals": [1, 2.5, 2**53],
        "texts and ints": ["a", 7, None],
        "texts and reals": ["a", 3.7],
        "ints and blobs": [1, b"x"],
        "nulls": [None, None],
    }
    with closing(sqlite3.connect(path)) as db:
        for i, vals in enumerate(cases.values()):
            db.execute(f"CREATE TABLE c{i} (n INTEGER PRIMARY KEY, v)")
            db.executemany(f"INSERT INTO c{i} (v) VALUES (?)", [(v,) for v in vals])
        db.commit()
    conn = connect(f"file:{path}?mode=ro")
    got = {}
    try:
        for i, name in enumerate(cases):
            cur = conn.cursor()
            cur.execute(f"SELECT v FROM c{i} ORDER BY n")
            col = cur.fetch_arrow_table().column(0)
            cur.close()
            got[name] = (str(col.type), col.to_pylist())
    finally:
        conn.close()
    assert got["ints"] == ("int64", [1, None, 2**62 + 1])
    assert got["ints and reals"] == ("double", [1.0, 2.5, float(2**53)])
    assert got["texts and ints"] == ("string", ["a", "7", None])
    assert got["texts and reals"][0] == "string"
    assert got["texts and reals"][1][1] != "3.7"  # lossy: why a text column is guarded
    assert got["ints and blobs"][0] == "binary"
    assert got["nulls"] == ("int64", [None, None])


def test_a_blob_after_the_first_adbc_batch_goes_to_python(pg: psycopg.Connection) -> None:
    """ADBC types a column from its first batch and turns a later BLOB into that type
    silently: a range longer than one ADBC batch is read guarded, and the BLOB, which
    Python refuses as a time, is left to Python."""
    blob = b"1999-12-31 23:59:59"
    values: list[Any] = [f"2024-01-01 00:{i // 60 % 60:02d}:{i % 60:02d}" for i in range(1100)]
    values[1050] = blob
    plan = one_column_plan(timestamptz(), "timestamp with time zone", binary=True)
    assert plan.max_rows == 1024
    with one_column_source(values) as ad:
        unguarded = _fetch(ad, plan, "FROM t", [], False)
        assert unguarded.column(1).num_chunks > 1
        assert unguarded.column(1).to_pylist()[1050] == blob.decode()  # the trap
        got = fetch_arrow(ad, plan, "FROM t", [])
    assert got is not None
    assert got.slow == [(1050,)]
    assert python_field(blob, timestamptz().fn) is None


# -- conversions, value by value ------------------------------------------------------------
def test_timestamps(pg: psycopg.Connection) -> None:
    got = check_same(pg, TIMES, timestamptz(), "timestamp with time zone")
    for mode, fields in got.items():
        taken = dict(zip(map(repr, TIMES), fields, strict=True))
        for common in ("2024-02-29 10:11:12", "2024-02-29T10:11:12.123456Z", "1600000000"):
            assert taken[repr(common)] is not None, (mode, common)
        assert taken[repr("2024-02-29 10:11:12-14:59")] == "2024-03-01 01:10:12+00"
        assert taken[repr(1600000000)] == "2020-09-13 12:26:40+00"
        for python_only in ("2024-01-31 24:00:00", "2024-02-29 10:11:12+15:00", "20240101"):
            assert taken[repr(python_only)] is None, (mode, python_only)
        assert taken["None"] == "<null>"  # NULL is the reader's too
    # a day that does not exist: CSV sends it (PostgreSQL refuses it, as Python does);
    # binary leaves it to Python, which refuses it
    feb = repr("2023-02-29 10:11:12")
    csv = dict(zip(map(repr, TIMES), got[(False, False)], strict=True))
    binary = dict(zip(map(repr, TIMES), got[(True, False)], strict=True))
    assert csv[feb] == "<error>"
    assert binary[feb] is None


@SETTINGS
@given(
    st.lists(
        st.tuples(
            st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
            st.sampled_from(["", "Z", "+05:30", "-14:59", "+00:00", "-03:00"]),
            st.booleans(),
        ).map(lambda t: (t[0].isoformat(sep=" ") if t[2] else t[0].isoformat()) + t[1]),
        min_size=1,
        max_size=25,
    )
)
def test_random_iso_times(pg: psycopg.Connection, values: list[str]) -> None:
    got = check_same(pg, values, timestamptz(), "timestamp with time zone")
    # every shape generated here is one the reader takes, but in the years an offset may
    # carry out of Python's range
    for v, f in zip(values, got[(True, False)], strict=True):
        assert (f is None) is v.startswith(("0001", "9999")), v


@SETTINGS
@given(
    st.lists(
        st.from_regex(r"\A[0-9]{9,11}\Z") | st.integers(min_value=-10, max_value=10**11 + 5),
        min_size=1,
        max_size=25,
    )
)
def test_random_epochs(pg: psycopg.Connection, values: list[Any]) -> None:
    check_same(pg, values, timestamptz(), "timestamp with time zone")


def test_floats(pg: psycopg.Connection) -> None:
    tiny = 2.2250738585072014e-308  # the smallest normal double
    values = [*FLOATS, 0.0, -0.0, tiny, 5, -(2**53), 2**53 + 1, math.inf, -math.inf, "1.5", None]
    got = check_same(pg, values, real(), "double precision")
    for fields in got.values():
        taken = dict(zip(map(repr, values), fields, strict=True))
        for exact in (tiny, 0.0, -0.0, 1.7976931348623157e308, -(2**53)):
            assert taken[repr(exact)] is not None, exact
        # subnormal: PostgreSQL before 12 refuses its text, so Python's (as in SQL's reader)
        for python_only in (repr(5e-324), repr(2**53 + 1), repr(math.inf), repr("1.5")):
            assert taken[python_only] is None, python_only


def test_integers_among_floats(pg: psycopg.Connection) -> None:
    """INTEGERs in a column with REALs arrive as doubles in the unguarded read, beyond
    2^53 too, rounded as Python's float() rounds them."""
    values = [1, 2.5, 2**53 + 1, 2**62 + 1, -(2**63), 3]
    got = check_same(pg, values, real(), "double precision")
    assert all(f is not None for f in got[(True, False)])
    assert all(f is not None for f in got[(False, False)])
    assert got[(True, True)][2:5] == [None, None, None]  # guarded: beyond 2^53, Python's


@SETTINGS
@given(st.lists(st.integers(min_value=0, max_value=2**64 - 1), min_size=1, max_size=30))
def test_random_bit_patterns(pg: psycopg.Connection, bits: list[int]) -> None:
    values = [struct.unpack("<d", struct.pack("<Q", b))[0] for b in bits]
    finite = [v for v in values if math.isfinite(v)] or [1.0]
    got = check_same(pg, finite, real(), "double precision")
    for v, f in zip(finite, got[(True, False)], strict=True):
        assert (f is None) is (0 < abs(v) < 2.2250738585072014e-308), v  # subnormals: Python's


def test_json(pg: psycopg.Connection) -> None:
    got = check_same(pg, JSONS, jsonb(), "jsonb")
    for fields in got.values():
        taken = dict(zip(map(repr, JSONS), fields, strict=True))
        assert taken[repr(JSONS[0])] is not None
        assert taken[repr("   ")] == "<null>"  # blank: NULL, handled here
        for python_only in ("[1,]", "not json", "\u00a0{}", '{"a": "\\u0000"}', 5):
            assert taken[repr(python_only)] is None, python_only


@SETTINGS
@given(JSON_DOCUMENTS)
def test_random_json(pg: psycopg.Connection, values: list[str]) -> None:
    check_same(pg, values, jsonb(), "jsonb")


def test_text_integer_boolean(pg: psycopg.Connection) -> None:
    values = [*TEXTS, "nul\x00inside", 1.5, b"bytes", "unicode ✓ \U0001f600"]
    got = check_same(pg, values, text(), "text")
    for fields in got.values():
        assert fields[0] is not None
        assert fields[-1] is not None
        assert fields[len(TEXTS) : len(TEXTS) + 3] == [None, None, None]
    ints = [0, -1, 2**63 - 1, -(2**63), "12", 3.0, None]
    got = check_same(pg, ints, integer(), "bigint")
    for fields in got.values():
        assert all(f is not None for f in fields[:4])
        assert fields[4:6] == [None, None]
    # into a smaller integer column, binary COPY leaves out-of-range values to Python
    small = check_same(pg, [1, 2**31, -(2**31), 40000], integer(), "integer")
    assert small[(True, False)] == ["1", None, "-2147483648", "40000"]
    got = check_same(pg, [0, 1, 2, "true", None], boolean(), "boolean")
    for fields in got.values():
        assert fields[:3] == ["false", "true", None]
        assert fields[3] is None


@SETTINGS
@given(st.lists(st.text(), min_size=1, max_size=20))
def test_random_texts(pg: psycopg.Connection, values: list[str]) -> None:
    got = check_same(pg, values, text(), "text")
    for v, f in zip(values, got[(True, False)], strict=True):
        assert (f is None) is ("\x00" in v), v


# -- whole copies ---------------------------------------------------------------------------
# (the whole copy against the Python copy: test_pgcopy_sql.test_fast_copy_equals_python_copy)
def test_binary_batches_turn_to_csv_when_keys_exist(pg_cluster: Any, tmp_path: Path) -> None:
    """(A target without the title CHECK, so that the key is what a COPY meets first.)
    A key of a later batch already exists: its binary COPY fails, the job turns to the
    staging merge, and that batch and the ones read ahead as binary are read again as CSV.
    The table is the Python copy's."""
    src = make_source(tmp_path / "src.db", mixed_rows(400))
    dsn = pg_cluster.create_database("arrow_turns")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(UNCHECKED)
        conn.execute("INSERT INTO dst (k, n, title) VALUES ('k0200', -1, 'old')")
    with CopyJob(src, Postgres("pg", dsn), MIXED, batch_size=50) as job:
        ranges = job.plan_batches("r", "s")
        job.losers()
        preps = [job.prepare(r) for r in ranges]
        # read while the job copies straight in (the last range is empty)
        assert all(p.binary for p in preps if p.count)
        results = [
            job.write_batch(r.batch, p, run_id="r", step="s")
            for r, p in zip(ranges, preps, strict=True)
        ]
        assert not job.direct
        assert not job.prepare(ranges[-1]).binary  # later reads are CSV for the merge
    assert sum(r.updated for r in results) == 1
    py_dsn = pg_cluster.create_database("arrow_turns_python")
    with psycopg.connect(py_dsn, autocommit=True) as conn:
        conn.execute(UNCHECKED)
        conn.execute("INSERT INTO dst (k, n, title) VALUES ('k0200', -1, 'old')")
    copy_table(src, Postgres("pg", py_dsn), MIXED, run_id="r", step="s", sql_lines=False)
    assert table_text(dsn) == table_text(py_dsn)


def test_a_refused_binary_batch_isolates_its_rows(pg_cluster: Any, tmp_path: Path) -> None:
    """PostgreSQL refuses a binary batch (a CHECK on a title): the range is read again as
    CSV and merged row by row where needed; the refused rows are rejects, the rest lands,
    and later batches still go straight in."""
    src = make_source(tmp_path / "src.db", mixed_rows(100))
    dsn = pg_cluster.create_database("arrow_refused")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TARGET)
    with CopyJob(src, Postgres("pg", dsn), MIXED, batch_size=64) as job:
        rng = job.plan_batches()[0]
        job.losers()
        prep = job.prepare(rng)
        assert prep.binary
        assert prep.raw is not None
        res = job.write_batch(rng.batch, prep, run_id="r", step="s")
        assert job.direct
    refused = {r.key for r in res.rejects if "check constraint" in r.reason}
    assert refused
    assert all(k.startswith("k") for k in refused)
    with psycopg.connect(dsn) as conn:
        (titles,) = conn.execute("SELECT count(*) FROM dst WHERE title = 'no'").fetchone() or (0,)
        (count,) = conn.execute("SELECT count(*) FROM dst").fetchone() or (0,)
    assert titles == 0
    assert count == res.inserted > 30


def test_a_mixed_column_is_read_guarded(pg_cluster: Any, tmp_path: Path) -> None:
    """A REAL in an INTEGER column turns ADBC's column into doubles: the batch is read
    again guarded, and only that row goes to Python."""
    path = tmp_path / "mixed.db"
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE t (k TEXT PRIMARY KEY, n)")
        db.executemany("INSERT INTO t VALUES (?, ?)", [(f"k{i:03d}", i) for i in range(100)])
        db.execute("UPDATE t SET n = 2.5 WHERE k = 'k050'")
        db.commit()
    mapping = TableMap("t", "t", key=["k"], columns=[Column("k"), Column("n", convert=integer())])
    dsn = pg_cluster.create_database("arrow_guarded")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (k text PRIMARY KEY, n bigint)")
    with CopyJob(SQLite("src", path), Postgres("pg", dsn), mapping, batch_size=1000) as job:
        rng = job.plan_batches()[0]
        assert job._arrow is not None
        rest, params = job.src.range_from(rng.lo, rng.hi, None, [])
        plan = job._arrow.as_binary(True)
        ad = connect(job.src._uri)
        try:
            unguarded = _fetch(ad, plan, rest, params, False)
            assert str(unguarded.column(1).type) == "double"
            got = fetch_arrow(ad, plan, rest, params)
        finally:
            ad.close()
        assert got is not None
        assert got.slow == [("k050",)]
    res = copy_table(SQLite("src", path), Postgres("pg", dsn), mapping, run_id="r", step="s")
    assert [r.key for r in res.rejects] == ["k050"]  # 2.5 is not a whole number
    assert res.inserted == 99


WITHOUT_PYARROW = """
import sys
sys.modules["pyarrow"] = None  # as if pyarrow were not installed: importing it fails
from handrail.tablecopy.copy import CopyJob, copy_table
from handrail.tablecopy.read_arrow import available
from handrail.resources.postgres import Postgres
from handrail.resources.sqlite import SQLite
sys.path.insert(0, {tests!r})
from test_pgcopy_sql import MIXED
src, pg = SQLite("src", {src!r}), Postgres("pg", {dsn!r})
with CopyJob(src, pg, MIXED) as job:
    reader = job.reader
res = copy_table(src, pg, MIXED, run_id="r", step="s", batch_size=64)
print(available(), reader, res.inserted, len(res.rejects))
"""


def test_without_pyarrow_the_copy_uses_the_sql_reader(pg_cluster: Any, tmp_path: Path) -> None:
    src = make_source(tmp_path / "src.db", mixed_rows(300))
    dsns = {}
    for name in ("no_pyarrow", "with_pyarrow"):
        dsns[name] = pg_cluster.create_database(f"arrow_{name}")
        with psycopg.connect(dsns[name], autocommit=True) as conn:
            conn.execute(TARGET)
    script = WITHOUT_PYARROW.format(
        tests=str(Path(__file__).parent), src=str(src.path), dsn=dsns["no_pyarrow"]
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    ours = copy_table(src, Postgres("pg", dsns["with_pyarrow"]), MIXED, run_id="r", step="s")
    assert proc.stdout.split() == ["False", "sql", str(ours.inserted), str(len(ours.rejects))]
    assert table_text(dsns["no_pyarrow"]) == table_text(dsns["with_pyarrow"])
