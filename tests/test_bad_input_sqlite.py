"""A SQLite database that cannot be used as it is: `plan` and `run --yes` exit 2 before the
first change, naming the database file and what to do, and no data path changes.

The runbook first rewrites a JSON file, then updates the database: a fault found only when
the second step runs would leave the first one's change behind (the old behaviour)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .digests import unchanged
from .helpers import make_items_db, write
from .sqlite_faults import (
    as_nobody,
    chown_nobody,
    immutable,
    is_hot,
    kill_inside_transaction,
    lock_held,
    read_only_mount,
    remount_ro,
)

SRC = str(Path(__file__).resolve().parent.parent / "src")

RUNBOOK = """
from pathlib import Path
from handrail import JSONFile, Runbook, SQL, SQLite, TransformJSON
here = Path(__file__).parent
settings = JSONFile("settings", here / "settings.json")
db = SQLite("db", here / "{db}")
runbook = Runbook("bad-sqlite", steps=[
    TransformJSON("bump", settings, lambda old: {{**old, "version": old["version"] + 1}}),
    SQL("mark", db, up="UPDATE items SET status='seen'",
        down="UPDATE items SET status=CASE WHEN id % 3 THEN 'new' ELSE 'old' END"),
])
"""


@dataclass
class Case:
    """One fault: where the database lives, how to break it, what the message must say."""

    db: str  # relative to the project
    expect: list[str]  # substrings of the message ({pid} is the lock holder's pid)
    #: (project, db, stack) -> make the fault's files (stack: cleanups for the whole test)
    breaks: Callable[[Path, Path, ExitStack], None]
    nobody: bool = False
    #: (db, stack) -> the lock holder's pid: what holds while the commands run (a lock,
    #: chattr +i, a read-only mount); digests are taken outside it (a lock blocks reading)
    hold: Callable[[Path, Path, ExitStack], int | None] | None = None
    data: list[str] = field(default_factory=list)  # extra data paths to watch
    watch_db: bool = True  # False when sqlite_digest cannot read it (a parent is watched)


def _items(project: Path, db: Path, stack: ExitStack) -> None:
    make_items_db(db)


def _items_in_sub(project: Path, db: Path, stack: ExitStack) -> None:
    db.parent.mkdir()
    make_items_db(db)


def _locked(begin: str) -> Callable[[Path, Path, ExitStack], int | None]:
    def hold(project: Path, db: Path, stack: ExitStack) -> int | None:
        return stack.enter_context(lock_held(db, begin))

    return hold


def _immutable_file(project: Path, db: Path, stack: ExitStack) -> None:
    stack.enter_context(immutable(db))


def _immutable_dir(project: Path, db: Path, stack: ExitStack) -> None:
    stack.enter_context(immutable(db.parent))


def _immutable_json(project: Path, db: Path, stack: ExitStack) -> None:
    stack.enter_context(immutable(project / "settings.json"))


def _on_tmpfs(project: Path, db: Path, stack: ExitStack) -> None:
    stack.enter_context(read_only_mount(db.parent))
    make_items_db(db)


def _remounted_ro(project: Path, db: Path, stack: ExitStack) -> None:
    remount_ro(db.parent)


def _nobody_file_of_root(project: Path, db: Path, stack: ExitStack) -> None:
    make_items_db(db)
    os.chmod(db, 0o644)
    for p in (project, project / "settings.json", project / "rb.py"):
        chown_nobody(p)


def _nobody_dir_of_root(project: Path, db: Path, stack: ExitStack) -> None:
    db.parent.mkdir(mode=0o755)
    make_items_db(db)
    for p in (project, project / "settings.json", project / "rb.py", db):
        chown_nobody(p)


def _random_bytes(project: Path, db: Path, stack: ExitStack) -> None:
    db.write_bytes(os.urandom(8192))


def _truncated(project: Path, db: Path, stack: ExitStack) -> None:
    db.parent.mkdir()
    make_items_db(db, n=3000)
    size = db.stat().st_size
    with db.open("r+b") as f:
        f.truncate(size // 2)


def _directory(project: Path, db: Path, stack: ExitStack) -> None:
    db.mkdir()
    (db / "keep.txt").write_text("not a database\n")


def _missing(project: Path, db: Path, stack: ExitStack) -> None:
    pass


def _wal_no_shm(project: Path, db: Path, stack: ExitStack) -> None:
    db.parent.mkdir()
    make_items_db(db)
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    assert not Path(f"{db}-shm").exists()


def _hot_journal(project: Path, db: Path, stack: ExitStack) -> None:
    db.parent.mkdir()
    make_items_db(db, n=3000)
    kill_inside_transaction(db, "UPDATE items SET name = name || ' changed by a dead writer'")
    assert is_hot(db)


CASES: dict[str, Case] = {
    "locked-exclusive": Case(
        "x.db",
        ["x.db", "locked by pid {pid}", "stop that process"],
        _items,
        hold=_locked("BEGIN EXCLUSIVE"),
    ),
    "locked-writer": Case(
        "x.db",
        ["x.db", "locked by pid {pid}", "wait until"],
        _items,
        hold=_locked("BEGIN IMMEDIATE"),
    ),
    "immutable-file": Case(
        "x.db", ["x.db", "cannot be written", "chattr -i"], _items, hold=_immutable_file
    ),
    "immutable-directory": Case(
        "sub/x.db",
        ["x.db-journal", "/sub cannot be written", "chattr -i"],
        _items_in_sub,
        hold=_immutable_dir,
        data=["sub"],
    ),
    "read-only-mount": Case(
        "ro/x.db",
        ["ro/x.db", "Read-only file system", "remount"],
        _on_tmpfs,
        hold=_remounted_ro,
        data=["ro"],
    ),
    "nobody-file-of-root": Case(
        "x.db", ["x.db", "Permission denied", "uid 65534"], _nobody_file_of_root, nobody=True
    ),
    "nobody-directory-of-root": Case(
        "sub/x.db",
        ["x.db-journal", "/sub cannot be written", "uid 65534"],
        _nobody_dir_of_root,
        nobody=True,
        data=["sub"],
    ),
    "not-a-database": Case(
        "x.db", ["x.db", "not a usable SQLite database", "restore it from a backup"], _random_bytes
    ),
    # sqlite_digest cannot read a truncated file: its directory's tree digest watches it
    "truncated": Case(
        "sub/x.db", ["x.db", "restore it from a backup"], _truncated, data=["sub"], watch_db=False
    ),
    "directory-in-its-place": Case(
        "x.db", ["x.db", "is a directory", "database file itself"], _directory
    ),
    "missing": Case("x.db", ["x.db", "does not exist", "check the path"], _missing),
    "wal-shm-cannot-be-created": Case(
        "sub/x.db", ["x.db", "-shm", "chattr -i"], _wal_no_shm, hold=_immutable_dir, data=["sub"]
    ),
    "hot-journal-cannot-be-recovered": Case(
        "sub/x.db",
        ["x.db", "interrupted transaction", "writable", "do not delete the journal"],
        _hot_journal,
        hold=_immutable_dir,
        data=["sub"],
        watch_db=False,  # a hot journal stops read-only opens: the tree digest watches it
    ),
    "json-written-first-is-immutable": Case(
        "x.db", ["settings.json", "cannot be written", "chattr -i"], _items, hold=_immutable_json
    ),
}


@contextmanager
def project_dir() -> Iterator[Path]:
    """A world-traversable project (pytest's tmp_path is 0700: nobody could not enter)."""
    root = Path(tempfile.mkdtemp(prefix="handrail-bad-sqlite-", dir="/tmp"))
    os.chmod(root, 0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def handrail(project: Path, *args: str, nobody: bool) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "handrail.cli", *args]
    env = os.environ | {"PYTHONPATH": SRC, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [*(as_nobody() if nobody else []), *cmd],
        cwd=project,
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("name", list(CASES))
def test_unusable_database_is_refused_before_any_change(name: str) -> None:
    case = CASES[name]
    with project_dir() as project, ExitStack() as cleanup:
        write(project / "settings.json", '{"version": 1}\n')
        write(project / "rb.py", RUNBOOK.format(db=case.db))
        db = project / case.db
        case.breaks(project, db, cleanup)
        watched = [project / "settings.json", *(project / d for d in case.data)]
        watched += [db] if case.watch_db else []
        with unchanged(*watched), ExitStack() as holding:
            pid = case.hold(project, db, holding) if case.hold else None
            for command in (["plan", "rb.py"], ["run", "rb.py", "--yes"]):
                done = handrail(project, *command, nobody=case.nobody)
                out = done.stdout + done.stderr
                assert done.returncode == 2, (command, out)
                for text in case.expect:
                    assert text.format(pid=pid) in out, (command, text, out)
                assert "Traceback" not in out, out
        backups = project / ".handrail" / "backups"
        assert not backups.exists() or not any(backups.iterdir()), "the run took a backup"
