"""Copy a table from SQLite or PostgreSQL into PostgreSQL: batched, upserting, exactly once.

The source is read in key order by key range (keyset pagination, never OFFSET). Each
range is one batch: its rows are converted by a :class:`~.mapping.TableMap` (bad
values become rejects, so they never reach the database). A SQLite source is read whole
by Arrow (:mod:`.read_arrow`) or by SQL (:mod:`.read_sql`), which
convert the values they can prove equal to the Python conversion and leave the other
rows to it. While no key of a batch exists in the target, the batch is COPYed straight
into it (binary COPY from Arrow); otherwise it is sent with ``COPY`` into a temporary
staging table of text columns, and merged with::

    INSERT INTO target (...) SELECT s.c::type, ... FROM stage s
    ON CONFLICT (natural key) DO UPDATE SET ... WHERE (t.cols) IS DISTINCT FROM (excluded.cols)

so a re-run changes nothing that is already equal. The merge and the batch's ledger row
(:meth:`Postgres.ledger_mark`) commit in one transaction: a copy killed at any instant
resumes with the first batch the ledger does not know, and no batch applies twice. The
batch plan (the key ranges) is stored in the target on first use, so a resume replays the
same ranges even if the source grew meanwhile.

If the database refuses rows (a CHECK, a foreign key, a value too long), the batch is
bisected under savepoints until the refused rows are isolated; they become rejects and
the rest of the batch commits.

Source rows sharing a natural key are resolved before any batch runs: the last by the
mapping's ``order_by`` (then the source key) wins, the others are reported in
:attr:`CopyResult.duplicates`.
"""

from __future__ import annotations

import bisect
import itertools
import json
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack, closing, suppress
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg

from ..errors import BadInput, StepFailed
from ..model import Reject
from ..resources.names import qualified, quote_ident, split_table
from ..resources.postgres import HANDRAIL_SCHEMA, Postgres, table_columns
from ..resources.sqlite import SQLite
from .mapping import (
    MAX_JSON_DEPTH,
    Converted,
    CopySpec,
    JsonText,
    MappingError,
    RowMapper,
    TableMap,
    brackets,
    key_text,
    kind_of_pg_type,
)
from .read_arrow import ArrowPlan, arrow_plan, fetch_arrow, read_arrow
from .read_arrow import available as arrow_available
from .read_arrow import connect as arrow_connect
from .read_arrow import strict_json as arrow_strict_json
from .read_sql import (
    Capabilities,
    LineBatch,
    SqlRows,
    fetch_lines,
    line_expression,
    needs_python,
    read_lines,
    read_rows,
    split_rows,
)
from .sources import SQLiteSource, find_losers, open_source, reader_processes

__all__ = [
    "PLANS_TABLE",
    "BatchResult",
    "CopyJob",
    "CopyResult",
    "KeyRange",
    "Prepared",
    "TargetTable",
    "copy_table",
    "upsert_rows",
]

PLANS_TABLE = f"{HANDRAIL_SCHEMA}.copy_plans"
_BISECT_ERRORS = (
    psycopg.errors.DataError,
    psycopg.errors.IntegrityError,
    psycopg.errors.CardinalityViolation,
)


@dataclass(frozen=True)
class KeyRange:
    """Batch ``batch``: source rows with ``lo < key <= hi`` (None: unbounded)."""

    batch: int
    lo: tuple[Any, ...] | None
    hi: tuple[Any, ...] | None

    def to_json(self) -> list[Any]:
        return [self.batch, self.lo, self.hi]

    @classmethod
    def from_json(cls, data: Sequence[Any]) -> KeyRange:
        b, lo, hi = data
        return cls(
            int(b), tuple(lo) if lo is not None else None, tuple(hi) if hi is not None else None
        )


@dataclass
class BatchResult:
    batch: int
    read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejects: list[Reject] = field(default_factory=list)
    skipped: bool = False  # the ledger says it had committed

    @property
    def changed(self) -> int:
        return self.inserted + self.updated


@dataclass
class CopyResult:
    """Totals of a copy, with every reject and every superseded duplicate."""

    batches: int = 0
    skipped_batches: int = 0
    read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejects: list[Reject] = field(default_factory=list)
    duplicates: list[Reject] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.read / self.seconds if self.seconds else 0.0

    def add(self, b: BatchResult) -> None:
        self.batches += 1
        self.skipped_batches += int(b.skipped)
        self.read += b.read
        self.inserted += b.inserted
        self.updated += b.updated
        self.unchanged += b.unchanged
        self.rejects.extend(b.rejects)


