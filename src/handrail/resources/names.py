"""SQL identifiers and table names as text, shared by the SQLite and PostgreSQL code.

No database driver is imported here, so code that only reads SQLite (parity between two
SQLite files) quotes names without loading psycopg.
"""

from __future__ import annotations

__all__ = ["pg_literal_percent", "qualified", "quote_ident", "split_table"]


def quote_ident(name: str) -> str:
    """``name`` as a double-quoted SQL identifier (SQLite and PostgreSQL alike)."""
    return '"' + name.replace('"', '""') + '"'


def pg_literal_percent(sql: str) -> str:
    """SQL text (a mapping's ``where``) for a psycopg query run with parameters, where
    ``%`` starts a placeholder: each ``%`` doubled, so PostgreSQL gets it as written."""
    return sql.replace("%", "%%")


def qualified(schema: str, name: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(name)}"


def split_table(spec: str) -> tuple[str, str]:
    """``"schema.table"`` or ``"table"`` (public) as a pair."""
    schema, _, table = spec.rpartition(".")
    return (schema or "public", table)
