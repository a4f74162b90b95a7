"""The CLI as users run it: exit codes, bad input, the lease, help and docs."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from handrail.engine.journal import Journal

from .helpers import cli, cli_proc, make_items_db, write

RUNBOOK = """
from pathlib import Path
from handrail import Runbook, SQLite, SQL, Gate, checks
db = SQLite("db", Path(__file__).parent / "x.db")
runbook = Runbook("cli", steps=[
    SQL("mark", db, up="UPDATE items SET status='seen' WHERE id <= 10",
        down="UPDATE items SET status=CASE WHEN id % 3 THEN 'new' ELSE 'old' END WHERE id <= 10",
        verify="SELECT count(*) = 10 FROM items WHERE status='seen'",
        gates=[Gate("look", checks=[checks.Sample(db, "SELECT id, status FROM items", 3)])]),
])
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    make_items_db(tmp_path / "x.db")
    write(tmp_path / "rb.py", RUNBOOK)
    return tmp_path


def fingerprint(path: Path) -> str:
    out = cli("fingerprint", path, "--json")
    assert out.exit_code == 0, out.output
    return str(json.loads(out.output)["digest"])


def test_run_pause_approve_resume_rollback(project: Path) -> None:
    rb = project / "rb.py"
    before = fingerprint(project / "x.db")
    paused = cli("run", rb, "--no-input")
    assert paused.exit_code == 3, paused.output
    assert "Paused at gate mark/look" in paused.output
    status = json.loads(cli("status", rb, "--json").output)
    assert status["status"] == "paused"
    assert status["gate_checks"][0]["outcome"] == "inconclusive"
    assert len(status["gate_checks"][0]["evidence"]["rows"]) == 3
    assert cli("approve", rb, "--as", "erin").exit_code == 0
    done = cli("run", rb, "--no-input")
    assert done.exit_code == 0, done.output
    assert fingerprint(project / "x.db") != before
    undone = cli("rollback", rb)
    assert undone.exit_code == 0, undone.output
    assert fingerprint(project / "x.db") == before
    status = json.loads(cli("status", rb, "--json").output)
    assert status["status"] == "rolled_back"
    assert status["approvals"][0]["who"] == "erin"


def test_yes_approves_and_records_it(project: Path) -> None:
    result = cli("run", project / "rb.py", "--yes")
    assert result.exit_code == 0, result.output
    status = json.loads(cli("status", project / "rb.py", "--json").output)
    assert status["approvals"][0]["automatic"] == 1
    assert "(--yes)" in status["approvals"][0]["who"]


def test_reject_then_rollback(project: Path) -> None:
    rb = project / "rb.py"
    assert cli("run", rb, "--no-input").exit_code == 3
    assert cli("reject", rb, "--comment", "looks wrong").exit_code == 0
    stopped = cli("run", rb, "--no-input")
    assert stopped.exit_code == 1
    again = cli("run", rb, "--no-input")
    assert again.exit_code == 2
    assert "was rejected" in again.output
    assert cli("rollback", rb).exit_code == 0