# -- the target --------------------------------------------------------------------------
@dataclass
class TargetTable:
    """A PostgreSQL table's columns, types and the unique index for ON CONFLICT."""

    schema: str
    table: str
    types: dict[str, str]

    @property
    def rel(self) -> str:
        return qualified(self.schema, self.table)

    @classmethod
    def load(cls, conn: psycopg.Connection, name: str, key: Sequence[str]) -> TargetTable:
        schema, table = split_table(name)
        # generated columns take no values: COPY and INSERT leave them out
        cols = [c for c in table_columns(conn, qualified(schema, table)) if not c.generated]
        if not cols:
            raise MappingError(f"target table {name!r} does not exist")
        unique = conn.execute(
            "SELECT array(SELECT a.attname FROM unnest(i.indkey) k(n) JOIN pg_attribute a "
            "ON a.attrelid = i.indrelid AND a.attnum = k.n)::text[] FROM pg_index i "
            "WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indpred IS NULL "
            "AND i.indexprs IS NULL",
            (qualified(schema, table),),
        ).fetchall()
        if not any(sorted(u[0]) == sorted(key) for u in unique):
            raise MappingError(
                f"target table {name!r} has no unique index on its natural key "
                f"({', '.join(key)}), which ON CONFLICT needs",
                hint=f"CREATE UNIQUE INDEX ON {qualified(schema, table)} "
                f"({', '.join(quote_ident(k) for k in key)})",
            )
        # PostgreSQL refuses ON CONFLICT on a table with INSERT or UPDATE rules, and COPY
        # would silently go past them: say so before anything is written
        rules = conn.execute(
            "SELECT rulename FROM pg_rewrite WHERE ev_class = to_regclass(%s) "
            "AND ev_type IN ('2', '3') ORDER BY rulename",
            (qualified(schema, table),),
        ).fetchall()
        if rules:
            names = ", ".join(r[0] for r in rules)
            raise MappingError(
                f"target table {name!r} has INSERT or UPDATE rules ({names}): PostgreSQL "
                "refuses INSERT ... ON CONFLICT on it, and COPY would go past the rules",
                hint="copy into a table without such rules (a trigger can do what the rule "
                "does, and fires for COPY and INSERT alike), or drop them for the migration",
            )
        return cls(schema, table, {c.name: c.type for c in cols})

    def kinds(self) -> dict[str, str]:
        return {c: kind_of_pg_type(t) for c, t in self.types.items()}


def _csv_field(v: Any) -> str:
    """One converted value as a CSV field for COPY (unquoted empty is NULL)."""
    t = type(v)
    if v is None:
        return ""
    if t is str or t is JsonText:
        return '"' + str(v).replace('"', '""') + '"'
    if t is int:
        return str(v)
    if t is bool:
        return "t" if v else "f"
    if t is float:
        return repr(v)
    if t is datetime or t is date:
        return str(v.isoformat())
    if t is Decimal:
        return str(v)
    if t is bytes:
        return "\\x" + bytes(v).hex()
    s = str(v)
    return '"' + s.replace('"', '""') + '"'


def _quote(s: str) -> str:
    return '"' + s.replace('"', '""') + '"'


def _fast_ts(v: Any, conv: Callable[[Any], Any]) -> str:
    if type(v) is str and v[4:5] == "-":
        try:
            d = datetime.fromisoformat(v)
        except ValueError:
            return _csv_field(conv(v))
        if d.year in (1, 9999):  # an offset may move it out of range: the authority's
            return _csv_field(conv(v))
        # naive is UTC (as mapping.timestamptz); PostgreSQL applies an explicit offset itself
        return d.isoformat() + ("+00:00" if d.tzinfo is None else "")
    return _csv_field(conv(v))


_JSON = json.JSONDecoder(parse_constant=lambda name: _raise(name))


def _raise(name: str) -> Any:
    raise ValueError(name)


def _fast_json(v: Any, conv: Callable[[Any], Any]) -> str:
    if type(v) is str:
        s = v.strip()
        if not s:
            return ""
        if "\x00" not in s and "\\u0000" not in s and brackets(s) <= MAX_JSON_DEPTH:
            try:
                _JSON.decode(s)
            except (ValueError, RecursionError):
                pass
            else:
                return _quote(s)  # valid JSON: PostgreSQL normalizes it into jsonb itself
    return _csv_field(conv(v))


def _line_function(mapper: RowMapper) -> Callable[[Sequence[Any]], str]:
    """A function turning a source row into its CSV line, for the common conversions.

    It is generated once per mapping so each row costs one call instead of one per
    column. Any value it does not handle inline goes through the column's own
    conversion; any exception sends the row to :meth:`RowMapper.convert`, which is the
    authority (it builds the reject). Inline paths accept exactly what the conversions
    accept, and write the same value.
    """
    env: dict[str, Any] = {"Q": _quote, "F": _csv_field, "TS": _fast_ts, "JS": _fast_json}
    exprs = []
    for i, b in enumerate(mapper.columns):
        assert b.source_index is not None
        v = f"r[{b.source_index}]"
        env[f"C{i}"] = b.convert.fn
        slow = f"F(C{i}({v}))"
        name = b.convert.name
        if name == "text":
            e = f"(Q({v}) if type({v}) is str and NUL not in {v} else {slow})"
        elif name == "integer":
            e = f"(str({v}) if type({v}) is int else {slow})"
        elif name == "real":
            e = f"(repr({v}) if type({v}) is float else {slow})"
        elif name == "boolean":
            bit = f"type({v}) is int and ({v} == 0 or {v} == 1)"
            e = f"(('t' if {v} else 'f') if {bit} else {slow})"
        elif name == "timestamptz":
            e = f"TS({v}, C{i})"
        elif name == "jsonb":
            e = f"JS({v}, C{i})"
        else:
            e = slow
        exprs.append(f"('' if {v} is None else {e})")
    env["NUL"] = "\x00"
    src = "def line(r):\n    return ','.join((" + ", ".join(exprs) + ",)) + '\\n'\n"
    exec(compile(src, f"<handrail line function {mapper.spec.name}>", "exec"), env)
    fn: Callable[[Sequence[Any]], str] = env["line"]
    return fn


@dataclass
class Prepared:
    """One batch read and converted: CSV lines (in staging order), their natural keys,
    the rejects found in Python, how many source rows were read, and the rows superseded
    by a later row with the same natural key after conversion."""

    lines: list[str]
    keys: list[tuple[Any, ...]]
    rejects: list[Reject]
    read: int
    duplicates: list[Reject] = field(default_factory=list)
    data: str | None = None  # the lines joined, when already at hand
    # a batch SQLite built whole (:class:`LineBatch`): its bytes, instead of lines and
    # keys; if PostgreSQL refuses it as a whole, the range is read again row by row
    raw: bytes | None = None
    rows: int = 0
    rng: KeyRange | None = None
    # raw is a binary COPY stream (read_arrow), for a COPY straight into the target;
    # lines then hold the rows Python converted, as CSV, for a second COPY
    binary: bool = False

    @property
    def count(self) -> int:
        """Rows to write."""
        return self.rows if self.raw is not None else len(self.lines)


