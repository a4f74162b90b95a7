"""QuarantineDelete on real files and SQLite: renames into the run's quarantine, exact
rollback, re-queued rows in the same batch, kill -9 in the middle, conflicts, another
filesystem, and `handrail purge`."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from handrail import (
    BadInput,
    Directory,
    Gate,
    PolicyError,
    Runbook,
    RunbookError,
    RunStatus,
    SQLite,
    StepContext,
    Tier,
)
from handrail.engine.executor import plan_runbook
from handrail.engine.journal import CRASH_ENV
from handrail.steps.quarantine import QuarantineDelete, RowUpdate, purge_quarantine

from .digests import tree_digest
from .helpers import cli, cli_proc, make_executor, write

STALE = "SELECT hash FROM documents WHERE recon_domain_status='needs_reprocess' ORDER BY hash"


def make_recon(root: Path, n: int = 12) -> tuple[Directory, SQLite]:
    """concepts/<hash>/window_NNNN.json for n documents; every second one is stale, and
    one stale document has no concept directory at all."""
    concepts = root / "concepts"
    root.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(root / "recon.db")
    conn.execute(
        "CREATE TABLE documents (hash TEXT PRIMARY KEY, status TEXT, recon_domain_status TEXT)"
    )
    for i in range(n):
        h = f"h{i:03d}"
        stale = i % 2 == 0
        conn.execute(
            "INSERT INTO documents VALUES (?,?,?)",
            (h, "complete", "needs_reprocess" if stale else "assigned"),
        )
        if i == 4:
            continue  # stale, and its concepts are missing altogether
        d = concepts / h
        d.mkdir(parents=True)
        for w in range(i % 3 + 1):
            (d / f"window_{w:04d}.json").write_text(
                json.dumps([{"name": f"c{i}.{w}", "domain": ["Medical", "Water Systems"][w % 2]}])
            )
        if i == 2:
            (d / "extra").mkdir(mode=0o700)
            (d / "extra" / "notes.txt").write_bytes(b"\x00binary\xff" * 100)
            os.chmod(d / "extra" / "notes.txt", 0o600)
            (d / "latest.json").symlink_to("window_0000.json")
        if i == 6:
            os.chmod(d, 0o555)
    conn.commit()
    conn.close()
    return Directory("concepts", concepts), SQLite("recon", root / "recon.db")


def stale_hashes(db: SQLite) -> Any:
    def select(ctx: StepContext) -> list[str]:
        return [h for (h,) in ctx.use(db).query(STALE)]

    return select


#: the run options of `handrail run --yes --allow-destructive`, which these runs need
YES_DESTRUCTIVE = {"auto_approve": True, "allow_destructive": True}


def step(concepts: Directory, db: SQLite, **kw: Any) -> QuarantineDelete:
    kw.setdefault("stages", [2, 3, None])
    kw.setdefault("batch_size", 2)
    kw.setdefault("gates", [Gate("requeued", at="stage")])
    return QuarantineDelete(
        "reprocess missing",
        concepts,
        select=stale_hashes(db),
        on_deleted=RowUpdate(db, table="documents", key="hash", values={"status": "catalogued"}),
        **kw,
    )


def test_moves_by_rename_requeues_and_rolls_back_byte_identical(tmp_path: Path) -> None:
    concepts, db = make_recon(tmp_path)
    before = (concepts.fingerprint(), db.fingerprint())
    s = step(concepts, db)
    assert (s.tier, s.reversible()) == (Tier.DESTRUCTIVE, True)
    inodes = {
        p.name: (p.stat().st_dev, p.stat().st_ino)
        for p in concepts.path.iterdir()
        if int(p.name[1:]) % 2 == 0
    }
    ex = make_executor(Runbook("reprocess", steps=[s]), tmp_path / ".handrail", **YES_DESTRUCTIVE)
    result = ex.run()
    assert result.status is RunStatus.COMPLETED, result.message
    quarantine = tmp_path / ".handrail" / "quarantine" / result.run_id / "reprocess missing"
    moved = sorted(p.name for p in (quarantine / "items").iterdir())
    assert moved == sorted(inodes) == ["h000", "h002", "h006", "h008", "h010"]
    for name, (dev, ino) in inodes.items():
        st = (quarantine / "items" / name).stat()
        assert (st.st_dev, st.st_ino) == (dev, ino)  # a rename, not a copy
        assert not (concepts.path / name).exists()
    assert sorted(p.name for p in concepts.path.iterdir()) == [
        f"h{i:03d}" for i in (1, 3, 5, 7, 9, 11)
    ]
    # The stale documents are re-queued, including h004 whose concepts were missing.
    assert db.query("SELECT hash FROM documents WHERE status='catalogued' ORDER BY 1") == [
        (h,) for h in ("h000", "h002", "h004", "h006", "h008", "h010")
    ]
    sizes = [len(items) for _, _, items, _ in ex.journal.batches(result.run_id, s.name)]
    assert sizes == [2, 2, 1, 1]  # stages 2, 3, rest; batches never straddle a stage
    events = [e for e in ex.journal.events(result.run_id) if e["kind"] == "quarantined"]
    assert sorted(e["data"]["path"] for e in events) == moved
    first, second = (
        json.loads((quarantine / "manifests" / f"batch-00000{b}.json").read_text())["items"]
        for b in (0, 1)
    )
    assert first["h002"]["entries"]["latest.json"] == "l 777 window_0000.json"
    assert first["h002"]["entries"]["extra"] == "d 700"
    assert second["h004"] == {"absent": True}

    undone = ex.rollback(result.run_id)
    assert undone.exit_code == 0, undone.conflicts
    assert (concepts.fingerprint(), db.fingerprint()) == before
    assert (concepts.path / "h006").stat().st_mode & 0o777 == 0o555
    assert not quarantine.exists()
    again = ex.rollback(result.run_id)  # idempotent
    assert again.exit_code == 0
    assert (concepts.fingerprint(), db.fingerprint()) == before


def test_plan_counts_files_and_changes_nothing(tmp_path: Path) -> None:
    concepts, db = make_recon(tmp_path)
    before = (concepts.fingerprint().digest, db.fingerprint().digest)
    [(_, plan)] = plan_runbook(Runbook("r", steps=[step(concepts, db)]))
    assert plan.counts == {
        "items": 6,
        "present": 5,
        "absent": 1,
        "files": 1 + 3 + 2 + 1 + 3 + 2,  # h002 has 3 windows + notes.txt + a symlink
        "bytes": plan.counts["bytes"],
    }
    assert {"path": "h004", "absent": 1} in plan.samples
    assert "set status='catalogued' on their rows of documents" in plan.summary
    assert (concepts.fingerprint().digest, db.fingerprint().digest) == before


def test_refuses_without_allow_destructive(tmp_path: Path) -> None:
    concepts, db = make_recon(tmp_path)
    ex = make_executor(Runbook("r", steps=[step(concepts, db)]), tmp_path / "s", auto_approve=True)
    with pytest.raises(PolicyError, match="destructive"):
        ex.run()
    write(tmp_path / "rb.py", RUNBOOK)
    proc = cli_proc("run", tmp_path / "rb.py", "--yes")
    assert proc.returncode == 2
    assert "--allow-destructive" in proc.stderr
    assert len(list(concepts.path.iterdir())) == 11


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["/etc"], "inside"),
        (["h001/../.."], "inside"),
        (["h001", "h001/window_0000.json"], "contains"),
        ([""], "not a relative path"),
    ],
)
def test_bad_selections_are_runbook_errors(tmp_path: Path, args: list[str], match: str) -> None:
    concepts, _ = make_recon(tmp_path, n=2)
    # A fixed list is refused when the step is built, so the runbook does not even load.
    with pytest.raises(RunbookError, match=match):
        QuarantineDelete("q", concepts, select=args)
    # A function's answer is refused when the run's preflight plans it: exit 2, before
    # the first change.
    s = QuarantineDelete("q", concepts, select=lambda _ctx: args)
    ex = make_executor(Runbook("r", steps=[s]), tmp_path / "s", **YES_DESTRUCTIVE)
    before = tree_digest(concepts.path)
    with pytest.raises(BadInput, match=match):
        ex.run()
    assert tree_digest(concepts.path) == before


def test_rollback_leaves_recreated_and_damaged_items_then_force(tmp_path: Path) -> None:
    concepts, db = make_recon(tmp_path)
    before = concepts.fingerprint()
    ex = make_executor(
        Runbook("r", steps=[step(concepts, db)]), tmp_path / ".handrail", **YES_DESTRUCTIVE
    )
    result = ex.run()
    quarantine = tmp_path / ".handrail" / "quarantine" / result.run_id / "reprocess missing"
    # The pipeline made h000 again; someone edited a quarantined file of h008.
    (concepts.path / "h000").mkdir()
    (concepts.path / "h000" / "window_0000.json").write_text("[]")
    (quarantine / "items" / "h008" / "window_0001.json").write_text("tampered")
    undone = ex.rollback(result.run_id)
    assert undone.exit_code == 1
    assert len(undone.conflicts) == 2
    assert any("h000: something new is in its place" in c for c in undone.conflicts)
    assert any("h008: the quarantined copy differs" in c for c in undone.conflicts)
    assert (concepts.path / "h000" / "window_0000.json").read_text() == "[]"  # theirs, kept
    assert (concepts.path / "h002").is_dir()  # the others are back
    forced = ex.rollback(result.run_id, force=True)
    assert forced.exit_code == 0, forced.conflicts
    displaced = quarantine / "displaced" / "h000" / "window_0000.json"
    assert displaced.read_text() == "[]"  # not lost: moved aside
    (concepts.path / "h008" / "window_0001.json").write_text(
        json.dumps([{"name": "c8.1", "domain": "Water Systems"}])
    )
    assert concepts.fingerprint() == before


RUNBOOK = """
from pathlib import Path
from handrail import Directory, Gate, Runbook, SQLite
from handrail.steps.quarantine import QuarantineDelete, RowUpdate

