"""What a step created in a database, and whether anyone has changed it since.

A rollback may remove only what this run created and nobody changed since. For schema
steps that means: a table the run created holds exactly the rows the run left in it, and
a column the run added holds exactly the non-default values the run left in it. The step
records a digest of each such object inside the transaction that created it (or when it
finished applying); before the rollback drops the object, the digest is taken again. A
different digest names the object as a *blocker*: dropping it would destroy what someone
else wrote, so the rollback stops before the step (and ``--force`` does not override it).

A column's digest covers only its values that differ from the column's default, keyed by
rowid (or the primary key of a ``WITHOUT ROWID`` table): rows an application inserts
later with the column left at its default do not hold anything the drop would lose.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..resources.sqlite import LEDGER_PREFIX, quote_ident

#: how many keys a blocker line names
EXAMPLES = 5


@dataclass(frozen=True)
class Digest:
    """How many values (or rows), and a sha256 over them in a stable order."""

    count: int
    sha256: str

    def to_json(self) -> list[Any]:
        return [self.count, self.sha256]

    @classmethod
    def from_json(cls, data: list[Any]) -> Digest:
        return cls(int(data[0]), str(data[1]))


def _digest(rows: Iterable[tuple[Any, ...]]) -> Digest:
    """A multiset digest: the sum, modulo 2**64, of each row's 64-bit hash, and the count.
    It streams (no sort, nothing held) and does not depend on the order rows come in."""
    total, n = 0, 0
    for row in rows:
        h = hashlib.blake2b(repr(row).encode(), digest_size=8).digest()
        total = (total + int.from_bytes(h, "big")) % (1 << 64)
        n += 1
    return Digest(n, f"{total:016x}")


# -- SQLite -----------------------------------------------------------------------------
def sqlite_schema(conn: sqlite3.Connection) -> dict[str, list[str]]:
    """User tables (not SQLite's, not handrail's) and their columns."""
    out: dict[str, list[str]] = {}
    for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite\\_%' "
        "ESCAPE '\\' AND name NOT LIKE ? ESCAPE '\\'",
        (LEDGER_PREFIX.replace("_", "\\_") + "%",),
    ):
        out[name] = [r[1] for r in conn.execute(f"PRAGMA table_info({quote_ident(name)})")]
    return out


def created(
    before: dict[str, list[str]], after: dict[str, list[str]]
) -> tuple[list[str], list[tuple[str, str]]]:
    """Tables in ``after`` but not ``before``; columns added to tables in both."""
    tables = [t for t in after if t not in before]
    columns = [(t, c) for t in after if t in before for c in after[t] if c not in before[t]]
    return tables, columns


def _row_key(conn: sqlite3.Connection, table: str) -> str:
    """``rowid``, or the primary key columns of a ``WITHOUT ROWID`` table."""
    try:
        conn.execute(f"SELECT rowid FROM {quote_ident(table)} LIMIT 0")
        return "rowid"
    except sqlite3.OperationalError:
        info = conn.execute(f"PRAGMA table_info({quote_ident(table)})").fetchall()
        pk = [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5]]
        return ", ".join(quote_ident(c) for c in pk)


def _not_default(conn: sqlite3.Connection, table: str, column: str) -> str:
    info = {r[1]: r[4] for r in conn.execute(f"PRAGMA table_info({quote_ident(table)})")}
    default = info.get(column)
    col = quote_ident(column)
    return f"{col} IS NOT NULL" if default is None else f"{col} IS NOT ({default})"


def sqlite_table_digest(conn: sqlite3.Connection, table: str) -> Digest:
    cur = conn.execute(f"SELECT * FROM {quote_ident(table)}")
    return _digest(tuple((type(v).__name__, v) for v in r) for r in cur)


def sqlite_column_digest(conn: sqlite3.Connection, table: str, column: str) -> Digest:
    key = _row_key(conn, table)
    col = quote_ident(column)
    return _digest(
        conn.execute(
            f"SELECT {key}, typeof({col}), quote({col}) FROM {quote_ident(table)} "
            f"WHERE {_not_default(conn, table, column)}"
        )
    )


def sqlite_record(
    conn: sqlite3.Connection, tables: Iterable[str], columns: Iterable[tuple[str, str]]
) -> dict[str, Any]:
    """Digests of created tables and added columns, for :func:`sqlite_blockers`."""
    return {
        "tables": {t: sqlite_table_digest(conn, t).to_json() for t in tables},
        "columns": [[t, c, sqlite_column_digest(conn, t, c).to_json()] for t, c in columns],
    }


def sqlite_blockers(conn: sqlite3.Connection, recorded: dict[str, Any] | None) -> list[str]:
    """What of the recorded objects someone changed since: dropping it would lose it."""
    if not recorded:
        return []
    schema = sqlite_schema(conn)
    out: list[str] = []
    for table, data in recorded.get("tables", {}).items():
        if table not in schema:
            continue  # gone already: nothing left to lose
        then, now = Digest.from_json(data), sqlite_table_digest(conn, table)
        if now != then:
            out.append(
                f"table {table} was created by this run and has changed since "
                f"({now.count} row(s) now, {then.count} when this run left it"
                f"{_examples(conn, table, 'rowid' if then.count == 0 else None)}); "
                "dropping it would remove rows that are not this run's"
            )
    for table, column, data in recorded.get("columns", []):
        if column not in schema.get(table, []):
            continue
        then, now = Digest.from_json(data), sqlite_column_digest(conn, table, column)
        if now != then:
            where = _not_default(conn, table, column) if then.count == 0 else None
            out.append(
                f"column {table}.{column} was added by this run and holds values written "
                f"since ({now.count} non-default value(s) now, {then.count} when this run "
                f"left it{_examples(conn, table, where)}); dropping it would remove them"
            )
    return out


def _examples(conn: sqlite3.Connection, table: str, where: str | None) -> str:
    """A few keys of the rows that make the difference, when they can be told apart."""
    if where is None:
        return ""
    key = _row_key(conn, table)
    cond = "" if where == "rowid" else f" WHERE {where}"
    rows = conn.execute(
        f"SELECT {key} FROM {quote_ident(table)}{cond} ORDER BY {key} LIMIT {EXAMPLES}"
    ).fetchall()
    keys = ", ".join(repr(r[0] if len(r) == 1 else tuple(r)) for r in rows)
    return f"; {key} {keys}" if keys else ""


# -- PostgreSQL -------------------------------------------------------------------------
PG_SCHEMA_SQL = (
    "SELECT c.table_schema, c.table_name, c.column_name FROM information_schema.columns c "
    "JOIN information_schema.tables t ON t.table_schema = c.table_schema "
    "AND t.table_name = c.table_name AND t.table_type = 'BASE TABLE' "
    "WHERE c.table_schema NOT IN ('pg_catalog', 'information_schema') "
    "AND c.table_schema NOT LIKE 'pg\\_%' AND c.table_name NOT LIKE '\\_handrail\\_%' "
    "ORDER BY c.table_schema, c.table_name, c.ordinal_position"
)


def pg_schema(conn: Any) -> dict[str, list[str]]:
    """``schema.table`` -> columns, for every user table (not handrail's)."""
    out: dict[str, list[str]] = {}
    for schema, table, column in conn.execute(PG_SCHEMA_SQL).fetchall():
        out.setdefault(f"{schema}.{table}", []).append(column)
    return out


def _pg_name(qualified: str) -> str:
    schema, _, table = qualified.partition(".")
    return f'"{schema}"."{table}"'


#: each row's text hashed to 64 bits and summed (numeric: no overflow), as in _digest
PG_SUM = "coalesce(sum(('x' || substr(md5(x), 1, 16))::bit(64)::bigint::numeric), 0)"


def pg_table_digest(conn: Any, table: str) -> Digest:
    """count and the sum of row hashes: streams in the server, no sort, order-free."""
    count, total = conn.execute(
        f"SELECT count(*), {PG_SUM} FROM (SELECT t::text AS x FROM {_pg_name(table)} t) s".encode()
    ).fetchone()
    return Digest(int(count), str(total))


def _pg_column_filter(conn: Any, table: str, column: str) -> str:
    schema, _, name = table.partition(".")
    row = conn.execute(
        "SELECT column_default FROM information_schema.columns "
        "WHERE table_schema=%s AND table_name=%s AND column_name=%s",
        (schema, name, column),
    ).fetchone()
    col = '"' + column.replace('"', '""') + '"'
    default = row[0] if row else None
    if default is None or "nextval(" in default:
        return f"{col} IS NOT NULL"
    return f"{col} IS DISTINCT FROM ({default})"


def pg_column_digest(conn: Any, table: str, column: str) -> Digest:
    """The column's non-default values with each row's primary key (or alone, sorted)."""
    schema, _, name = table.partition(".")
    pk = [
        r[0]
        for r in conn.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary",
            (_pg_name(table),),
        ).fetchall()
    ]
    del schema, name
    col = '"' + column.replace('"', '""') + '"'
    keys = " || ',' || ".join(f'"{k}"::text' for k in pk) if pk else "''"
    count, total = conn.execute(
        f"SELECT count(*), {PG_SUM} FROM "
        f"(SELECT ({keys}) || '=' || coalesce({col}::text, '<null>') AS x "
        f"FROM {_pg_name(table)} WHERE {_pg_column_filter(conn, table, column)}) s".encode()
    ).fetchone()
    return Digest(int(count), str(total))


def pg_record(
    conn: Any, tables: Iterable[str], columns: Iterable[tuple[str, str]]
) -> dict[str, Any]:
    return {
        "tables": {t: pg_table_digest(conn, t).to_json() for t in tables},
        "columns": [[t, c, pg_column_digest(conn, t, c).to_json()] for t, c in columns],
    }


def pg_blockers(conn: Any, recorded: dict[str, Any] | None) -> list[str]:
    if not recorded:
        return []
    schema = pg_schema(conn)
    out: list[str] = []
    for table, data in recorded.get("tables", {}).items():
        if table not in schema:
            continue
        then, now = Digest.from_json(data), pg_table_digest(conn, table)
        if now != then:
            out.append(
                f"table {table} was created by this run and has changed since "
                f"({now.count} row(s) now, {then.count} when this run left it); "
                "dropping it would remove rows that are not this run's"
            )
    for table, column, data in recorded.get("columns", []):
        if column not in schema.get(table, []):
            continue
        then, now = Digest.from_json(data), pg_column_digest(conn, table, column)
        if now != then:
            out.append(
                f"column {table}.{column} was added by this run and holds values written "
                f"since ({now.count} non-default value(s) now, {then.count} when this run "
                "left it); dropping it would remove them"
            )
    return out
