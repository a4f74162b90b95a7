"""`handrail backups restore`: it shows what it overwrites (and who wrote it), asks, keeps
the current state first so the restore itself can be undone, and refuses another host's
backup. Judged with digests computed without handrail (tests/digests.py)."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
from pathlib import Path

from handrail.engine.journal import Journal

from .digests import sqlite_digest, tree_digest, unchanged
from .helpers import cli_proc, make_items_db, write

RUNBOOK = """
from pathlib import Path
from handrail import Runbook, SQLite, JSONFile
from handrail.steps.sql import SQL
here = Path(__file__).parent
db = SQLite("items", here / "items.db")
conf = JSONFile("conf", here / "conf.json")
retire = SQL("retire old", db, up="UPDATE items SET status='retired' WHERE status='old'",
             tier="destructive")
retire.reads = (conf,)  # read, so backed up; no step writes it
runbook = Runbook("restore-me", steps=[retire])
"""


def restore(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`handrail backups restore ARGS` on the test's state directory."""
    return cli_proc("backups", "restore", *args, "--state-dir", str(tmp_path / ".handrail"))


def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    db = make_items_db(tmp_path / "items.db", 30)
    write(tmp_path / "conf.json", '{"mode": "old", "keep": 1}')
    rb = write(tmp_path / "rb.py", RUNBOOK)
    return rb, db, tmp_path / ".handrail"


def run_then_app_writes(tmp_path: Path) -> tuple[Path, Path, dict[str, object], str]:
    """A run that changes items.db, then an application writes after it."""
    rb, db, state = setup(tmp_path)
    before = sqlite_digest(db)
    done = cli_proc("run", rb, "--yes", "--allow-destructive")
    assert done.returncode == 0, done.stderr
    run_id = Journal(state).runs()[-1].id
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO items VALUES (1000, 'written by the app', 'new', 1.0)")
    conn.commit()
    conn.close()
    return rb, db, before, run_id


def test_restore_shows_what_it_overwrites_and_who_wrote_it(tmp_path: Path) -> None:
    _rb, db, _, run_id = run_then_app_writes(tmp_path)
    write(tmp_path / "conf.json", '{"mode": "new", "keep": 1}')  # edited by hand
    with unchanged(db, tmp_path / "conf.json", tmp_path / ".handrail" / "backups"):
        shown = restore(tmp_path, run_id, "--dry-run")
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    lines = [ln.strip() for ln in out.splitlines()]
    at = lines.index("items (sqlite): rows:items: changed")
    assert lines[at + 1] == f"written since the backup by: run {run_id} step 'retire old' (done)"
    # conf.json: no step writes it, so its change is no run's of this journal.
    at = lines.index("conf (json): key:mode: changed")
    assert lines[at + 1].startswith("changed by no run of this journal"), out
    assert lines[at + 1].endswith("key:mode: changed")
    machine = restore(tmp_path, run_id, "--dry-run", "--json")
    plan = json.loads(machine.stdout)
    by = {r["resource"]: r for r in plan["resources"]}
    assert by["items"]["writers"] == [f"run {run_id} step 'retire old' (done)"]
    assert by["items"]["differs"]
    assert by["conf"]["differs"]
    assert by["conf"]["writers"] == []
    assert by["conf"]["outside"] == by["conf"]["differs"]


def test_without_yes_and_without_a_terminal_nothing_is_restored(tmp_path: Path) -> None:
    _rb, db, _, run_id = run_then_app_writes(tmp_path)
    with unchanged(db, tmp_path / "conf.json"):
        refused = restore(tmp_path, run_id)
    assert refused.returncode == 2
    assert "pass --yes" in refused.stderr
    assert "table" in refused.stdout or "items" in refused.stdout  # the list came first
    assert [r.mode for r in Journal(tmp_path / ".handrail").runs(mode=None)] == ["run"]


def test_restore_then_undo_it_exactly(tmp_path: Path) -> None:
    _rb, db, before, run_id = run_then_app_writes(tmp_path)
    pre_restore = sqlite_digest(db)
    pre_restore_conf = tree_digest(tmp_path / "conf.json")
    assert pre_restore != before
    done = restore(tmp_path, run_id, "--yes")
    assert done.returncode == 0, done.stderr
    assert "restored and verified: items" in done.stdout
    assert sqlite_digest(db) == before  # the backup's content, the app's row gone too
    m = re.search(r"undo this restore: handrail backups restore (\S+)", done.stdout)
    assert m, done.stdout
    undo_id = m.group(1)
    journal = Journal(tmp_path / ".handrail")
    assert {b["resource"] for b in journal.backups(undo_id)} == {"items", "conf"}
    assert [e["kind"] for e in journal.events(undo_id)].count("restored") == 1
    undone = restore(tmp_path, undo_id, "--yes")
    assert undone.returncode == 0, undone.stderr
    assert sqlite_digest(db) == pre_restore  # including the row the app wrote after the run
    assert tree_digest(tmp_path / "conf.json") == pre_restore_conf


def test_a_backup_from_another_host_is_refused_an_old_one_accepted_with_a_note(
    tmp_path: Path,
) -> None:
    _rb, db, _, run_id = run_then_app_writes(tmp_path)
    journal_db = tmp_path / ".handrail" / "journal.sqlite"
    conn = sqlite3.connect(journal_db)
    conn.execute("UPDATE backups SET host='elsewhere.example' WHERE resource='items'")
    conn.commit()
    conn.close()
    with unchanged(db, tmp_path / "conf.json"):
        refused = restore(tmp_path, run_id, "--yes")
    assert refused.returncode == 2
    assert "taken on host 'elsewhere.example'" in refused.stderr
    assert "on elsewhere.example" in refused.stderr
    # A row from before hosts were recorded: accepted, with a note saying so.
    conn = sqlite3.connect(journal_db)
    conn.execute("UPDATE backups SET host=NULL")
    conn.commit()
    conn.close()
    ok = restore(tmp_path, run_id, "--yes")
    assert ok.returncode == 0, ok.stderr
    assert "predates host records" in ok.stderr


def test_an_old_journal_without_the_host_column_is_upgraded(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    conn = sqlite3.connect(state / "journal.sqlite")
    conn.execute(
        "CREATE TABLE backups (run_id TEXT NOT NULL, resource TEXT NOT NULL, kind TEXT NOT "
        "NULL, path TEXT, sha256 TEXT NOT NULL, size INTEGER NOT NULL, fingerprint TEXT NOT "
        "NULL, meta TEXT NOT NULL, taken_at TEXT NOT NULL, verified_at TEXT, evidence TEXT, "
        "PRIMARY KEY (run_id, resource))"
    )
    conn.execute(
        "INSERT INTO backups VALUES ('r1','db','sqlite',NULL,'',0,"
        "'{\"digest\": \"absent\", \"parts\": {}}','{}','t',NULL,NULL)"
    )
    conn.commit()
    conn.close()
    rows = Journal(state).backups("r1")
    assert rows[0]["host"] is None