def _keep(
    keep: list[int],
    lines: list[str | None],
    keys: list[tuple[Any, ...]],
    skeys: list[tuple[Any, ...]],
) -> SqlRows:
    """The rows at positions ``keep`` of the three parallel lists."""
    return [lines[i] for i in keep], [keys[i] for i in keep], [skeys[i] for i in keep]


# -- the job -----------------------------------------------------------------------------
class CopyJob:
    """One table copy, driven batch by batch (by :func:`copy_table` or by the engine).

    ``plan_batches(run_id, step)`` gives the key ranges (stored in the target on first
    use); ``apply_batch(rng, run_id=, step=)`` applies one range exactly once. Close it
    (or use ``with``) to release both connections.
    """

    def __init__(
        self,
        source: SQLite | Postgres,
        target: Postgres,
        spec: CopySpec | TableMap,
        *,
        batch_size: int = 10_000,
        sql_lines: bool = True,
        direct: bool = True,
        arrow: bool = True,
    ) -> None:
        self.spec = spec if isinstance(spec, CopySpec) else CopySpec(spec)
        self.mapping = self.spec.mapping
        if batch_size <= 0:
            raise BadInput("batch_size must be positive")
        self.batch_size = batch_size
        self.source_db = source
        self.target_db = target
        self.src = open_source(source, self.mapping.source, self.mapping.source_key)
        try:
            self.conn = target._open()
            self.target = TargetTable.load(self.conn, self.mapping.target, self.mapping.key)
            self.conn.rollback()
            self.mapper: RowMapper = self.mapping.bind(self.target.kinds(), self.src.columns)
        except BaseException:
            self.close()
            raise
        self._losers: dict[tuple[Any, ...], str] | None = None
        self._losers_future: Future[tuple[dict[tuple[Any, ...], str], list[Reject]]] | None = None
        self._losers_lock = threading.Lock()
        self._loser_keys: list[tuple[Any, ...]] | None = None
        self.duplicates: list[Reject] = []
        self._stage = f"_hr_stage_{abs(hash(self.mapping.name)) % 10**8}"
        self._stage_ready = False
        self._merge_sql = self._build_merge()
        self._line = None if self.mapper.has_compute else _line_function(self.mapper)
        self._key_source_index = []
        # the source type a key value keeps unchanged through its conversion: a SQLite
        # key of another type (or NULL) is converted by the mapper, so keys compare as
        # stored (a PostgreSQL column has one type: its keys compare as they are)
        self._key_types: list[type | None] = []
        self._key_check = isinstance(self.src, SQLiteSource)
        for k in self.mapping.key:
            b = self.mapper.columns[self.mapper.targets.index(k)]
            self._key_source_index.append(b.source_index if b.source_index is not None else -1)
            self._key_types.append({"text": str, "integer": int}.get(b.convert.name))
        self._sql_select: list[str] | None = None
        # lines read whole by Arrow (read_arrow) where it can, else built by SQLite
        self._arrow: ArrowPlan | None = None
        self._adbc: Any = None
        # the read-ahead thread and a batch read again as CSV share one ADBC connection
        self._adbc_lock = threading.Lock()
        if isinstance(self.src, SQLiteSource) and sql_lines:
            caps = Capabilities.probe(self.src.conn, self.conn)
            self.conn.rollback()
            expr = line_expression(self.mapper, self.target.types, caps)
            if expr is not None:
                natural = [quote_ident(self.mapper.select[i]) for i in self._key_source_index]
                self._sql_select = [expr, *natural]
            if arrow and arrow_available():
                self._arrow = self._arrow_plan(caps, batch_size)
        # COPY straight into the target while no batch has met an existing key
        self.direct = direct

    def __enter__(self) -> CopyJob:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _arrow_plan(self, caps: Capabilities, batch_size: int) -> ArrowPlan | None:
        """The Arrow reader's plan, on this job's ADBC connection; None (the SQL reader)
        where the mapping is not the Arrow reader's, or ADBC cannot open the source."""
        assert isinstance(self.src, SQLiteSource)
        try:
            self._adbc = arrow_connect(self.src.uri)
            # json_valid runs in ADBC's own SQLite: its strictness is probed there
            caps = replace(caps, strict_json=arrow_strict_json(self._adbc))
        except Exception:
            return None
        plan = arrow_plan(
            self.mapper, self.target.types, self.src.key, caps, max_rows=2 * batch_size
        )
        if plan is None:  # not the Arrow reader's mapping: its connection is not needed
            self._adbc.close()
            self._adbc = None
        return plan

    @property
    def reader(self) -> str:
        """How a SQLite batch is read whole: ``"arrow"``, ``"sql"`` (lines built by
        SQLite), or ``"rows"`` (row by row)."""
        if self._sql_select is None:
            return "rows"
        return "arrow" if self._arrow is not None else "sql"

    def close(self) -> None:
        if getattr(self, "_adbc", None) is not None:
            with suppress(Exception):
                self._adbc.close()
            self._adbc = None
        with suppress(Exception):
            self.src.close()
        conn = getattr(self, "conn", None)
        if conn is not None:
            with suppress(Exception):
                conn.close()

    # -- planning ---------------------------------------------------------------------
    def plan_batches(self, run_id: str | None = None, step: str | None = None) -> list[KeyRange]:
        """The key ranges, ``batch_size`` source rows each; the last is open-ended.

        With ``run_id`` and ``step`` the plan is stored in the target the first time and
        read back afterwards, so a resumed copy replays the very same ranges.
        """
        if run_id is not None and step is not None:
            stored = self._stored_plan(run_id, step)
            if stored is not None:
                return stored
        bounds = self.src.boundaries(self.batch_size, self.mapping.where)
        ranges: list[KeyRange] = []
        lo: tuple[Any, ...] | None = None
        for i, b in enumerate(bounds):
            ranges.append(KeyRange(i, lo, b))
            lo = b
        ranges.append(KeyRange(len(bounds), lo, None))
        if run_id is not None and step is not None:
            ranges = self._store_plan(run_id, step, ranges)
        return ranges

    def _stored_plan(self, run_id: str, step: str) -> list[KeyRange] | None:
        row = self.conn.execute("SELECT to_regclass(%s)", (PLANS_TABLE,)).fetchone()
        if row is None or row[0] is None:
            self.conn.rollback()
            return None
        got = self.conn.execute(
            f"SELECT plan FROM {PLANS_TABLE} WHERE run_id = %s AND step = %s", (run_id, step)
        ).fetchone()
        self.conn.rollback()
        return [KeyRange.from_json(r) for r in got[0]] if got else None

    def _store_plan(self, run_id: str, step: str, ranges: list[KeyRange]) -> list[KeyRange]:
        plan = json.loads(json.dumps([r.to_json() for r in ranges], default=str))
        with self.conn.transaction():
            Postgres.ensure_ledger(self.conn)
            self.conn.execute(
                f"CREATE TABLE IF NOT EXISTS {PLANS_TABLE} (run_id text, step text, "
                "plan jsonb NOT NULL, PRIMARY KEY (run_id, step))"
            )
            self.conn.execute(
                f"INSERT INTO {PLANS_TABLE} VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                (run_id, step, json.dumps(plan)),
            )
        return self._stored_plan(run_id, step) or ranges

    def forget_plan(self, run_id: str, step: str) -> None:
        """Drop the stored plan (after the copy finished or was rolled back)."""
        row = self.conn.execute("SELECT to_regclass(%s)", (PLANS_TABLE,)).fetchone()
        if row and row[0] is not None:
            self.conn.execute(
                f"DELETE FROM {PLANS_TABLE} WHERE run_id = %s AND step = %s", (run_id, step)
            )
        self.conn.commit()

    # -- duplicates -------------------------------------------------------------------
    def losers(self) -> dict[tuple[Any, ...], str]:
        """Source keys of rows that lose to another row with the same natural key."""
        with self._losers_lock:
            if self._losers is None:
                if self._losers_future is not None:
                    self._losers, dups = self._losers_future.result()
                else:
                    self._losers, dups = find_losers(self.src, self.mapping, self.mapper)
                self.duplicates.extend(dups)
            return self._losers

    def start_losers(self) -> None:
        """Look for duplicate natural keys in a background thread (a SQLite source reads
        on its own connection), so the first batches are read meanwhile; :meth:`losers`
        waits for the answer before any row is filtered."""
        if self._losers is None and self._losers_future is None:
            pool = ThreadPoolExecutor(1, thread_name_prefix="handrail-copy-duplicates")
            self._losers_future = pool.submit(find_losers, self.src, self.mapping, self.mapper)
            pool.shutdown(wait=False)

    # -- one batch --------------------------------------------------------------------
    def prepare(self, rng: KeyRange) -> Prepared:
        """Read and convert one range."""
        return self._read_and_convert(rng)

    def count_rejects(self) -> tuple[int, int]:
        """What a dry run reports, writing nothing: (rows the conversions reject, rows
        superseded by another with the same natural key) over every range.

        Each range is read and converted by the code a batch uses, so the dry run rejects
        what the copy will. Rows PostgreSQL itself refuses on write (a CHECK constraint, a
        value out of a column's range) show only when written.
        """
        rejects = sum(len(self._read_and_convert(rng).rejects) for rng in self.plan_batches())
        self.conn.rollback()  # hold no snapshot of the target between the plan and a batch
        return rejects, len(self.losers())

    def _read_and_convert(self, rng: KeyRange) -> Prepared:
        if self._sql_select is not None:
            if isinstance(self.src, SQLiteSource):
                self.losers()
                got = self._read_whole(rng)
                if got is not None:
                    return got
            return self._prepare_sql(rng)
        raw = self.src.read(self.mapper.select, rng.lo, rng.hi, self.mapping.where)
        return self.convert_rows(raw)

    def _read_whole(self, rng: KeyRange, binary: bool | None = None) -> Prepared | None:
        """A range read whole in this process (see :meth:`lines_query`), or None."""
        fast = self.lines_query(rng, binary)
        if fast is None:
            return None
        (_, args), excluded = fast
        if self._arrow is not None:
            with self._adbc_lock:
                if self._adbc is None:
                    self._adbc = arrow_connect(self.src.uri)  # type: ignore[attr-defined]
                got = fetch_arrow(self._adbc, *args[1:])
        else:
            got = fetch_lines(self.src.conn, *args[1:])  # type: ignore[attr-defined]
        return self.from_lines(got, rng, excluded) if got is not None else None

    def as_csv(self, prep: Prepared) -> Prepared:
        """A binary batch read again as CSV, for the staging merge (which stages text)."""
        assert prep.rng is not None
        self.losers()
        return self._read_whole(prep.rng, binary=False) or self._prepare_sql(prep.rng)

    def sql_query(self, rng: KeyRange) -> tuple[str, str, list[Any], int, int] | None:
        """The arguments of :func:`handrail.tablecopy.read_sql.read_rows` reading a range's lines
        in a reader process; None without SQL lines."""
        if self._sql_select is None or not isinstance(self.src, SQLiteSource):
            return None
        query, params = self.src.range_sql(
            self._sql_select, rng.lo, rng.hi, self.mapping.where, "?", exprs=True
        )
        return self.src.uri, query, params, len(self.mapping.key), len(self.src.key)

    def lines_query(
        self, rng: KeyRange, binary: bool | None = None
    ) -> tuple[tuple[Callable[..., LineBatch | None], tuple[Any, ...]], int] | None:
        """The reader function (:func:`handrail.tablecopy.read_arrow.read_arrow`, else
        :func:`handrail.tablecopy.read_sql.read_lines`; module-level, so a reader process can run
        it) and its arguments reading a range as one joined text, and how many
        duplicate-key losers it leaves out; None unless the batch can be read whole:
        lines from SQL, the losers known (without waiting) and their source keys integers
        or texts. Arrow writes binary COPY while the job copies straight into the target
        (or as ``binary`` says), else CSV."""
        if self._sql_select is None or not isinstance(self.src, SQLiteSource):
            return None
        fut = self._losers_future
        if self._losers is None and (fut is None or not fut.done()):
            return None
        self.losers()
        excluded = self._losers_in(rng)
        if excluded is None or any(type(v) not in (int, str) for t in excluded for v in t):
            return None
        if self._arrow is not None:
            rest, params = self.src.range_from(rng.lo, rng.hi, self.mapping.where, excluded)
            # binary COPY while batches go straight into the target; a merge stages CSV
            plan = self._arrow.as_binary(self.direct if binary is None else binary)
            return (read_arrow, (self.src.uri, plan, rest, params)), len(excluded)
        query, params = self.src.lines_query(
            self._sql_select[0], rng.lo, rng.hi, self.mapping.where, excluded
        )
        return (read_lines, (self.src.uri, query, params)), len(excluded)

    def from_lines(self, got: LineBatch, rng: KeyRange, excluded: int) -> Prepared:
        """A batch from what :meth:`lines_query` read: the rows SQLite left (no line) are
        read again by source key and converted in Python. A natural key two rows share
        after conversion fails the COPY or the merge: the range is then read row by row."""
        lines: list[bytes] = [got.data]
        python: list[str] = []  # lines Python converted (a second COPY, if binary)
        rejects: list[Reject] = []
        if got.slow:
            nk = len(self.src.key)
            raw = {
                tuple(r[-nk:]): r
                for r in self.src.rows_where_in(self.mapper.select, self.src.key, got.slow)
            }
            for skey in got.slow:
                r = raw.get(skey)
                if r is None:  # not found again (the source changed): read row by row
                    return self._prepare_sql(rng)
                one = self._convert_one(r)
                if isinstance(one, Reject):
                    rejects.append(one)
                elif got.binary:
                    python.append(one[1])
                else:
                    lines.append(one[1].encode())
        rows = got.rows - len(rejects)
        return Prepared(
            python,
            [],
            rejects,
            got.rows + excluded,
            raw=b"".join(lines),
            rows=rows,
            rng=rng,
            binary=got.binary,
        )

    def _prepare_sql(self, rng: KeyRange) -> Prepared:
        q = self.sql_query(rng)
        assert q is not None
        assert isinstance(self.src, SQLiteSource)
        _, query, params, nn, nk = q
        rows = self.src.conn.execute(query, params).fetchall()
        return self.from_sql_rows(split_rows(rows, nn, nk), rng)

    def from_sql_rows(self, cols: SqlRows, rng: KeyRange) -> Prepared:
        """A batch from what :meth:`sql_query` read (as :func:`split_rows` gives it):
        lines built by SQLite (:mod:`handrail.tablecopy.read_sql`); the rows it left (no line, or
        a NUL) are read again by source key and converted in Python."""
        lines, keys, skeys = cols
        read = len(lines)
        losers = self.losers()
        if losers and self._losers_between(rng):
            lines, keys, skeys = _keep(
                [i for i, sk in enumerate(skeys) if sk not in losers], lines, keys, skeys
            )
        rejects: list[Reject] = []
        data: str | None = None if None in lines else "".join(lines)  # type: ignore[arg-type]
        if data is None or needs_python(data):
            data = None
            slow = [i for i, line in enumerate(lines) if needs_python(line)]
            wanted = [skeys[i] for i in slow]
            nk = len(self.src.key)
            raw = {
                tuple(r[-nk:]): r
                for r in self.src.rows_where_in(self.mapper.select, self.src.key, wanted)
            }
            refused: set[int] = set()
            for i, skey in zip(slow, wanted, strict=True):
                got = self._convert_one(raw[skey])
                if isinstance(got, Reject):
                    rejects.append(got)
                    refused.add(i)
                else:
                    keys[i], lines[i] = got
            if refused:
                lines, keys, skeys = _keep(
                    [i for i in range(len(lines)) if i not in refused], lines, keys, skeys
                )
        if len(set(keys)) == len(keys):
            return Prepared([t for t in lines if t is not None], keys, rejects, read, data=data)
        return self._collect(list(zip(keys, lines, skeys, strict=True)), rejects, read)

    def _losers_between(self, rng: KeyRange) -> bool:
        """Whether any loser's source key lies in the range (lo, hi]."""
        got = self._losers_in(rng)
        return got is None or bool(got)

    def _losers_in(self, rng: KeyRange) -> list[tuple[Any, ...]] | None:
        """The losers' source keys in the range (lo, hi]; None when keys of mixed types
        cannot be ordered (then every row must be looked at)."""
        try:
            if self._loser_keys is None:
                self._loser_keys = sorted(self.losers())
            ks = self._loser_keys
            i = bisect.bisect_right(ks, rng.lo) if rng.lo is not None else 0
            j = bisect.bisect_right(ks, rng.hi) if rng.hi is not None else len(ks)
            return ks[i:j]
        except TypeError:
            return None

    def _convert_one(self, r: Sequence[Any]) -> tuple[tuple[Any, ...], str] | Reject:
        """A source row (``select`` columns, then the source key) as (natural key, line)."""
        nk = len(self.src.key)
        if self._line is not None:
            key = tuple([r[i] for i in self._key_source_index])
            if not self._key_check or all(
                type(v) is t for v, t in zip(key, self._key_types, strict=True)
            ):
                try:
                    return key, self._line(r)
                except Exception:
                    pass
        got = self.mapper.convert(r[:-nk], source_key=key_text(r[-nk:]))
        if not isinstance(got, Converted):
            return got
        return got.key, ",".join([_csv_field(v) for v in got.values]) + "\n"

    def _collect(
        self,
        items: Sequence[tuple[tuple[Any, ...], str | None, Sequence[Any]]],
        rejects: list[Reject],
        read: int,
    ) -> Prepared:
        """(natural key, line, source key) in key order into a batch; a natural key seen
        twice after conversion keeps the later row and reports the earlier."""
        keys = [k for k, _, _ in items]
        if len(set(keys)) == len(keys):
            return Prepared([t for _, t, _ in items if t is not None], keys, rejects, read)
        out: dict[tuple[Any, ...], str] = {}
        dups: list[Reject] = []
        for key, text, skey in items:
            assert text is not None
            if key in out:
                dups.append(
                    Reject(
                        self.mapping.source,
                        key_text(key),
                        f"duplicate natural key after conversion: source row "
                        f"{key_text(skey)} supersedes an earlier one",
                    )
                )
                del out[key]
            out[key] = text
        return Prepared(list(out.values()), list(out), rejects, read, dups)

    def convert_rows(self, raw: Sequence[Sequence[Any]]) -> Prepared:
        """Convert source rows (``select`` columns, then the source key), in key order.

        Losers of duplicate natural keys are dropped; within the rows, a natural key seen
        twice after conversion keeps the later row (reported as a duplicate).
        """
        losers = self.losers()
        nk = len(self.src.key)
        items: list[tuple[tuple[Any, ...], str | None, Sequence[Any]]] = []
        rejects: list[Reject] = []
        for r in raw:
            if losers and tuple(r[-nk:]) in losers:
                continue
            got = self._convert_one(r)
            if isinstance(got, Reject):
                rejects.append(got)
            else:
                items.append((got[0], got[1], r[-nk:]))
        return self._collect(items, rejects, len(raw))

    def apply_batch(self, rng: KeyRange, *, run_id: str, step: str) -> BatchResult:
        """Read, convert and merge one range, with its ledger row, in one transaction."""
        return self.write_batch(rng.batch, self.prepare(rng), run_id=run_id, step=step)

    def write_batch(self, batch: int, prep: Prepared, *, run_id: str, step: str) -> BatchResult:
        """Stage and merge a prepared batch and mark it in the ledger, in one transaction."""
        conn = self.conn
        try:
            with conn.transaction():
                if prep.binary and prep.count and not self.direct:
                    prep = self.as_csv(prep)  # read ahead before the job turned to merging
                direct = prep.count > 0 and self._copy_direct(prep)
                if not direct and prep.binary and prep.count:
                    prep = self.as_csv(prep)
                merged = None
                if not direct and prep.raw is not None and prep.count:
                    merged = self._merge_joined(prep.raw)
                    if merged is None:
                        # refused as a whole: read the range again, row by row, to merge
                        # it row by row (and find the rows at fault)
                        assert prep.rng is not None
                        prep = self._prepare_sql(prep.rng)
                res = BatchResult(batch, read=prep.read, rejects=list(prep.rejects))
                self.duplicates.extend(prep.duplicates)
                if direct:
                    res.inserted = prep.count
                elif merged is not None:
                    res.inserted, res.updated = merged
                elif prep.lines:
                    self._stage_lines(prep.lines)
                    ins, upd = self._merge(0, len(prep.lines) - 1, prep.keys, res.rejects)
                    res.inserted, res.updated = ins, upd
                refused = len(res.rejects) - len(prep.rejects)
                res.unchanged = prep.count - res.changed - refused
                Postgres.ledger_mark(
                    conn,
                    run_id,
                    step,
                    batch,
                    res.changed,
                    [{"key": r.key, "reason": r.reason} for r in res.rejects] or None,
                )
        except psycopg.errors.UniqueViolation as exc:
            if "ledger" in str(exc):
                raise StepFailed(
                    f"batch {batch} of step {step!r} in run {run_id} was already applied; "
                    "it was not applied again"
                ) from None
            raise
        except psycopg.errors.LockNotAvailable as exc:
            raise self.target_db._lock_error(exc, None) from None
        return res

    def _copy_direct(self, prep: Prepared) -> bool:
        """COPY the lines straight into the target, under a savepoint.

        While no key of the batch exists in the target, this is exactly what the merge
        would do (every row an insert), at the speed of a plain COPY. A unique violation
        means some key exists: the savepoint is rolled back, the batch goes through the
        staging merge, and so do all later batches of this job. Any other refusal (a
        CHECK, a bad value) also sends this batch through the merge, which isolates the
        refused rows. False when the batch was not copied.
        """
        if not self.direct:
            return False
        cols = ", ".join(quote_ident(t) for t in self.mapper.targets)
        sql = f"COPY {self.target.rel} ({cols}) FROM STDIN (FORMAT csv)".encode()
        try:
            with self.conn.transaction(), self.conn.cursor() as cur:
                if prep.binary:
                    assert prep.raw is not None
                    binary = f"COPY {self.target.rel} ({cols}) FROM STDIN (FORMAT binary)"
                    with cur.copy(binary.encode()) as cp:
                        cp.write(prep.raw)
                    if prep.lines:  # the rows Python converted
                        with cur.copy(sql) as cp:
                            cp.write("".join(prep.lines))
                else:
                    with cur.copy(sql) as cp:
                        if prep.raw is not None:
                            cp.write(prep.raw)
                        else:
                            cp.write(prep.data if prep.data is not None else "".join(prep.lines))
        except (psycopg.errors.UniqueViolation, psycopg.errors.FeatureNotSupported):
            # a key exists, or COPY cannot write this table (row-level security)
            self.direct = False
            return False
        except _BISECT_ERRORS:
            return False
        return True

    def _merge_joined(self, data: bytes) -> tuple[int, int] | None:
        """Stage a joined batch (lines without their numbers) and merge it whole, under a
        savepoint: (inserted, updated), or None when PostgreSQL refused it (a bad row, or
        two rows with one key after conversion), with nothing of it left staged."""
        self._ensure_stage()
        cols = ", ".join(quote_ident(t) for t in self.mapper.targets)
        sql = f"COPY {self._stage} ({cols}) FROM STDIN (FORMAT csv)".encode()
        try:
            with self.conn.transaction():
                with self.conn.cursor().copy(sql) as cp:
                    cp.write(data)
                row = self.conn.execute(self._merge_sql.encode(), (0, 0)).fetchone()
        except _BISECT_ERRORS:
            return None
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def _stage_lines(self, lines: list[str]) -> None:
        self._ensure_stage()
        data = "".join([f"{n},{line}" for n, line in enumerate(lines)])
        with self.conn.cursor().copy(f"COPY {self._stage} FROM STDIN (FORMAT csv)".encode()) as cp:
            cp.write(data)

    def _ensure_stage(self) -> None:
        if self._stage_ready:
            return
        cols = ", ".join(f"{quote_ident(t)} text" for t in self.mapper.targets)
        self.conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {self._stage} (_hr_n integer DEFAULT 0, {cols}) "
            "ON COMMIT DELETE ROWS".encode()
        )
        self._stage_ready = True

    def _build_merge(self) -> str:
        targets = self.mapper.targets
        types = self.target.types
        casts = ", ".join(f"s.{quote_ident(c)}::{types[c]}" for c in targets)
        collist = ", ".join(quote_ident(c) for c in targets)
        key = ", ".join(quote_ident(c) for c in self.mapping.key)
        rest = [c for c in targets if c not in self.mapping.key]
        if self.spec.on_conflict == "nothing" or not rest:
            action = "DO NOTHING"
        else:

            def cmp(prefix: str, c: str) -> str:
                # json has no equality operator; compare its text
                ref = f"{prefix}.{quote_ident(c)}"
                return f"{ref}::text" if types[c] == "json" else ref

            sets = ", ".join(f"{quote_ident(c)} = excluded.{quote_ident(c)}" for c in rest)
            old = ", ".join(cmp("t", c) for c in rest)
            new = ", ".join(cmp("excluded", c) for c in rest)
            action = f"DO UPDATE SET {sets} WHERE ({old}, NULL) IS DISTINCT FROM ({new}, NULL)"
        return (
            f"WITH m AS (INSERT INTO {self.target.rel} AS t ({collist}) "
            f"SELECT {casts} FROM {self._stage} s WHERE s._hr_n BETWEEN %s AND %s "
            f"ORDER BY s._hr_n ON CONFLICT ({key}) {action} RETURNING (xmax = 0) AS ins) "
            "SELECT count(*) FILTER (WHERE ins), count(*) FILTER (WHERE NOT ins) FROM m"
        )

    def _merge(
        self, lo: int, hi: int, keys: list[tuple[Any, ...]], rejects: list[Reject]
    ) -> tuple[int, int]:
        """Merge staged rows ``lo..hi``; on a row-level error, bisect to isolate it."""
        try:
            with self.conn.transaction():  # a savepoint
                row = self.conn.execute(self._merge_sql.encode(), (lo, hi)).fetchone()
                return (int(row[0]), int(row[1])) if row else (0, 0)
        except _BISECT_ERRORS as exc:
            if lo == hi:
                diag = exc.diag
                reason = diag.message_primary or str(exc)
                if diag.message_detail:
                    reason += f" ({diag.message_detail})"
                rejects.append(Reject(self.mapping.source, key_text(keys[lo]), reason))
                return (0, 0)
            mid = (lo + hi) // 2
            a = self._merge(lo, mid, keys, rejects)
            b = self._merge(mid + 1, hi, keys, rejects)
            return (a[0] + b[0], a[1] + b[1])

    def committed(self, run_id: str, step: str) -> set[int]:
        return self.target_db.ledger_batches(run_id, step)


