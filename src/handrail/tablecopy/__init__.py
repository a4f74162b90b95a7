"""Table copy and parity: a SQLite or PostgreSQL table copied into PostgreSQL, and the
proof that both hold the same rows.

The modules, by what each does:

    mapping        TableMap, Column and the conversions (what a row becomes)
    sources        reading the source table in key order (SQLite or PostgreSQL)
    read_sql       SQLite builds each row's COPY line in SQL
    read_arrow     SQLite rows read into Arrow and converted by its kernels
    copy           copy_table and CopyJob: batches upserted and journalled in the target
    parity         parity (and reconcile): key-ordered segment digests on both sides
    parity_sqlite  the SQLite half of parity's row texts
    steps          CopyTable and Parity: the runbook step and the gate check

This namespace is the public API. Names that need psycopg (the copy and the step) load on
first use, so parity between two SQLite files runs without PostgreSQL's driver.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .mapping import (
    Column,
    ConversionError,
    Convert,
    CopySpec,
    MappingError,
    TableMap,
    as_is,
    boolean,
    bytea,
    date_,
    integer,
    jsonb,
    numeric,
    real,
    text,
    timestamptz,
    uuid_,
)
from .parity import Difference, ParityReport, ReconcileResult, parity, reconcile

if TYPE_CHECKING:
    from .copy import CopyResult, copy_table
    from .steps import CopyTable, Parity

#: names loaded on first use, and the module of each (they import psycopg)
_LAZY = {
    "CopyResult": "copy",
    "copy_table": "copy",
    "CopyTable": "steps",
    "Parity": "steps",
}

__all__ = [
    "Column",
    "ConversionError",
    "Convert",
    "CopyResult",
    "CopySpec",
    "CopyTable",
    "Difference",
    "MappingError",
    "Parity",
    "ParityReport",
    "ReconcileResult",
    "TableMap",
    "as_is",
    "boolean",
    "bytea",
    "copy_table",
    "date_",
    "integer",
    "jsonb",
    "numeric",
    "parity",
    "real",
    "reconcile",
    "text",
    "timestamptz",
    "uuid_",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
