"""Rehearsals on clones: the json-state recipe passes with production untouched; wrong
rollbacks fail and are located (resource, table, keys); a resource that cannot be cloned
is refused before anything is touched. Real SQLite files and directories throughout."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from handrail import Journal, RunStatus
from handrail.engine.loader import load_runbook, runbook_key
from handrail.engine.rehearse import RehearsalOptions, rehearse, table_diff
from handrail.resources import Directory, SQLite

from .helpers import cli, make_items_db, write

JSON_STATE = """
from pathlib import Path
from handrail.recipes.json_state.recipe import build
runbook = build(Path(__file__).parent / "data", max_reject_share=0.05)
"""


def tree(path: Path) -> str:
    """Fingerprint of everything under ``path``: production, whole."""
    return Directory("prod", path).fingerprint().digest


@pytest.fixture(scope="module")
def json_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from handrail.recipes.json_state.sample import make_sample

    root = tmp_path_factory.mktemp("json-state")
    make_sample(root / "data", executions=300, seed=11, state_form="dict")
    return write(root / "runbook.py", JSON_STATE)


def test_json_state_recipe_rehearses_on_clones_and_leaves_production_alone(
    json_state: Path,
) -> None:
    data = json_state.parent / "data"
    before = tree(data)
    result = cli("rehearse", json_state)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Rehearsal passed" in out
    assert "import executions" in out
    assert "Approved automatically on the clones" in out
    assert "check import/import complete" in out
    # Production: byte for byte what it was, and no database created in it.
    assert tree(data) == before
    assert not (data / "py_captions.db").exists()
    # The rehearsal is journalled for the documents, but it is not a production run.
    journal = Journal(json_state.parent / ".handrail")
    key = runbook_key(json_state)
    assert journal.runs(key) == []
    rehearsals = journal.runs(key, mode="rehearsal")
    assert [r.status for r in rehearsals] == [RunStatus.ROLLED_BACK, RunStatus.COMPLETED]
    steps = {s.name: s for s in journal.steps(rehearsals[0].id)}
    assert steps["import executions"].items_total == 300
    for s in steps.values():
        assert s.apply_seconds is not None
        if s.tier != "read-only":
            assert s.rollback_seconds is not None, s.name
    assert cli("status", json_state).exit_code == 2  # no production run to show
    # Clones, and the rehearsal runs' backups of them, are gone.
    assert not (json_state.parent / ".handrail" / "rehearsals").exists()
    assert not any((json_state.parent / ".handrail" / "backups").glob("*"))


def test_rehearsal_json_names_every_phase(json_state: Path) -> None:
    out = cli("rehearse", json_state, "--json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["ok"] is True
    assert data["forward"] == "completed"
    assert data["reapply"] == "completed"
    assert all(r["restored"] and r["reproducible"] for r in data["resources"])
    assert {r["name"] for r in data["resources"]} >= {"db", "data", "marker"}


# -- deliberately wrong rollbacks -------------------------------------------------------------
LEAKY_IMPORT = """
from pathlib import Path
from handrail import ImportRecords, Runbook, SQLite, SourceRecord

db = SQLite("db", Path(__file__).parent / "items.db")

def read(ctx):
    return [SourceRecord("feed", str(i), i) for i in range(1, 61)]

def to_row(rec):
    return {"id": rec.value, "name": f"imported {rec.key}", "status": "imported", "score": 0.5}

class LeakyImport(ImportRecords):
    def rollback(self, ctx):
        \"\"\"Forgets to replay the undo log: imported rows stay.\"\"\"

runbook = Runbook("leaky", steps=[
    LeakyImport("import", read=read, db=db, table="items", key="id", mapper=to_row),
])
"""

FORGETFUL_COLUMNS = """
from pathlib import Path
from handrail import AddColumns, Runbook, SQLite
from handrail.resources.sqlite import quote_ident

db = SQLite("db", Path(__file__).parent / "items.db")

class ForgetfulAddColumns(AddColumns):
    def unchange(self, ctx, conn):
        # drops the first column it added and forgets the second
        first = ctx.state["added"][0]
        conn.execute(f"ALTER TABLE items DROP COLUMN {quote_ident(first)}")

