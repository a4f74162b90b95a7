"""kill -9 at every other journal commit (and at random instants) during a run and during
a rollback: `handrail run` / `handrail rollback` must resume and end exactly where an
uninterrupted run ends, and rollback must return every resource to its fingerprint."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from handrail.engine.journal import CRASH_ENV, Journal
from handrail.recipes.json_state.recipe import DB_FILE
from handrail.recipes.json_state.sample import make_sample
from handrail.resources import Directory, SQLite
from handrail.resources.sqlite import CRASH_IN_COMMIT_ENV, EVIDENCE_INFIX
from handrail.testing.postgres import TempCluster

from .digests import pg_digest, sqlite_digest, tree_digest
from .helpers import cli_proc, write
from .sqlite_faults import is_hot

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


# -- kill -9 inside SQLite commits: a hot journal left behind, for every recipe ----------
#
# HANDRAIL_TEST_CRASH_IN_COMMIT=N makes the N-th COMMIT on a target SQLite connection spill
# its pages into the database file and SIGKILL itself: the file holds half a transaction
# and a hot journal. Trials: commits 1, 1+S, 1+2S, ... (S = HANDRAIL_CRASH_COMMIT_STRIDE,
# default 4), HANDRAIL_CRASH_COMMIT_TRIALS of them (default 3), until a run no longer
# reaches the N-th commit. Judged with tests/digests.py, never with handrail's fingerprint.
COMMIT_TRIALS = int(os.environ.get("HANDRAIL_CRASH_COMMIT_TRIALS", "3"))
COMMIT_STRIDE = int(os.environ.get("HANDRAIL_CRASH_COMMIT_STRIDE", "4"))


def commit_points() -> list[int]:
    return [1 + k * COMMIT_STRIDE for k in range(COMMIT_TRIALS)]


def user_data(dbs: list[Path], trees: list[Path], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """What the user owns: SQLite rows (handrail's tables left out) and file trees (entries
    whose name starts with ``drop`` left out: the databases, read through their rows)."""
    out: dict[str, Any] = {}  # keyed by name: worlds live in different directories
    for db in dbs:
        out[db.name] = sqlite_digest(db, include_handrail=False) if db.exists() else None
    for i, tree in enumerate(trees):
        out[f"tree {i}"] = {
            k: v
            for k, v in tree_digest(tree).items()
            if not any(part.startswith(drop) for part in k.split("/"))
        }
    return out


class World:
    """A fresh copy of a recipe's sample: its root (runbook.py inside), the databases the
    run writes, what digests the user's data, and the environment its runbook reads."""

    def __init__(
        self,
        root: Path,
        dbs: list[Path],
        data: Callable[[], dict[str, Any]],
        env: dict[str, str] | None = None,
    ) -> None:
        self.root, self.dbs, self.data, self.env = root, dbs, data, env or {}

    def run(
        self, *extra: str, crash_at: int | None = None, crash_env: str = CRASH_IN_COMMIT_ENV
    ) -> subprocess.CompletedProcess[str]:
        env = self.env | ({crash_env: str(crash_at)} if crash_at else {})
        return cli_proc("run", self.root / "runbook.py", "--yes", *extra, env=env)


def kill_in_commits_then_resume(
    fresh_world: Callable[[int], World], *extra: str, crash_env: str = CRASH_IN_COMMIT_ENV
) -> int:
    """For each commit point: a fresh world, a run killed inside that commit (a hot journal
    checked for, when the kill is inside a SQLite commit), a resume, and the uninterrupted
    run's data. Returns how many runs were killed."""
    inside_sqlite = crash_env == CRASH_IN_COMMIT_ENV
    reference = fresh_world(0)
    done = reference.run(*extra)
    assert done.returncode == 0, done.stdout + done.stderr
    expected = reference.data()
    killed_runs = 0
    for n in commit_points():
        world = fresh_world(n)
        killed = world.run(*extra, crash_at=n, crash_env=crash_env)
        if killed.returncode == 0:
            break  # the run makes fewer than n commits: the campaign is over
        assert killed.returncode == -signal.SIGKILL, (n, killed.stdout, killed.stderr)
        hot = any(is_hot(db) for db in world.dbs)
        assert hot or not inside_sqlite, f"commit {n}: no hot journal left"
        killed_runs += 1
        resumed = world.run(*extra)
        assert resumed.returncode == 0, (n, resumed.stdout, resumed.stderr)
        assert world.data() == expected, f"killed inside commit {n}: the data differs"
        assert not inside_sqlite or any(
            any(db.parent.glob(f"{db.name}-journal{EVIDENCE_INFIX}*")) for db in world.dbs
        ), f"commit {n}: no copy of the hot journal kept"
    assert killed_runs >= 1
    return killed_runs