def copy_table(
    source: SQLite | Postgres,
    target: Postgres,
    spec: CopySpec | TableMap,
    *,
    run_id: str,
    step: str,
    batch_size: int = 10_000,
    on_batch: Callable[[int, int, list[Reject]], None] | None = None,
    pipeline: bool = True,
    readers: int = 2,
    sql_lines: bool = True,
    direct: bool = True,
    arrow: bool = True,
) -> CopyResult:
    """Copy (upsert) a whole table, batch by batch, exactly once per ``(run_id, step)``.

    Batches the target's ledger already holds are skipped, so calling it again after a
    crash resumes. ``on_batch(batch_no, rows_read, rejects)`` is called after each batch
    commits. With ``pipeline`` the next batches are read and converted (a SQLite source of
    four batches or more by ``readers`` forked processes, else by one thread) while the
    database merges the current one; commits stay in batch order.

    A SQLite source is read whole by Arrow (``arrow``, when pyarrow is installed) or by
    SQL lines (``sql_lines``), else row by row; ``direct`` COPYs batches straight into
    the target while none of their keys exists there. All give the same table.
    """
    started = time.monotonic()
    result = CopyResult()
    with ExitStack() as stack:
        # Reader processes are forked first, before this copy opens any connection or
        # starts any thread: a child must not hold the target's socket (a killed copy's
        # transaction would then stay open, and block its own resume on its keys).
        forked: ProcessPoolExecutor | None = None
        if pipeline and readers > 1 and sql_lines and isinstance(source, SQLite):
            mapping = spec.mapping if isinstance(spec, CopySpec) else spec
            if _sqlite_rows(source, mapping.source) >= 4 * batch_size:
                forked = stack.enter_context(reader_processes(readers))
        job = stack.enter_context(
            CopyJob(
                source,
                target,
                spec,
                batch_size=batch_size,
                sql_lines=sql_lines,
                direct=direct,
                arrow=arrow,
            )
        )
        ranges = job.plan_batches(run_id, step)
        done = job.committed(run_id, step)
        todo = [r for r in ranges if r.batch not in done]
        pool = forked if todo and job.sql_query(todo[0]) is not None else None
        if isinstance(job.src, SQLiteSource) and pipeline:
            job.start_losers()
        else:
            job.losers()
        for r in ranges:
            if r.batch in done:
                result.add(BatchResult(r.batch, skipped=True))
        result.rejects.extend(
            Reject(job.mapping.source, d["key"], d["reason"])
            for d in target.ledger_rejects(run_id, step)
        )

        def finish(b: BatchResult) -> None:
            result.add(b)
            if on_batch is not None:
                on_batch(b.batch, b.read, b.rejects)

        if not pipeline:
            for r in todo:
                finish(job.apply_batch(r, run_id=run_id, step=step))
        else:
            for b in _pipelined(job, todo, run_id, step, pool, 3 * readers if pool else 2):
                finish(b)
        job.losers()
        result.duplicates = list(job.duplicates)
        job.forget_plan(run_id, step)
    result.seconds = time.monotonic() - started
    return result