def test_plan_json_and_table(project: Path) -> None:
    out = cli("plan", project / "rb.py", "--json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["steps"][0]["name"] == "mark"
    assert data["steps"][0]["tier"] == "reversible"
    assert len(data["plan_hash"]) == 64
    assert not (project / ".handrail").exists()  # a plan creates no state
    table = cli("plan", project / "rb.py")
    assert "Blast radius" in table.output


BAD_RUNBOOKS = [
    ("syntax", "def broken(:\n    pass\n", "rb.py:1:", 2),
    ("no runbook", "x = 1\n", "does not define `runbook`", 2),
    ("wrong type", "runbook = 42\n", "not a handrail.Runbook", 2),
    ("raises", "import json\nrunbook = json.loads('{')\n", "rb.py:2: the runbook raised", 2),
]


@pytest.mark.parametrize(
    ("label", "body", "message", "code"), BAD_RUNBOOKS, ids=[b[0] for b in BAD_RUNBOOKS]
)
def test_bad_runbook_files(tmp_path: Path, label: str, body: str, message: str, code: int) -> None:
    (tmp_path / "rb.py").write_text(body)
    for command in ("plan", "run"):
        result = cli(command, tmp_path / "rb.py")
        assert result.exit_code == code, result.output
        assert message in result.output
    assert not (tmp_path / ".handrail").exists()


def test_missing_runbook_file(tmp_path: Path) -> None:
    result = cli("run", tmp_path / "nope.py")
    assert result.exit_code == 2
    assert "runbook file not found" in result.output


def test_corrupt_database_changes_nothing(project: Path) -> None:
    db = project / "x.db"
    data = bytearray(db.read_bytes())
    data[100:4096] = b"\x13" * 3996
    db.write_bytes(bytes(data))
    result = cli("run", project / "rb.py", "--yes")
    assert result.exit_code == 2
    assert "x.db" in result.output
    assert db.read_bytes() == bytes(data)
    assert not (project / ".handrail" / "backups").exists()


def test_missing_data_directory_is_exit_2(tmp_path: Path) -> None:
    write(
        tmp_path / "rb.py",
        """
        from handrail.recipes.json_state.recipe import build
        runbook = build("/no/such/data")
    """,
    )
    result = cli("run", tmp_path / "rb.py")
    assert result.exit_code == 2
    assert "data directory not found: /no/such/data" in result.output


def test_unknown_run_and_recipe(tmp_path: Path) -> None:
    result = cli("status", "nope", "--state-dir", tmp_path / "st")
    assert result.exit_code == 2
    assert "no run" in result.output
    assert cli("demo", "--recipe", "nope", "--dir", tmp_path / "d").exit_code == 2


def test_fingerprint_command(tmp_path: Path) -> None:
    make_items_db(tmp_path / "a.db")
    (tmp_path / "s.json").write_text('{"b": 1, "a": [1, 2]}')
    out = cli("fingerprint", tmp_path / "a.db", "--parts")
    assert out.exit_code == 0
    assert "sqlite" in out.output
    assert "rows:items" in out.output
    assert cli("fingerprint", tmp_path / "s.json").exit_code == 0
    assert cli("fingerprint", tmp_path).exit_code == 0
    assert cli("fingerprint", tmp_path / "missing").exit_code == 2


SLOW_RUNBOOK = """
import time
from pathlib import Path
from handrail import Runbook, SQLite, SQL, Gate, checks
db = SQLite("db", Path(__file__).parent / "x.db")
def slow(ctx):
    time.sleep(4)
    return True, {}
runbook = Runbook("slow", steps=[
    SQL("mark", db, up="UPDATE items SET status='seen'", down="UPDATE items SET status='new'",
        gates=[Gate("wait", checks=[checks.Predicate("slow", slow)])]),
])
"""


def test_second_concurrent_run_is_refused(tmp_path: Path) -> None:
    make_items_db(tmp_path / "x.db")
    rb = write(tmp_path / "rb.py", SLOW_RUNBOOK)
    first = subprocess.Popen(
        [sys.executable, "-m", "handrail.cli", "run", str(rb)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        journal_path = tmp_path / ".handrail" / "journal.sqlite"
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline, "the first run never took the lease"
            if journal_path.exists():
                conn = sqlite3.connect(journal_path)
                try:
                    held = conn.execute("SELECT count(*) FROM leases").fetchone()[0]
                except sqlite3.OperationalError:
                    held = 0
                conn.close()
                if held:
                    break
            time.sleep(0.05)
        second = cli_proc("run", rb)
        assert second.returncode == 2
        assert "another run holds the lease" in second.stderr
        assert f"pid {first.pid}" in second.stderr
    finally:
        out, _ = first.communicate(timeout=60)
    assert first.returncode == 0, out


def test_stale_lease_needs_take_over(project: Path) -> None:
    rb = project / "rb.py"
    journal = Journal(project / ".handrail")
    journal.conn.execute(
        "INSERT INTO leases (runbook_key, run_id, owner, host, pid, token, acquired_at, "
        "heartbeat_at, expires_at) VALUES (?, 'r1', 'frank', 'other-host', 4242, 't', 'x', ?, ?)",
        (str(rb.resolve()), time.time() - 600, time.time() - 540),
    )
    refused = cli("run", rb, "--yes")
    assert refused.exit_code == 2
    assert "frank@other-host" in refused.output
    assert "stale" in refused.output
    assert "--take-over" in refused.output
    taken = cli("run", rb, "--yes", "--take-over")
    assert taken.exit_code == 0, taken.output
    assert journal.lease(str(rb.resolve())) is None  # released at the end


def test_live_lease_from_another_host_is_not_taken_over(project: Path) -> None:
    rb = project / "rb.py"
    journal = Journal(project / ".handrail")
    journal.conn.execute(
        "INSERT INTO leases (runbook_key, run_id, owner, host, pid, token, acquired_at, "
        "heartbeat_at, expires_at) VALUES (?, 'r1', 'gina', 'other-host', 1, 't', 'x', ?, ?)",
        (str(rb.resolve()), time.time(), time.time() + 60),
    )
    result = cli("run", rb, "--yes", "--take-over")
    assert result.exit_code == 2
    assert "gina@other-host" in result.output


def test_every_command_has_help() -> None:
    from handrail.cli import main

    def walk(group: object, prefix: list[str]) -> list[list[str]]:
        out = [prefix]
        for name, sub in getattr(group, "commands", {}).items():
            out += walk(sub, [*prefix, name])
        return out

    for path in walk(main, []):
        result = cli(*path, "--help")
        assert result.exit_code == 0
        assert "Usage:" in result.output
        if path:
            cmd = main
            for part in path:
                cmd = cmd.commands[part]  # type: ignore[attr-defined]
            assert cmd.help, f"`handrail {' '.join(path)}` has no help text"


def test_readme_mentions_every_command() -> None:
    from handrail.cli import main

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for name in main.commands:
        assert f"handrail {name}" in readme, f"README does not mention `handrail {name}`"


SLOW_BATCHES = """
import time
from pathlib import Path
from handrail import Backfill, Runbook, SQLite
db = SQLite("db", Path(__file__).parent / "x.db")
def slow(row):
    time.sleep(0.01)
    return {"status": "done"}
runbook = Runbook("slow", steps=[Backfill("mark", db, table="items", key="id",
                                          columns=["status"], compute=slow, batch_size=10)])
"""


def test_ctrl_c_stops_cleanly_and_run_resumes(tmp_path: Path) -> None:
    import signal

    make_items_db(tmp_path / "x.db", n=200)
    rb = write(tmp_path / "rb.py", SLOW_BATCHES)
    proc = subprocess.Popen(
        [sys.executable, "-m", "handrail.cli", "run", str(rb)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    journal_path = tmp_path / ".handrail" / "journal.sqlite"
    deadline = time.monotonic() + 30
    while True:  # wait until some batches are done
        assert time.monotonic() < deadline
        if journal_path.exists():
            conn = sqlite3.connect(journal_path)
            try:
                done = conn.execute("SELECT count(*) FROM batches WHERE status='done'").fetchone()[
                    0
                ]
            except sqlite3.OperationalError:
                done = 0
            conn.close()
            if done >= 2:
                break
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in err
    status = json.loads(cli("status", rb, "--json").output)
    assert status["status"] == "interrupted"
    assert status["lease"] is None
    done = status["steps"][0]["items_done"]
    assert 0 < done < 200
    resumed = cli("run", rb)
    assert resumed.exit_code == 0, resumed.output
    conn = sqlite3.connect(tmp_path / "x.db")
    assert conn.execute("SELECT count(*) FROM items WHERE status='done'").fetchone()[0] == 200
    conn.close()