def test_json_state_killed_inside_sqlite_commits(template: Path, tmp_path: Path) -> None:
    def world(n: int) -> World:
        root = fresh(template, tmp_path / f"commit{n}")
        db = root / "data" / DB_FILE
        return World(root, [db], lambda: user_data([db], [root / "data"], drop=(DB_FILE,)))

    kill_in_commits_then_resume(world)


DHASH_RUNBOOK = """
from pathlib import Path
from handrail.recipes.dhash.recipe import build
runbook = build(Path(__file__).parent, max_failure_rate=0.2)  # the sample plants 5 broken
"""


def dhash_data(root: Path) -> dict[str, Any]:
    """The library with its one run-clock stamp set aside (it differs from run to run,
    and a resumed run must keep one stamp), plus every other file."""
    images = json.loads((root / "library.json").read_text())["images"]
    stamps = {i.pop("dhash_generated_at", None) for i in images}
    rest = user_data([], [root], drop=(".handrail", "runbook", "library.json"))
    return rest | {"images": images, "stamps": len(stamps)}


def test_dhash_killed_at_its_commits(tmp_path: Path) -> None:
    """The dHash recipe writes no SQLite database of the user's (only library.json, by an
    atomic rename; its hash store is the run's own state): its commits are killed at the
    journal commits around the hashing and the rename instead."""
    from handrail.images.sample import make_sample_library

    def world(n: int) -> World:
        # One place for every world: the library lists its images by absolute path.
        root = tmp_path / "dhash"
        if root.exists():
            root.rename(tmp_path / f"dhash-before-{n}")
        make_sample_library(root, count=40, seed=7)
        write(root / "runbook.py", DHASH_RUNBOOK)
        return World(root, [], lambda: dhash_data(root))

    kill_in_commits_then_resume(world, crash_env=CRASH_ENV)


DOMAINS_RUNBOOK = """
import os
from pathlib import Path
from handrail.recipes.domains.recipe import build
runbook = build(Path(__file__).parent, peertube_url=os.environ["PEERTUBE_URL"],
                peertube_dsn=os.environ["HANDRAIL_DEMO_PG_DSN"], stages=(100, 300, None),
                reprocess_stages=(10, 50, None))
"""
MERGE_RUNBOOK = """
import os
from pathlib import Path
from handrail.recipes.merge.recipe import build
runbook = build(Path(__file__).parent, dsn=os.environ["HANDRAIL_DEMO_PG_DSN"],
                rows_per_batch=100)
"""


@pytest.mark.postgres
def test_domains_killed_inside_sqlite_commits(pg_cluster: TempCluster, tmp_path: Path) -> None:
    """recon.db (rollback journal) is killed inside its commits; PeerTube's API and
    database go on through the HTTP push's own journalled idempotence."""
    from handrail.recipes.domains.sample import make_sample
    from handrail.testing.peertube import PeerTubeServer

    token = "tok-crash-in-commit"
    with ExitStack() as servers:

        def world(n: int) -> World:
            root = tmp_path / f"domains{n}"
            dsn = pg_cluster.create_database(f"crash_domains_{n}_{os.getpid()}")
            servers.callback(pg_cluster.drop_database, f"crash_domains_{n}_{os.getpid()}")
            make_sample(root, documents=400, seed=3, pg_dsn=dsn)
            write(root / "runbook.py", DOMAINS_RUNBOOK)
            server = servers.enter_context(PeerTubeServer(dsn, token=token))
            recon = root / "recon.db"
            env = {"HANDRAIL_DEMO_PG_DSN": dsn, "PEERTUBE_URL": server.url}
            env["PEERTUBE_TOKEN"] = token

            def data() -> dict[str, Any]:
                return user_data([recon], [root / "concepts"]) | {"pg": pg_digest(dsn)}

            return World(root, [recon], data, env)

        kill_in_commits_then_resume(world, "--allow-destructive")


@pytest.mark.postgres
def test_merge_killed_inside_sqlite_commits(pg_cluster: TempCluster, tmp_path: Path) -> None:
    """merged.db, the staging database the merge writes (rollback journal), is killed
    inside its commits; the PostgreSQL copy after it resumes through its own ledger."""
    from handrail.recipes.merge.sample import make_sample

    with ExitStack() as dbs:

        def world(n: int) -> World:
            root = tmp_path / f"merge{n}"
            name = f"crash_merge_{n}_{os.getpid()}"
            dsn = pg_cluster.create_database(name)
            dbs.callback(pg_cluster.drop_database, name)
            make_sample(root, videos=600, seed=2)
            write(root / "runbook.py", MERGE_RUNBOOK)
            files = [root / f for f in ("merged.db", "processing.db", "dashboard.db")]

            def data() -> dict[str, Any]:
                switch = tree_digest(root / "read_switch.json")
                return user_data(files, []) | {"pg": pg_digest(dsn), "switch": switch}

            return World(root, [root / "merged.db"], data, {"HANDRAIL_DEMO_PG_DSN": dsn})

        kill_in_commits_then_resume(world)
