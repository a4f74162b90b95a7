"""The executor through the library: gates, approvals bound to the plan, stages, policy,
rollback with conflicts. Real SQLite files throughout."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from handrail import (
    SQL,
    Gate,
    ImportRecords,
    Journal,
    RecordError,
    Runbook,
    RunStatus,
    SourceRecord,
    SQLite,
    StepStatus,
    Tier,
    checks,
    load_runbook,
)
from handrail.engine.executor import Observer
from handrail.errors import PolicyError, RunbookError
from handrail.model import CheckResult
from handrail.resources.base import Resource
from handrail.steps.checkpoint import Checkpoint

from .helpers import make_executor, make_items_db, run_runbook, write


def records(n: int, bad: set[int] = frozenset()) -> Any:  # type: ignore[assignment]
    def read(ctx: Any) -> list[SourceRecord]:
        return [
            SourceRecord("list", str(i), {"id": i, "ok": i not in bad}) for i in range(1, n + 1)
        ]

    return read


def to_row(rec: SourceRecord) -> dict[str, Any]:
    if not rec.value["ok"]:
        raise RecordError("planted bad record")
    return {
        "id": rec.value["id"],
        "name": f"imported {rec.key}",
        "status": "imported",
        "score": 1.5,
    }


def test_plan_changes_nothing_and_creates_no_state(tmp_path: Path) -> None:
    db = SQLite("db", make_items_db(tmp_path / "x.db"))
    before = db.fingerprint().digest
    rb = Runbook(
        "t",
        steps=[
            SQL(
                "drop old",
                db,
                up="DELETE FROM items WHERE status='old'",
                down="SELECT 1",
                tier="destructive",
            ),
            ImportRecords(
                "import", read=records(300), db=db, table="items", key="id", mapper=to_row
            ),
        ],
    )
    plans = make_executor(rb, tmp_path / ".handrail").plan()
    assert [p.items for _, p in plans] == [None, 300]
    assert plans[1][1].counts == {
        "records": 300,
        "rejects": 0,
        "insert": 250,
        "update": 50,
        "unchanged": 0,
    }
    assert db.fingerprint().digest == before
    # Executor() opened a journal for the run; planning alone must not need one:
    from handrail.engine.executor import plan_runbook

    (tmp_path / ".handrail").exists() and __import__("shutil").rmtree(tmp_path / ".handrail")
    plan_runbook(rb)
    assert not (tmp_path / ".handrail").exists()


def test_manual_gate_pauses_then_approval_resumes(tmp_path: Path) -> None:
    db = SQLite("db", make_items_db(tmp_path / "x.db"))
    gate = Gate("look", checks=[checks.RowCount(db, "items", equals=80)], approval=True)
    rb = Runbook(
        "t",
        steps=[
            ImportRecords(
                "import",
                read=records(80),
                db=db,
                table="items",
                key="id",
                mapper=to_row,
                gates=[gate],
            )
        ],
    )
    ex = make_executor(rb, tmp_path / ".handrail")
    first = ex.run()
    assert first.status is RunStatus.PAUSED
    assert first.paused_gate == "import/look"
    assert first.exit_code == 3
    # The change is applied and verified; only the gate is waiting.
    assert db.query("SELECT count(*) FROM items WHERE status='imported'")[0][0] == 80
    ex.journal.approve(first.run_id, "import/look", "approve", "alice", ex.plan_hash)
    second = ex.run()
    assert second.status is RunStatus.COMPLETED
    assert second.run_id == first.run_id
    approvals = ex.journal.approvals(first.run_id)
    assert [(a["who"], a["plan_hash"]) for a in approvals] == [("alice", ex.plan_hash)]


def test_editing_the_runbook_invalidates_an_approval(tmp_path: Path) -> None:
    make_items_db(tmp_path / "x.db")
    rb_file = write(
        tmp_path / "rb.py",
        """
        from pathlib import Path
        from handrail import Runbook, SQLite, SQL, Gate
        db = SQLite("db", Path(__file__).parent / "x.db")
        runbook = Runbook("t", steps=[
            SQL("mark", db, up="UPDATE items SET status='seen'",
                down="UPDATE items SET status='new'", gates=[Gate("human", approval=True)]),
            SQL("mark2", db, up="UPDATE items SET score=0", down="UPDATE items SET score=1"),
        ])
    """,
    )
    journal = Journal(tmp_path / ".handrail")
    ex = make_executor(load_runbook(rb_file), journal, key=str(rb_file))
    paused = ex.run()
    journal.approve(paused.run_id, paused.paused_gate or "", "approve", "bob", ex.plan_hash)
    rb_file.write_text(rb_file.read_text() + "\n# an edit after the approval\n")
    edited = make_executor(load_runbook(rb_file), journal, key=str(rb_file))
    assert edited.plan_hash != ex.plan_hash
    again = edited.run()
    assert again.status is RunStatus.PAUSED
    assert again.paused_gate == "mark/human"
    kinds = [e["kind"] for e in journal.events(paused.run_id)]
    assert "plan-changed" in kinds


def test_rejected_gate_stops_and_rollback_undoes(tmp_path: Path) -> None:
    db = SQLite("db", make_items_db(tmp_path / "x.db"))
    before = db.fingerprint().digest
    rb = Runbook(
        "t",
        steps=[
            ImportRecords(
                "import",
                read=records(80),
                db=db,
                table="items",
                key="id",
                mapper=to_row,
                gates=[Gate("human", approval=True)],
            )
        ],
    )
    ex = make_executor(rb, tmp_path / ".handrail")
    paused = ex.run()
    ex.journal.approve(paused.run_id, "import/human", "reject", "carol", ex.plan_hash)
    rejected = ex.run()
    assert rejected.status is RunStatus.REJECTED
    with pytest.raises(PolicyError, match="rejected"):
        ex.run()
    undone = ex.rollback(paused.run_id)
    assert undone.status is RunStatus.ROLLED_BACK
    assert db.fingerprint().digest == before


class Recorder(Observer):
    def __init__(self) -> None:
        self.gates: list[str] = []
        self.progress_calls: list[tuple[int, int]] = []

    def gate(self, key: str, gate: Gate, results: list[CheckResult], needs_human: bool) -> None:
        self.gates.append(key)

    def progress(self, step: str, done: int, total: int) -> None:
        self.progress_calls.append((done, total))


def test_stages_run_with_a_gate_after_each(tmp_path: Path) -> None:
    db = SQLite("db", make_items_db(tmp_path / "x.db", n=0))
    seen: list[int] = []

    def count(ctx: Any) -> tuple[bool, dict[str, Any]]:
        n = ctx.use(db).query("SELECT count(*) FROM items")[0][0]
        seen.append(n)
        return True, {"rows": n}

    step = ImportRecords(
        "import",
        read=records(250),
        db=db,
        table="items",
        key="id",
        mapper=to_row,
        stages=[100, 100, None],
        batch_size=40,
        gates=[Gate("stage check", checks=[checks.Predicate("count", count)], at="stage")],
    )
    rec = Recorder()
    result = make_executor(Runbook("t", steps=[step]), tmp_path / ".handrail", observer=rec).run()
    assert result.status is RunStatus.COMPLETED
    # once in the preflight's forward run on clones, then in the run itself
    assert seen == [100, 200, 250, 100, 200, 250]
    assert rec.gates == [
        "import/stage check#stage1",
        "import/stage check#stage2",
        "import/stage check#stage3",
    ]
    assert rec.progress_calls[-1] == (250, 250)
    batches = Journal(tmp_path / ".handrail").batches(result.run_id, "import")
    # 100 = 40+40+20, so no batch straddles a stage boundary
    assert [len(items) for _, _, items, _ in batches] == [40, 40, 20, 40, 40, 20, 40, 10]
    assert [stage for _, stage, _, _ in batches] == [0, 0, 0, 1, 1, 1, 2, 2]


def test_manual_stage_gate_pauses_between_stages(tmp_path: Path) -> None:
    db = SQLite("db", make_items_db(tmp_path / "x.db", n=0))
    step = ImportRecords(
        "import",
        read=records(250),
        db=db,
        table="items",
        key="id",
        mapper=to_row,
        stages=[100, None],
        gates=[Gate("look", at="stage", approval=True)],
    )
    ex = make_executor(Runbook("t", steps=[step]), tmp_path / ".handrail")
    paused = ex.run()
    assert paused.paused_gate == "import/look#stage1"
    assert db.query("SELECT count(*) FROM items")[0][0] == 100
    ex.journal.approve(paused.run_id, "import/look#stage1", "approve", "dan", ex.plan_hash)
    paused2 = ex.run()
    assert paused2.paused_gate == "import/look#stage2"
    assert db.query("SELECT count(*) FROM items")[0][0] == 250


def test_failed_gate_can_roll_the_step_back(tmp_path: Path) -> None:
    db = SQLite("db", make_items_db(tmp_path / "x.db"))
    before = db.fingerprint().digest
    gate = Gate("count", checks=[checks.RowCount(db, "items", equals=999)], on_fail="rollback")
    rb = Runbook(
        "t",
        steps=[
            ImportRecords(
                "import",
                read=records(80),
                db=db,
                table="items",
                key="id",
                mapper=to_row,
                gates=[gate],
            )
        ],
    )
    ex = make_executor(rb, tmp_path / ".handrail")
    result = ex.run()
    assert result.status is RunStatus.FAILED
    assert "80 != 999" in result.message
    assert db.fingerprint().digest == before
    assert ex.journal.step(result.run_id, "import").status is StepStatus.ROLLED_BACK


def test_reject_share_gate_fails_beyond_threshold(tmp_path: Path) -> None:
    from handrail import RejectShare

    db = SQLite("db", make_items_db(tmp_path / "x.db", n=0))
    imp = ImportRecords(
        "import", read=records(100, bad={3, 7, 9}), db=db, table="items", key="id", mapper=to_row
    )
    gate = Gate("rejects", checks=[RejectShare(imp, max_share=0.02)])
    rb = Runbook("t", steps=[imp, Checkpoint("check", gates=[gate])])
    ex = make_executor(rb, tmp_path / ".handrail")
    result = ex.run()
    assert result.status is RunStatus.FAILED
    assert "3 of 100 records rejected" in result.message
    rejects = ex.journal.rejects(result.run_id)
    assert [(r["key"], r["reason"]) for r in rejects] == [
        ("3", "planted bad record"),
        ("7", "planted bad record"),
        ("9", "planted bad record"),
    ]


def test_destructive_steps_need_the_flag(tmp_path: Path) -> None:
    db = SQLite("db", make_items_db(tmp_path / "x.db"))
    rb = Runbook("t", steps=[SQL("wipe", db, up="DELETE FROM items")])  # no down: no inverse
    assert rb.steps[0].tier is Tier.DESTRUCTIVE
    with pytest.raises(PolicyError, match="destructive"):
        make_executor(rb, tmp_path / ".handrail").run()
    assert db.query("SELECT count(*) FROM items")[0][0] == 50
    _, result = run_runbook(rb, tmp_path / ".handrail", allow_destructive=True)
    assert result.status is RunStatus.COMPLETED
    assert db.query("SELECT count(*) FROM items")[0][0] == 0


def test_tier_can_be_raised_never_lowered(tmp_path: Path) -> None:
    db = SQLite("db", make_items_db(tmp_path / "x.db"))
    raised = SQL("s", db, up="SELECT 1", down="SELECT 1", tier="external")
    assert raised.tier is Tier.EXTERNAL
    with pytest.raises(RunbookError, match="never lowered"):
        SQL("s", db, up="DELETE FROM items", tier="reversible")


class FakeService(SQLite):
    """A database that other people read: writes to it are external."""

    external = True


def test_external_steps_must_be_staged_and_gated(tmp_path: Path) -> None:
    svc = FakeService("svc", make_items_db(tmp_path / "x.db"))
    unstaged = ImportRecords(
        "push", read=records(10), db=svc, table="items", key="id", mapper=to_row
    )
    assert unstaged.tier is Tier.EXTERNAL
    with pytest.raises(PolicyError, match="stages"):
        make_executor(Runbook("t", steps=[unstaged]), tmp_path / ".handrail").run()
    staged = ImportRecords(
        "push",
        read=records(10),
        db=svc,
        table="items",
        key="id",
        mapper=to_row,
        stages=[2, None],
        gates=[Gate("g", at="stage")],
    )
    _, result = run_runbook(Runbook("t", steps=[staged]), tmp_path / ".handrail")
    assert result.status is RunStatus.COMPLETED


def test_rollback_leaves_rows_someone_else_changed(tmp_path: Path) -> None:
    db = SQLite("db", make_items_db(tmp_path / "x.db", n=10))
    rb = Runbook(
        "t",
        steps=[
            ImportRecords("import", read=records(20), db=db, table="items", key="id", mapper=to_row)
        ],
    )
    ex = make_executor(rb, tmp_path / ".handrail")
    run = ex.run()
    conn = sqlite3.connect(db.path)
    conn.execute("UPDATE items SET name='edited by a human' WHERE id=5")
    conn.commit()
    conn.close()
    result = ex.rollback(run.run_id)
    assert result.exit_code == 1
    assert len(result.conflicts) == 1
    assert "id" in result.conflicts[0]
    assert "5" in result.conflicts[0]
    rows = dict(db.query("SELECT id, name FROM items"))
    assert rows[5] == "edited by a human"  # their work survives
    assert rows[4] == "item 4"  # ours is undone
    assert 15 not in rows  # inserted rows are gone
    forced = ex.rollback(run.run_id, force=True)
    assert forced.exit_code == 0
    assert dict(db.query("SELECT id, name FROM items"))[5] == "item 5"


class Unreadable(Resource):
    kind = "broken"

    def location(self) -> str:
        return "nowhere"

    def exists(self) -> bool:
        return True

    def validate(self) -> None:
        from handrail.errors import ResourceError

        raise ResourceError("broken resource")

    def fingerprint(self) -> Any:
        raise AssertionError("never reached")

    snapshot = restore = clone = clone_empty = fingerprint  # type: ignore[assignment]


def test_invalid_resource_stops_before_any_change(tmp_path: Path) -> None:
    from handrail.errors import ResourceError

    db = SQLite("db", make_items_db(tmp_path / "x.db"))
    before = db.fingerprint().digest
    rb = Runbook(
        "t",
        steps=[
            SQL("change", db, up="DELETE FROM items", down="SELECT 1"),
            Checkpoint("c", reads=[Unreadable("broken")]),
        ],
    )
    with pytest.raises(ResourceError):
        make_executor(rb, tmp_path / ".handrail").run()
    assert db.fingerprint().digest == before


def test_sources_are_backed_up_unless_marked_as_large_inputs(tmp_path: Path) -> None:
    from handrail import Directory

    db = SQLite("db", make_items_db(tmp_path / "x.db"))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("a")
    (tmp_path / "photos").mkdir()
    small = Directory("inputs", tmp_path / "in")
    large = Directory("photos", tmp_path / "photos", backup_when_read=False)
    step = ImportRecords(
        "import",
        read=records(5),
        db=db,
        table="items",
        key="id",
        mapper=to_row,
        reads=[small, large],
    )
    ex = make_executor(Runbook("t", steps=[step]), tmp_path / ".handrail")
    result = ex.run()
    assert result.status is RunStatus.COMPLETED
    backed_up = [b["resource"] for b in ex.journal.backups(result.run_id)]
    assert backed_up == ["db", "inputs"]
