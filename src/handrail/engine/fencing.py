"""Fencing tokens: a process that lost its lease must not write any more.

A lease can be taken over (``--take-over``) or reclaimed from a holder that looked dead.
The old holder may still be alive — stopped with SIGSTOP, or hung for a while — and carry
on when it wakes up. Every acquisition of a runbook's lease therefore gets a *generation*
one higher than the last (the journal's ``fences`` table), and every write checks that no
newer generation exists:

- the journal, at the start of each of its write transactions;
- each transactional target (SQLite, PostgreSQL), inside the batch's own transaction, in a
  fence row beside the ledger (:func:`sqlite_fence`, :func:`postgres_fence`): a stale
  holder's batch is rolled back whole, since its check and its change commit together;
- an external service, before each request that may change it (:func:`before_request`).

The executor makes its fence current with :func:`holding` right after taking the lease;
the ledger code reads it with :func:`current_fence`, so step code passes nothing along.
A context variable does not follow into new threads: writes must happen on the thread
that runs the step (they do: reader threads and processes only read).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any

from ..errors import LeaseLost

#: methods that never change a service: sent without asking the journal first
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Fence:
    """The lease this process holds: its generation, and how to ask the journal about it.

    ``scope`` names the lease in a target's fence table (the journal's file and the
    runbook's key, so two state directories never compare their generations); ``holder``
    says who holds it (``owner@host pid N``); ``verify`` raises :class:`LeaseLost` when the
    journal knows a newer generation.
    """

    scope: str
    generation: int
    holder: str
    verify: Callable[[], None] = field(compare=False, repr=False)


_CURRENT: ContextVar[Fence | None] = ContextVar("handrail_fence", default=None)


def current_fence() -> Fence | None:
    """The fence of the lease this context holds, or None outside a run."""
    return _CURRENT.get()


@contextmanager
def holding(fence: Fence) -> Iterator[Fence]:
    """Make ``fence`` current for the code inside (the executor, while it holds a lease)."""
    token = _CURRENT.set(fence)
    try:
        yield fence
    finally:
        _CURRENT.reset(token)


def enter_fence(fence: Fence) -> Token[Fence | None]:
    """Make ``fence`` current until :func:`leave_fence` (for code shaped try/finally)."""
    return _CURRENT.set(fence)


def leave_fence(token: Token[Fence | None]) -> None:
    _CURRENT.reset(token)


def lease_lost(ours: int, theirs: int | None, holder: str | None, where: str) -> LeaseLost:
    """The error a fenced-out process stops with, saying who holds the lease now."""
    if theirs is None:
        taken = "its lease was taken away (the journal no longer lists it)"
    else:
        taken = f"generation {theirs} held by {holder or 'another process'}"
    return LeaseLost(
        f"this process lost its lease (generation {ours}) to {taken}; "
        f"it applied nothing more ({where} refused its write); the new holder continues",
        hint="nothing to undo here: follow the new holder with `handrail status`",
    )


def check() -> None:
    """Raise :class:`LeaseLost` if this run's lease was taken over (a journal read).

    For a step about to make a write no transaction covers (a file it saves, a rename):
    call it right before, so a stale holder stops first."""
    fence = _CURRENT.get()
    if fence is not None:
        fence.verify()


def before_request(method: str) -> None:
    """Before a request that may change an external service: still our lease?"""
    fence = _CURRENT.get()
    if fence is not None and method.upper() not in SAFE_METHODS:
        fence.verify()


# -- fence rows inside transactional targets -----------------------------------------------
SQLITE_FENCE_TABLE = "_handrail_fence"
_SQLITE_FENCE_DDL = (
    f"CREATE TABLE IF NOT EXISTS {SQLITE_FENCE_TABLE} ("
    "scope TEXT PRIMARY KEY, generation INTEGER NOT NULL, holder TEXT NOT NULL)"
)


def sqlite_fence(conn: Any) -> None:
    """Inside the caller's open write transaction on a SQLite target: refuse a stale
    generation, else record ours. A no-op outside a run (no current fence).

    SQLite serializes writers and a write transaction cannot commit on a snapshot older
    than the last commit, so the row read here is the one that commits with the batch.
    """
    fence = _CURRENT.get()
    if fence is None:
        return
    conn.execute(_SQLITE_FENCE_DDL)
    row = conn.execute(
        f"SELECT generation, holder FROM {SQLITE_FENCE_TABLE} WHERE scope=?", (fence.scope,)
    ).fetchone()
    if row is not None and int(row[0]) > fence.generation:
        raise lease_lost(fence.generation, int(row[0]), str(row[1]), _sqlite_where(conn))
    if row is None or int(row[0]) < fence.generation:
        conn.execute(
            f"INSERT OR REPLACE INTO {SQLITE_FENCE_TABLE} (scope, generation, holder) "
            "VALUES (?,?,?)",
            (fence.scope, fence.generation, fence.holder),
        )


def _sqlite_where(conn: Any) -> str:
    for _, name, file in conn.execute("PRAGMA database_list"):
        if name == "main":
            return f"database {file}"
    return "the database"


POSTGRES_FENCE_TABLE = "_handrail.fence"
_POSTGRES_FENCE_DDL = (
    f"CREATE TABLE IF NOT EXISTS {POSTGRES_FENCE_TABLE} ("
    "scope text PRIMARY KEY, generation bigint NOT NULL, holder text NOT NULL)"
)


def postgres_fence(conn: Any) -> None:
    """Inside the caller's open transaction on a PostgreSQL target (schema ``_handrail``
    exists): refuse a stale generation, else record ours.

    The row is locked (``FOR UPDATE``, or by the upsert) until the batch commits, so a
    newer holder's batch waits for this one and then sees it; this one, if it comes
    second, sees the newer generation and rolls back.
    """
    fence = _CURRENT.get()
    if fence is None:
        return
    where = f"database {conn.info.dbname}"
    row = conn.execute("SELECT to_regclass(%s)", (POSTGRES_FENCE_TABLE,)).fetchone()
    if row is None or row[0] is None:
        conn.execute(_POSTGRES_FENCE_DDL.encode())
    row = conn.execute(
        f"SELECT generation, holder FROM {POSTGRES_FENCE_TABLE} WHERE scope = %s FOR UPDATE",
        (fence.scope,),
    ).fetchone()
    if row is not None and int(row[0]) >= fence.generation:
        if int(row[0]) > fence.generation:
            raise lease_lost(fence.generation, int(row[0]), str(row[1]), where)
        return
    won = conn.execute(
        f"INSERT INTO {POSTGRES_FENCE_TABLE} AS f (scope, generation, holder) "
        "VALUES (%s, %s, %s) ON CONFLICT (scope) DO UPDATE "
        "SET generation = EXCLUDED.generation, holder = EXCLUDED.holder "
        "WHERE f.generation <= EXCLUDED.generation RETURNING generation",
        (fence.scope, fence.generation, fence.holder),
    ).fetchone()
    if won is None:  # a newer holder inserted its row between our SELECT and INSERT
        row = conn.execute(
            f"SELECT generation, holder FROM {POSTGRES_FENCE_TABLE} WHERE scope = %s",
            (fence.scope,),
        ).fetchone()
        raise lease_lost(
            fence.generation, int(row[0]) if row else None, str(row[1]) if row else None, where
        )