runbook = Runbook("forgetful", steps=[
    ForgetfulAddColumns("add columns", db, table="items",
                        columns={"reviewed": "TEXT", "reviewer": "TEXT"}),
])
"""


def project(tmp_path: Path, runbook: str) -> Path:
    make_items_db(tmp_path / "items.db", 50)
    return write(tmp_path / "rb.py", runbook)


def test_a_rollback_that_leaves_rows_behind_fails_and_names_them(tmp_path: Path) -> None:
    rb = project(tmp_path, LEAKY_IMPORT)
    before = SQLite("db", tmp_path / "items.db").fingerprint().digest
    result = cli("rehearse", rb)
    assert result.exit_code == 1, result.output
    out = result.output
    assert "Rehearsal failed" in out
    assert "the rollback did not restore db: table items changed" in out
    assert "10 row(s) left behind: id 51, 52, 53" in out
    assert "50 row(s) with other values: id 1, 2, 3" in out
    assert SQLite("db", tmp_path / "items.db").fingerprint().digest == before

    data = json.loads(cli("rehearse", rb, "--json").stdout)
    first = data["differences"][0]
    assert (first["resource"], first["part"], first["where"]) == ("db", "rows:items", "table items")
    assert first["keys"][:3] == ["51", "52", "53"]
    assert data["reapply"] == ""  # not applied again after a failed rollback


def test_a_rollback_that_forgets_a_column_fails_and_names_it(tmp_path: Path) -> None:
    rb = project(tmp_path, FORGETFUL_COLUMNS)
    before = SQLite("db", tmp_path / "items.db").fingerprint().digest
    result = cli("rehearse", rb)
    assert result.exit_code == 1, result.output
    assert "the rollback did not restore db: table items changed" in result.output
    assert "column(s) reviewer still there" in result.output
    assert SQLite("db", tmp_path / "items.db").fingerprint().digest == before


def test_library_result_locates_the_difference(tmp_path: Path) -> None:
    rb_path = project(tmp_path, LEAKY_IMPORT)
    result = rehearse(
        load_runbook(rb_path),
        Journal(tmp_path / "state"),
        runbook_key=runbook_key(rb_path),
        options=RehearsalOptions(scratch=tmp_path / "scratch", keep=True),
    )
    assert not result.ok
    assert result.exit_code == 1
    diff = result.first_difference
    assert diff is not None
    assert (diff.resource, diff.where) == ("db", "table items")
    assert "51" in diff.keys
    [res] = result.resources
    assert res.restored is False
    assert res.reproducible is None
    # --keep: the clone is still there to look at, production is not touched.
    [made] = (tmp_path / "scratch").iterdir()  # its own subdirectory, nothing else
    assert str(made) == result.scratch
    clone = made / "clones" / "db" / "items.db"
    assert SQLite("db", clone).query("SELECT count(*) FROM items")[0][0] == 60
    assert SQLite("db", tmp_path / "items.db").query("SELECT count(*) FROM items")[0][0] == 50


# -- other outcomes -----------------------------------------------------------------------------
NO_SANDBOX = """
from pathlib import Path
from handrail import Runbook, TransformJSON
from handrail.errors import ResourceError
from handrail.resources import JSONFile

class Service(JSONFile):
    \"\"\"Stands in for an HTTP service whose runbook names no sandbox address.\"\"\"
    external = True
    def check_clone(self):
        raise ResourceError("it has no sandbox address",
                            hint="give the service a sandbox= address to rehearse against")

