"""kill -9 at every other journal commit (and at random instants) during a run and during
a rollback: `handrail run` / `handrail rollback` must resume and end exactly where an
uninterrupted run ends, and rollback must return every resource to its fingerprint."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from handrail.journal import CRASH_ENV, Journal
from handrail.recipes.json_state.recipe import DB_FILE
from handrail.recipes.json_state.sample import make_sample
from handrail.resources import Directory, SQLite

from .helpers import cli_proc, write

RUNBOOK = """
from pathlib import Path
from handrail.recipes.json_state.recipe import build
runbook = build(Path(__file__).parent / "data", batch_size=60, max_reject_share=0.05)
"""
STRIDE = int(os.environ.get("HANDRAIL_CRASH_STRIDE", "3"))  # 1: every commit


def state(root: Path) -> dict[str, Any]:
    data = root / "data"
    return {
        "db": SQLite("db", data / DB_FILE, create=True).fingerprint().digest,
        "files": Directory("d", data, exclude=[DB_FILE, f"{DB_FILE}-*"]).fingerprint().digest,
    }


def rejects(root: Path) -> list[tuple[str, str, str]]:
    journal = Journal(root / ".handrail")
    run = journal.runs()[-1]
    out = sorted((r["step"], r["key"], r["reason"]) for r in journal.rejects(run.id))
    journal.close()
    return out


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("crash-template")
    make_sample(root / "data", executions=300, seed=3)
    write(root / "runbook.py", RUNBOOK)
    return root


@pytest.fixture(scope="module")
def reference(template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("crash-reference") / "w"
    shutil.copytree(template, root)
    original = state(root)
    done = cli_proc("run", root / "runbook.py", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    final = state(root)
    assert final != original
    journal = Journal(root / ".handrail")
    commits = journal.conn.execute("SELECT count(*) FROM events").fetchone()[0]
    journal.close()
    return {"original": original, "final": final, "rejects": rejects(root), "events": commits}


def fresh(template: Path, tmp_path: Path) -> Path:
    root = tmp_path / "w"
    shutil.copytree(template, root)
    return root


def count_commits(template: Path, tmp_path: Path, *args: str) -> int:
    """How many journal commits a command makes: crash at N until it survives."""
    lo, hi = 1, 4096
    while lo < hi:
        mid = (lo + hi) // 2
        root = fresh(template, tmp_path / f"probe{mid}")
        if args[0] == "rollback":
            assert cli_proc("run", root / "runbook.py", "--yes").returncode == 0
        r = cli_proc(
            *args,
            root / "runbook.py",
            "--yes" if args[0] == "run" else "--force",
            env={CRASH_ENV: str(mid)},
        )
        if r.returncode == -signal.SIGKILL:
            lo = mid + 1
        else:
            hi = mid
    return lo


def test_kill_at_journal_commits_then_resume(
    template: Path, reference: dict[str, Any], tmp_path: Path
) -> None:
    total = count_commits(template, tmp_path, "run")
    assert total > 50  # the run really has many journalled transitions
    points = list(range(1, total, STRIDE))
    for n in points:
        root = fresh(template, tmp_path / f"at{n}")
        killed = cli_proc("run", root / "runbook.py", "--yes", env={CRASH_ENV: str(n)})
        assert killed.returncode == -signal.SIGKILL, (n, killed.stdout, killed.stderr)
        resumed = cli_proc("run", root / "runbook.py", "--yes")
        assert resumed.returncode == 0, (n, resumed.stdout, resumed.stderr)
        assert state(root) == reference["final"], f"crash at commit {n}: final state differs"
        assert rejects(root) == reference["rejects"], f"crash at commit {n}: rejects differ"
        journal = Journal(root / ".handrail")
        runs = journal.runs()
        # A crash after the run was marked completed leaves nothing to resume: the second
        # `run` is a new run that finds nothing to do. Otherwise the same run resumed.
        assert len(runs) == 1 or (len(runs) == 2 and runs[0].status.value == "completed"), n
        run_id = runs[0].id
        # No batch applied twice: every batch is done exactly once in the journal.
        dupes = journal.conn.execute(
            "SELECT count(*) FROM batches WHERE run_id=? AND status != 'done'", (run_id,)
        ).fetchone()[0]
        assert dupes == 0
        journal.close()
        # Every third point: also roll back, and land on the original fingerprints.
        if n % (3 * STRIDE) == 1:
            undone = cli_proc("rollback", root / "runbook.py")
            assert undone.returncode == 0, (n, undone.stdout, undone.stderr)
            assert state(root) == reference["original"]


def test_kill_during_rollback_then_rollback_again(
    template: Path, reference: dict[str, Any], tmp_path: Path
) -> None:
    total = count_commits(template, tmp_path, "rollback")
    for n in range(1, total, max(1, STRIDE + 1)):
        root = fresh(template, tmp_path / f"rb{n}")
        assert cli_proc("run", root / "runbook.py", "--yes").returncode == 0
        killed = cli_proc("rollback", root / "runbook.py", env={CRASH_ENV: str(n)})
        assert killed.returncode == -signal.SIGKILL
        again = cli_proc("rollback", root / "runbook.py")
        assert again.returncode == 0, (n, again.stdout, again.stderr)
        assert state(root) == reference["original"], f"crash at rollback commit {n}"


@pytest.mark.parametrize("seed", [11, 12, 13, 14])
def test_kill_at_random_instants(
    template: Path, reference: dict[str, Any], tmp_path: Path, seed: int
) -> None:
    """SIGKILL from outside at a random time, not only between journal commits."""
    rng = random.Random(seed)
    root = fresh(template, tmp_path / "w")
    for attempt in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-m", "handrail.cli", "run", str(root / "runbook.py"), "--yes"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.15, 0.9))
        proc.send_signal(signal.SIGKILL)
        code = proc.wait(timeout=60)
        if code == 0:
            break
        assert code == -signal.SIGKILL, f"attempt {attempt}: exit {code}"
    resumed = cli_proc("run", root / "runbook.py", "--yes")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert state(root) == reference["final"]
    assert rejects(root) == reference["rejects"]
    undone = cli_proc("rollback", root / "runbook.py")
    assert undone.returncode == 0, undone.stdout + undone.stderr
    assert state(root) == reference["original"]
