"""A disk that fills up during a run: a clear message (which path, how much is free), exit
1, the journal consistent, and after space is freed the same command resumes to exactly the
state of an uninterrupted run (judged with tests/digests.py, not handrail's fingerprint).

The disks are real: small tmpfs mounts (root in CI), filled with a filler file that leaves
a chosen number of bytes free. Each test runs a few fill levels by default; set
``HANDRAIL_DISK_FULL_TRIALS=N`` for N levels between "nothing free" and "almost enough".
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from handrail.engine.journal import Journal
from handrail.model import RunStatus

from .digests import sqlite_digest
from .helpers import cli_proc, make_items_db, write

TRIALS = int(os.environ.get("HANDRAIL_DISK_FULL_TRIALS", "3"))
KIB = 1024


def levels(most: int) -> list[int]:
    """Bytes to leave free: 0, then evenly up to ``most``."""
    if TRIALS <= 1:
        return [0]
    return [round(i * most / (TRIALS - 1)) for i in range(TRIALS)]


RUNBOOK = """
from pathlib import Path
from handrail import Backfill, Gate, Runbook, SQLite
db = SQLite("items", Path({db!r}))
runbook = Runbook("grow", steps=[
    Backfill("fill names", db, table="items", key="id", columns=["name"],
             compute=lambda r: {{"name": r["name"] + " " + "x" * 400}}, batch_size=25,
             gates=[Gate("look", at="plan", approval=True)]),
])
"""


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs of its own, unmounted after the test."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Write a filler file until only ``leave`` bytes are free on ``disk``."""
    filler = disk / "filler"
    chunk = b"\0" * (64 * KIB)
    with filler.open("ab") as f:
        try:
            while (room := shutil.disk_usage(disk).free - leave) > 0:
                f.write(chunk[: min(len(chunk), room)])
                f.flush()
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return filler


def reference(tmp_path: Path, n: int) -> dict[str, object]:
    """The digest after an uninterrupted run on a copy of the same data."""
    ref = tmp_path / "reference"
    ref.mkdir()
    db = make_items_db(ref / "items.db", n)
    rb = write(ref / "rb.py", RUNBOOK.format(db=str(db)))
    done = cli_proc("run", rb, "--yes")
    assert done.returncode == 0, done.stderr
    return sqlite_digest(db, include_handrail=False)


def assert_clear(got: subprocess.CompletedProcess[str], where: Path) -> None:
    assert got.returncode == 1, (got.stdout, got.stderr)
    assert "Traceback" not in got.stderr
    assert f"the disk holding {where}" in got.stderr, got.stderr
    assert "free)" in got.stderr
    assert "run the same command again" in got.stderr


N = 300


