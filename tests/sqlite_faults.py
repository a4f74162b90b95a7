"""Real SQLite faults for tests: a hot journal left by a kill -9 inside a commit, a lock
held by another process, an immutable file, a read-only mount. No mocks: real files,
real processes, real flags."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")

_HOT_JOURNAL = """
import os, signal, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute(sys.argv[2])
# a tiny cache and 1 MiB more of dirty pages evict the change's pages into the file
conn.execute("PRAGMA cache_size=1")
conn.execute("CREATE TABLE _handrail_crash_pad (b BLOB)")
conn.execute("INSERT INTO _handrail_crash_pad VALUES (zeroblob(1048576))")
os.kill(os.getpid(), signal.SIGKILL)
"""


def kill_inside_transaction(db: Path, sql: str) -> None:
    """Run ``sql`` in a transaction in another process and SIGKILL it before COMMIT, after
    SQLite wrote the changed pages into the file: a genuine hot journal (or, in WAL mode,
    uncommitted frames in the -wal)."""
    proc = subprocess.run([sys.executable, "-c", _HOT_JOURNAL, str(db), sql], check=False)
    assert proc.returncode == -signal.SIGKILL, proc


def is_hot(db: Path) -> bool:
    """A read-only open fails the way it does with a hot journal, and the journal is one."""
    journal = Path(f"{db}-journal")
    if not journal.is_file() or journal.read_bytes()[:8] != JOURNAL_MAGIC:
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as exc:
        return getattr(exc, "sqlite_errorname", "") == "SQLITE_READONLY_ROLLBACK"
    return False


_HOLD = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)
conn.execute(sys.argv[2])
conn.execute("UPDATE items SET status = status WHERE id = 1")
print("held", flush=True)
time.sleep(300)
"""


@contextmanager
def lock_held(db: Path, begin: str = "BEGIN EXCLUSIVE") -> Iterator[int]:
    """Another process holding a SQLite lock on ``db``; yields its pid."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(db), begin], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def chattr(flag: str, *paths: Path) -> None:
    subprocess.run(["chattr", flag, *map(str, paths)], check=True)


@contextmanager
def immutable(*paths: Path) -> Iterator[None]:
    """``chattr +i``: even root cannot write, rename or create inside."""
    chattr("+i", *paths)
    try:
        yield
    finally:
        chattr("-i", *paths)


@contextmanager
def read_only_mount(where: Path) -> Iterator[Path]:
    """A tmpfs at ``where``: filled by the caller inside the block, then remounted ro."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def remount_ro(where: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)


def as_nobody() -> list[str]:
    """The command prefix that runs a process as uid/gid 65534 without supplementary groups."""
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def chown_nobody(*paths: Path) -> None:
    for p in paths:
        os.chown(p, 65534, 65534)