here = Path(__file__).parent
concepts = Directory("concepts", here / "concepts")
db = SQLite("recon", here / "recon.db")

def stale(ctx):
    return [h for (h,) in ctx.use(db).query(
        "SELECT hash FROM documents WHERE recon_domain_status='needs_reprocess' ORDER BY hash")]

runbook = Runbook("reprocess-missing", steps=[
    QuarantineDelete("reprocess missing", concepts, select=stale,
        on_deleted=RowUpdate(db, table="documents", key="hash", values={"status": "catalogued"}),
        stages=[2, 3, None], batch_size=2,
        gates=[Gate("requeued", at="stage", approval=True)]),
])
"""


def quarantined(state: Path) -> str:
    """The digest of what is in quarantine, whatever the run id."""
    [run] = list((state / "quarantine").iterdir())
    return Directory("q", run / "reprocess missing" / "items").fingerprint().digest


# Commit 18 lands between the two renames of the first batch, 20 after its rows committed
# but before the journal heard, 25 between a rename and the rows of the second stage.
@pytest.mark.parametrize("crash_at", [18, 20, 25])
def test_kill_during_quarantine_then_resume(tmp_path: Path, crash_at: int) -> None:
    ref, work = tmp_path / "ref", tmp_path / "work"
    for d in (ref, work):
        d.mkdir()
        make_recon(d)
        write(d / "rb.py", RUNBOOK)
    concepts, db = Directory("c", work / "concepts"), SQLite("d", work / "recon.db")
    original = (concepts.fingerprint(), db.fingerprint())
    done = cli_proc("run", ref / "rb.py", "--yes", "--allow-destructive")
    assert done.returncode == 0, done.stderr
    killed = cli_proc(
        "run", work / "rb.py", "--yes", "--allow-destructive", env={CRASH_ENV: str(crash_at)}
    )
    assert killed.returncode == -signal.SIGKILL
    resumed = cli_proc("run", work / "rb.py", "--yes", "--allow-destructive")
    assert resumed.returncode == 0, resumed.stderr
    assert concepts.fingerprint() == Directory("c", ref / "concepts").fingerprint()
    assert db.fingerprint() == SQLite("d", ref / "recon.db").fingerprint()
    assert quarantined(work / ".handrail") == quarantined(ref / ".handrail")
    assert cli_proc("rollback", work / "rb.py").returncode == 0
    assert (concepts.fingerprint(), db.fingerprint()) == original


# Commits 6 and 9: after the 2nd and the last item moved back, before the step is marked.
@pytest.mark.parametrize("crash_at", [6, 9])
def test_kill_during_rollback_then_finish(tmp_path: Path, crash_at: int) -> None:
    concepts, db = make_recon(tmp_path)
    original = (concepts.fingerprint(), db.fingerprint())
    write(tmp_path / "rb.py", RUNBOOK)
    assert cli_proc("run", tmp_path / "rb.py", "--yes", "--allow-destructive").returncode == 0
    killed = cli_proc("rollback", tmp_path / "rb.py", env={CRASH_ENV: str(crash_at)})
    assert killed.returncode == -signal.SIGKILL
    finished = cli_proc("rollback", tmp_path / "rb.py")
    assert finished.returncode == 0, finished.stderr
    assert (concepts.fingerprint(), db.fingerprint()) == original


@pytest.fixture
def other_fs() -> Iterator[Path]:
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm")
    path = Path(tempfile.mkdtemp(prefix="handrail-test-", dir="/dev/shm"))
    try:
        yield path
    finally:
        import shutil

        shutil.rmtree(path, ignore_errors=True)


def test_another_filesystem_is_refused_unless_copy_is_allowed(
    tmp_path: Path, other_fs: Path
) -> None:
    if other_fs.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("/dev/shm is on the same filesystem as the test directory")
    concepts, db = make_recon(other_fs)
    before = (concepts.fingerprint(), db.fingerprint())
    refused = make_executor(
        Runbook("r", steps=[step(concepts, db)]), tmp_path / "s1", **YES_DESTRUCTIVE
    ).run()
    assert refused.status is RunStatus.FAILED
    assert "another filesystem" in refused.message
    assert (concepts.fingerprint(), db.fingerprint()) == before  # nothing moved
    ex = make_executor(
        Runbook("r", steps=[step(concepts, db, cross_device="copy")]),
        tmp_path / "s2",
        **YES_DESTRUCTIVE,
    )
    result = ex.run()
    assert result.status is RunStatus.COMPLETED, result.message
    assert not (concepts.path / "h000").exists()
    assert ex.rollback(result.run_id).exit_code == 0
    assert (concepts.fingerprint(), db.fingerprint()) == before


def test_copy_mode_resume_finishes_an_interrupted_delete_only(
    tmp_path: Path, other_fs: Path
) -> None:
    """A copy-then-delete stopped part way leaves the original half deleted: resuming
    deletes what is left of it, but never something new in its place."""
    if other_fs.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("/dev/shm is on the same filesystem as the test directory")
    concepts, _ = make_recon(other_fs)
    s = QuarantineDelete("q", concepts, select=["h002", "h008"], cross_device="copy")
    work = tmp_path / "state" / "runs" / "r1"
    ctx = StepContext(run_id="r1", step="q", journal=None, bindings={}, backups={}, work_dir=work)
    assert s.apply_batch(ctx, 0, ["h002", "h008"]) == 2
    items = tmp_path / "state" / "quarantine" / "r1" / "q" / "items"
    # As if killed while deleting: part of h002 is still there; h008 was made anew.
    (concepts.path / "h002").mkdir()
    (concepts.path / "h002" / "window_0001.json").write_bytes(
        (items / "h002" / "window_0001.json").read_bytes()
    )
    (concepts.path / "h008").mkdir()
    (concepts.path / "h008" / "window_0000.json").write_text("new")
    assert s.apply_batch(ctx, 0, ["h002", "h008"]) == 0
    assert not (concepts.path / "h002").exists()
    assert (concepts.path / "h008" / "window_0000.json").read_text() == "new"
    assert [r.key for r in ctx.rejects] == ["h008"]


def _age(state: Path, run_id: str, days: float) -> None:
    """Pretend the run finished ``days`` ago."""
    when = (datetime.now(UTC) - timedelta(days=days)).isoformat().replace("+00:00", "Z")
    conn = sqlite3.connect(state / "journal.sqlite")
    conn.execute("UPDATE runs SET finished_at=? WHERE id=?", (when, run_id))
    conn.commit()
    conn.close()


def test_purge_removes_only_old_finished_runs(tmp_path: Path) -> None:
    state = tmp_path / "state"
    runs = {}
    for name in ("old", "recent", "paused"):
        concepts, db = make_recon(tmp_path / name)
        gates = [Gate("look", at="stage", approval=True)] if name == "paused" else []
        ex = make_executor(
            Runbook(name, steps=[step(concepts, db, gates=gates)]),
            state,
            auto_approve=name != "paused",
            allow_destructive=True,
        )
        runs[name] = (ex, ex.run())
    assert runs["paused"][1].status is RunStatus.PAUSED
    _age(state, runs["old"][1].run_id, 10)
    paused_q = state / "quarantine" / runs["paused"][1].run_id
    ten_days_ago = (datetime.now() - timedelta(days=10)).timestamp()
    for root, dirs, files in os.walk(paused_q):
        for n in [*dirs, *files, "."]:
            os.utime(os.path.join(root, n), (ten_days_ago, ten_days_ago), follow_symlinks=False)

    dry = cli("purge", "--older-than", "7", "--state-dir", state, "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    plan = {e["run_id"]: e for e in json.loads(dry.output)["entries"]}
    assert plan[runs["old"][1].run_id]["action"] == "would remove"
    assert len(list((state / "quarantine").iterdir())) == 3

    report = cli("purge", "--older-than", "7", "--state-dir", state)
    assert report.exit_code == 0, report.output
    assert "1 run(s) purged" in report.output
    left = {p.name for p in (state / "quarantine").iterdir()}
    assert left == {runs["recent"][1].run_id, runs["paused"][1].run_id}
    actions = {
        e.run_id: (e.action, e.reason)
        for e in purge_quarantine(state, older_than_days=7, dry_run=True).entries
    }
    assert actions[runs["paused"][1].run_id][1].startswith("run is paused")
    assert actions[runs["recent"][1].run_id][1] == "younger than 7 day(s)"

    # A rollback of the purged run cannot put anything back, and says why.
    with pytest.raises(PolicyError, match="purged"):
        runs["old"][0].rollback(runs["old"][1].run_id)
    forced = purge_quarantine(state, older_than_days=7, force=True)
    assert [e.run_id for e in forced.removed] == [runs["paused"][1].run_id]
    assert forced.bytes_freed > 0
