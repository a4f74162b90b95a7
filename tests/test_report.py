"""`handrail report`: the audit of one run, from its journal, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from handrail.engine.journal import Journal
from handrail.engine.loader import runbook_key

from .helpers import cli, make_items_db, write

RUNBOOK = """
from pathlib import Path
from handrail import Gate, ImportRecords, RecordError, Runbook, SQLite, SourceRecord, checks

db = SQLite("db", Path(__file__).parent / "x.db")

def read(ctx):
    return [SourceRecord("feed.json", str(i), i) for i in range(1, 81)]

def to_row(rec):
    if rec.value % 20 == 0:
        raise RecordError("planted bad record")
    return {"id": rec.value, "name": f"imported {rec.key}", "status": "imported", "score": 1.5}

runbook = Runbook("audited", steps=[
    ImportRecords("import", read=read, db=db, table="items", key="id", mapper=to_row,
                  gates=[Gate("look", approval=True, checks=[
                      checks.RowCount(db, "items", at_least=70),
                      checks.Sample(db, "SELECT id, name FROM items", 3)])]),
])
"""


@pytest.fixture
def done(tmp_path: Path) -> Path:
    """A run that paused at its gate, was approved by erin, and completed."""
    make_items_db(tmp_path / "x.db", 50)
    rb = write(tmp_path / "rb.py", RUNBOOK)
    assert cli("run", rb, "--no-input").exit_code == 3
    approved = cli("approve", rb, "--as", "erin", "--comment", "rows look right")
    assert approved.exit_code == 0
    assert cli("run", rb).exit_code == 0
    return rb


def test_report_of_a_completed_run(done: Path) -> None:
    journal = Journal(done.parent / ".handrail")
    [run] = journal.runs(runbook_key(done))
    out = cli("report", done)
    assert out.exit_code == 0, out.output
    text = out.stdout
    assert text.startswith(f"# Run report: audited, run `{run.id}`")
    assert f"| plan hash | `{run.plan_hash}` |" in text
    assert "| runbook now | unchanged since the run (same plan hash) |" in text
    assert "| status | **completed** |" in text
    # The gate, its evidence, the sample shown, and who approved it when.
    assert "### Gate `import/look`" in text
    assert '`{"at_least": 70' not in text  # evidence is what the check saw, not its config
    assert '"count": 78' in text
    assert "the 3 row(s) shown, of 78" in text
    [approval] = journal.approvals(run.id)
    assert f"| {approval['at']} | **approve** | erin | by a person |" in text
    assert "rows look right" in text
    # Backups with their checksums; each step's counts and timings; rejects.
    [backup] = journal.backups(run.id)
    assert f"`{backup['sha256']}`" in text
    assert "| 1 | import | reversible | done |" in text
    assert "80 / 80" in text
    assert text.count("planted bad record") == 4
    assert "- import: 4" in text
    assert "The run was not rolled back." in text


def test_report_of_a_rolled_back_run_and_a_changed_runbook(done: Path) -> None:
    assert cli("rollback", done).exit_code == 0
    done.write_text(done.read_text().replace("at_least=70", "at_least=71"))
    text = cli("report", done).stdout
    assert "| status | **rolled_back** |" in text
    rollback = text.split("## Rollback")[1].split("## Event log")[0]
    assert "step-rolled-back" in rollback
    assert "rolled back every step" in rollback
    assert "changed since the run: approvals given before the change are void" in text


def test_report_as_html_file(done: Path) -> None:
    out = cli("report", done, "--format", "html", "-o", done.parent / "audit.html")
    assert out.exit_code == 0, out.output
    page = (done.parent / "audit.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert '<h2 id="gates-and-checks">Gates and checks</h2>' in page
    assert "<code>import/look</code>" in page
    assert "<script" not in page


def test_report_of_rehearsals(tmp_path: Path) -> None:
    make_items_db(tmp_path / "x.db", 50)
    rb = write(tmp_path / "rb.py", RUNBOOK)
    rehearsed = cli("rehearse", rb, "--json")
    assert rehearsed.exit_code == 0, rehearsed.output
    run_id = json.loads(rehearsed.stdout)["run_id"]
    by_flag = cli("report", rb, "--rehearsal").stdout
    assert f"run `{run_id}`" in by_flag
    assert "| mode | rehearsal |" in by_flag
    assert "automatically" in by_flag  # the manual gate, approved on the clones
    assert "rehearsal passed" in by_flag  # the event the rehearsal journals
    by_id = cli("report", run_id, "--state-dir", tmp_path / ".handrail")
    assert by_id.stdout == by_flag


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no-such-run"], "no run 'no-such-run'"),
        (["missing.py"], "runbook file not found"),
        (["missing.py", "--rehearsal"], "--rehearsal takes a runbook file"),
    ],
)
def test_report_bad_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    out = cli("report", *args)
    assert out.exit_code == 2
    assert message in out.output


def test_report_of_a_runbook_never_rehearsed(done: Path) -> None:
    out = cli("report", done, "--rehearsal")
    assert out.exit_code == 2
    assert "has not been rehearsed" in out.output