svc = Service("videos", Path(__file__).parent / "videos.json")
runbook = Runbook("push", steps=[
    TransformJSON("push", svc, lambda old: old, stages=[1, None]),
])
"""


def test_a_resource_that_cannot_be_cloned_is_refused_before_anything(tmp_path: Path) -> None:
    (tmp_path / "videos.json").write_text('{"videos": []}')
    rb = write(tmp_path / "rb.py", NO_SANDBOX)
    result = cli("rehearse", rb)
    assert result.exit_code == 2, result.output
    assert "json videos" in result.output
    assert "cannot be cloned" in result.output
    assert "it has no sandbox address" in result.output
    assert "sandbox=" in result.output  # the hint
    assert not (tmp_path / ".handrail").exists()


IRREVERSIBLE = """
from pathlib import Path
from handrail import SQL, Runbook, SQLite
db = SQLite("db", Path(__file__).parent / "items.db")
runbook = Runbook("purge", steps=[SQL("purge old", db, up="DELETE FROM items WHERE status='old'")])
"""


def test_a_step_without_inverse_is_rehearsed_as_a_restore_from_backups(tmp_path: Path) -> None:
    rb = project(tmp_path, IRREVERSIBLE)
    before = SQLite("db", tmp_path / "items.db").fingerprint().digest
    out = cli("rehearse", rb, "--json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["rollback_method"] == "backups"
    assert "purge old has no inverse" in data["notes"][0]
    assert SQLite("db", tmp_path / "items.db").fingerprint().digest == before


FAILING = """
from pathlib import Path
from handrail import SQL, Runbook, SQLite
db = SQLite("db", Path(__file__).parent / "items.db")
runbook = Runbook("fails", steps=[
    SQL("mark", db, up="UPDATE items SET status='seen' WHERE id <= 5",
        down="UPDATE items SET status=CASE WHEN id % 3 THEN 'new' ELSE 'old' END WHERE id <= 5",
        verify="SELECT count(*) = 6 FROM items WHERE status='seen'"),
])
"""


def test_a_failing_forward_run_fails_the_rehearsal_and_is_still_rolled_back(
    tmp_path: Path,
) -> None:
    rb = project(tmp_path, FAILING)
    data = json.loads(cli("rehearse", rb, "--json").stdout)
    assert data["ok"] is False
    assert data["forward"] == "failed"
    assert "did not verify" in data["message"]
    assert data["resources"][0]["restored"] is True  # what it applied was undone exactly


def test_scratch_directory_keeps_what_was_there(tmp_path: Path) -> None:
    rb = project(tmp_path, FAILING)
    scratch = tmp_path / "shared-tmp"
    scratch.mkdir()
    (scratch / "precious.txt").write_text("not the rehearsal's")
    out = cli("rehearse", rb, "--scratch", scratch)
    assert out.exit_code == 1, out.output
    assert [p.name for p in scratch.iterdir()] == ["precious.txt"]


def test_rehearse_bad_input() -> None:
    assert cli("rehearse", "/nonexistent/rb.py").exit_code == 2


# -- locating rows -------------------------------------------------------------------------------
def db_with(path: Path, ddl: str, rows: list[tuple[object, ...]]) -> Path:
    conn = sqlite3.connect(path)
    conn.execute(ddl)
    marks = ",".join("?" * len(rows[0])) if rows else ""
    conn.executemany(f"INSERT INTO t VALUES ({marks})", rows)
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize(
    ("ddl", "before", "after", "summary"),
    [
        (
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v)",
            [(1, 1), (2, "x"), (3, None)],
            [(1, 1.0), (2, "x"), (3, None), (4, 0)],
            "1 row(s) left behind: id 4; 1 row(s) with other values: id 1",
        ),
        (
            "CREATE TABLE t (a TEXT, b INTEGER, v, PRIMARY KEY (a, b))",
            [("x", 1, "p"), ("x", 2, "q"), ("y", 1, b"\x00")],
            [("x", 1, "p"), ("y", 1, b"\x01")],
            "1 row(s) missing: a/b ('x', 2); 1 row(s) with other values: a/b ('y', 1)",
        ),
        (
            "CREATE TABLE t (v, w)",
            [(1, "a"), (2, "b")],
            [(1, "a"), (2, "c")],
            "1 row(s) left behind: v/w (2, 'c'); 1 row(s) missing: v/w (2, 'b')",
        ),
        (
            "CREATE TABLE t (id TEXT PRIMARY KEY, v)",
            [("B", 1), ("a", 2), ("é", 3)],
            [("B", 1), ("a", 2), ("é", 3)],
            "every row equal on the columns both sides have",
        ),
    ],
)
def test_table_diff_names_the_rows_by_key(
    tmp_path: Path,
    ddl: str,
    before: list[tuple[object, ...]],
    after: list[tuple[object, ...]],
    summary: str,
) -> None:
    a = db_with(tmp_path / "a.db", ddl, before)
    b = db_with(tmp_path / "b.db", ddl, after)
    assert table_diff(a, b, "t").summary() == summary