def _sqlite_rows(db: SQLite, table: str) -> int:
    """Rows in a SQLite table (0 when it cannot be read: the copy reports that itself)."""
    try:
        with closing(sqlite3.connect(f"file:{db.path}?mode=ro", uri=True)) as conn:
            row = conn.execute(f"SELECT count(*) FROM {quote_ident(table)}").fetchone()
            return int(row[0]) if row else 0
    except sqlite3.Error:
        return 0


def _pipelined(
    job: CopyJob,
    todo: list[KeyRange],
    run_id: str,
    step: str,
    processes: Executor | None,
    ahead: int = 2,
) -> Iterator[BatchResult]:
    """Prepare batches ahead while this thread writes them, in order.

    With reader ``processes`` (a SQLite source read whole), they run the reads (Arrow's,
    or SQLite's line queries) on other cores; in threads SQLite's would not, as Python's
    sqlite3 takes the GIL back for every row. Otherwise one thread reads ahead.
    """
    pending: deque[tuple[KeyRange, Future[Any]]] = deque()
    left = iter(todo)
    thread = ThreadPoolExecutor(1, thread_name_prefix="handrail-copy-reader")

    def submit(r: KeyRange) -> None:
        fast = job.lines_query(r) if processes is not None else None
        if processes is not None and fast is not None:
            pool = processes
            fn, args = fast[0]
            joined = pool.submit(fn, *args)

            def finish() -> Prepared:
                got = joined.result()
                if got is not None:
                    return job.from_lines(got, r, fast[1])
                q = job.sql_query(r)  # some row needs Python: read it row by row
                assert q is not None
                return job.from_sql_rows(pool.submit(read_rows, *q).result(), r)

            pending.append((r, thread.submit(finish)))
            return
        q = job.sql_query(r) if processes is not None else None
        if processes is not None and q is not None:
            read = processes.submit(read_rows, *q)
            # the batch's Python part runs in the thread while this one waits on COPY
            pending.append((r, thread.submit(lambda: job.from_sql_rows(read.result(), r))))
        else:
            pending.append((r, thread.submit(job.prepare, r)))

    with thread:
        try:
            for r in itertools.islice(left, ahead):
                submit(r)
            while pending:
                rng, fut = pending.popleft()
                prep = fut.result()
                nxt = next(left, None)
                if nxt is not None:
                    submit(nxt)
                yield job.write_batch(rng.batch, prep, run_id=run_id, step=step)
        finally:
            for _, fut in pending:
                fut.cancel()


def upsert_rows(
    job: CopyJob, source_rows: Sequence[Sequence[Any]]
) -> tuple[int, int, list[Reject]]:
    """Convert and merge given source rows (``select`` columns, then the source key) in
    one transaction, without the ledger: (inserted, updated, rejects). For reconcile."""
    prep = job.convert_rows(source_rows)
    job.duplicates.extend(prep.duplicates)
    rejects = list(prep.rejects)
    if not prep.lines:
        return 0, 0, rejects
    with job.conn.transaction():
        job._stage_lines(prep.lines)
        ins, upd = job._merge(0, len(prep.lines) - 1, prep.keys, rejects)
    return ins, upd, rejects
