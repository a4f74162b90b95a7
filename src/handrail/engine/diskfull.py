"""Recognise "the disk is full" in whatever form it arrives, and say where and how full.

SQLite reports it as ``SQLITE_FULL`` ("database or disk is full"), the OS as ``ENOSPC``
(or ``EDQUOT`` for a quota). Either becomes a :class:`~handrail.errors.DiskFull` naming the
path and the space left on its filesystem, so the message tells the user what to free.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from pathlib import Path

from ..errors import DiskFull

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


#: below this many free bytes, an SQLite I/O error is taken for a full disk
NEARLY_FULL = 1 << 20


def is_disk_full(exc: BaseException, path: Path | None = None) -> bool:
    """True when ``exc`` (or what it was raised from) says a disk or quota is full.

    SQLite reports some full-disk writes as I/O errors (growing the ``-shm`` file of a WAL
    database gives ``SQLITE_IOERR_SHMSIZE``): with ``path`` given, an I/O error while the
    disk holding ``path`` has under :data:`NEARLY_FULL` bytes free counts as full too."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, sqlite3.Error):
            code = getattr(cur, "sqlite_errorcode", None)
            if code is not None and code & 0xFF == sqlite3.SQLITE_FULL:
                return True
            if "database or disk is full" in str(cur):
                return True
            if code is not None and code & 0xFF == sqlite3.SQLITE_IOERR and path is not None:
                free = free_bytes(path)
                if free is not None and free < NEARLY_FULL:
                    return True
        if isinstance(cur, OSError) and cur.errno in _FULL_ERRNOS:
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def free_bytes(path: Path) -> int | None:
    """Bytes free on the filesystem holding ``path`` (its nearest existing parent)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def human(n: int | None) -> str:
    if n is None:
        return "unknown space"
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"  # pragma: no cover - the loop always returns


def disk_full(path: Path, what: str, exc: BaseException | None = None) -> DiskFull:
    """The error to raise when writing ``what`` under ``path`` found the disk full."""
    free = free_bytes(path)
    where = os.fspath(path)
    detail = f" ({exc})" if exc is not None else ""
    return DiskFull(
        f"the disk holding {where} is full ({human(free)} free): {what} could not be "
        f"written{detail}",
        path=where,
        free=free,
        hint="free space on that disk (or move the directory there and point handrail at "
        "the new place), then run the same command again: it resumes where it stopped",
    )