@pytest.mark.parametrize("leave", levels(160 * KIB))
def test_state_directory_disk_fills_mid_run_then_resumes(
    tmp_path: Path, tmpfs: Path, leave: int
) -> None:
    want = reference(tmp_path, N)
    db = make_items_db(tmp_path / "items.db", N)
    state = tmpfs / "state"
    rb = write(tmp_path / "rb.py", RUNBOOK.format(db=str(db)))
    env = {"HANDRAIL_STATE_DIR": str(state)}
    paused = cli_proc("run", rb, "--no-input", env=env)  # backups taken, paused at plan
    assert paused.returncode == 3, paused.stderr
    filler = fill(tmpfs, leave)
    full = cli_proc("run", rb, "--yes", env=env)
    print(f"left {leave} bytes free: exit {full.returncode}")
    assert leave > 0 or full.returncode == 1, full.stderr
    if full.returncode == 0:
        # Enough room after all at this level: nothing to resume, the result must be right.
        assert sqlite_digest(db, include_handrail=False) == want
        return
    assert_clear(full, state / "journal.sqlite")
    filler.unlink()
    # The journal is consistent: it opens, and the run is resumable.
    journal = Journal(state)
    run = journal.runs()[-1]
    assert run.status in (RunStatus.RUNNING, RunStatus.PAUSED, RunStatus.FAILED)
    assert journal.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    journal.close()
    resumed = cli_proc("run", rb, "--yes", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert sqlite_digest(db, include_handrail=False) == want
    undone = cli_proc("rollback", run.id, "--state-dir", str(state))
    assert undone.returncode == 0, undone.stderr
    assert sqlite_digest(db, include_handrail=False) == sqlite_digest(
        make_items_db(tmp_path / "fresh.db", N), include_handrail=False
    )


def test_state_directory_disk_full_from_the_start(tmp_path: Path, tmpfs: Path) -> None:
    db = make_items_db(tmp_path / "items.db", 20)
    before = sqlite_digest(db)
    state = tmpfs / "state"
    state.mkdir()
    rb = write(tmp_path / "rb.py", RUNBOOK.format(db=str(db)))
    filler = fill(tmpfs, 0)
    full = cli_proc("run", rb, "--yes", "--state-dir", str(state))
    assert_clear(full, state / "journal.sqlite")
    assert sqlite_digest(db) == before
    filler.unlink()
    done = cli_proc("run", rb, "--yes", "--state-dir", str(state))
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("leave", levels(96 * KIB))
def test_data_disk_fills_mid_run_then_resumes(tmp_path: Path, tmpfs: Path, leave: int) -> None:
    want = reference(tmp_path, N)
    db = make_items_db(tmpfs / "items.db", N)
    rb = write(tmp_path / "rb.py", RUNBOOK.format(db=str(db)))
    state = tmp_path / "state"
    paused = cli_proc("run", rb, "--no-input", "--state-dir", str(state))
    assert paused.returncode == 3, paused.stderr
    filler = fill(tmpfs, leave)
    full = cli_proc("run", rb, "--yes", "--state-dir", str(state))
    print(f"left {leave} bytes free: exit {full.returncode}")
    assert leave > 0 or full.returncode == 1, full.stderr
    if full.returncode != 0:
        assert full.returncode == 1, full.stderr
        assert "Traceback" not in full.stderr
        # Which disk is full, what could not be written, and how to resume.
        said = " ".join(full.stderr.split())
        assert f"the disk holding {db} is full" in said, said
        assert "step 'fill names'" in said
        assert "run the same command again" in said
        with sqlite3.connect(db) as conn:  # the target is consistent: it opens, checks ok
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        filler.unlink()
        resumed = cli_proc("run", rb, "--yes", "--state-dir", str(state))
        assert resumed.returncode == 0, resumed.stderr
    assert sqlite_digest(db, include_handrail=False) == want


RETIRE = """
from pathlib import Path
from handrail import Runbook, SQLite
from handrail.steps.sql import SQL
db = SQLite("items", Path({db!r}))
runbook = Runbook("retire", steps=[
    SQL("retire old", db, up="UPDATE items SET status='retired' WHERE status='old'",
        down="UPDATE items SET status='old' WHERE status='retired'"),
])
"""


@pytest.mark.parametrize("leave", levels(64 * KIB))
def test_backups_restore_on_a_full_state_disk_changes_nothing(
    tmp_path: Path, tmpfs: Path, leave: int
) -> None:
    db = make_items_db(tmp_path / "items.db", 200)
    original = sqlite_digest(db)
    state = tmpfs / "state"
    rb = write(tmp_path / "rb.py", RETIRE.format(db=str(db)))
    done = cli_proc("run", rb, "--yes", "--state-dir", str(state))
    assert done.returncode == 0, done.stderr
    after_run = sqlite_digest(db)
    filler = fill(tmpfs, leave)
    full = cli_proc("backups", "restore", str(rb), "--yes", "--state-dir", str(state))
    print(f"left {leave} bytes free: exit {full.returncode}")
    assert leave > 0 or full.returncode == 1, full.stderr
    if full.returncode != 0:
        assert_clear(full, state)
        assert sqlite_digest(db) == after_run  # the pre-restore snapshot came first
        filler.unlink()
        full = cli_proc("backups", "restore", str(rb), "--yes", "--state-dir", str(state))
    assert full.returncode == 0, full.stderr
    assert sqlite_digest(db) == original
