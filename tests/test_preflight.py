"""The preflight: bad input exits 2 before the first change, even the kind no parser sees.

Step 3's SQL names a column that step 1 adds, misspelt. Nothing about the file or the
database says so until step 1 has run; the preflight runs the runbook forward on clones
(whole below the size limit, schema only above it) and finds it there. Every data path
is judged unchanged with digests computed without handrail.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from .digests import sqlite_digest, tree_digest
from .helpers import cli, write

RUNBOOK = """
from pathlib import Path
from handrail import SQL, AddColumns, Backfill, Gate, JSONFile, Runbook, SQLite, TransformJSON
from handrail import checks

here = Path(__file__).parent
db = SQLite("app", here / "app.db")
settings = JSONFile("settings", here / "settings.json")

def size(row):
    return {"size_class": "long" if row["words"] > 250 else "short"}

runbook = Runbook("sizes", steps=[
    AddColumns("add column", db, table="documents", columns={"size_class": "TEXT"}),
    TransformJSON("note it", settings, lambda doc: doc | {"sized": True}),
    Backfill("fill", db, table="documents", key="id", columns=["size_class"], compute=size),
    SQL("mark long", db, up="UPDATE documents SET title = title || ' (long)' "
        "WHERE SIZE_CLAS = 'long'", down="UPDATE documents SET title = "
        "substr(title, 1, length(title) - 7) WHERE size_class = 'long'"{gates}),
])
"""


def make_app(tmp: Path, n: int = 200) -> None:
    conn = sqlite3.connect(tmp / "app.db")
    conn.execute("CREATE TABLE documents (id INTEGER PRIMARY KEY, words INTEGER, title TEXT)")
    conn.executemany(
        "INSERT INTO documents VALUES (?,?,?)", [(i, i * 37 % 500, f"doc {i}") for i in range(n)]
    )
    conn.commit()
    conn.close()
    (tmp / "settings.json").write_text('{"theme": "dark", "name": "Zoë"}\n')


def said(result: object) -> str:
    """The output with the terminal's line wrapping undone."""
    return " ".join(str(getattr(result, "output", "")).split())


def state(tmp: Path) -> tuple[object, object]:
    return sqlite_digest(tmp / "app.db"), tree_digest(tmp / "settings.json")


@pytest.mark.parametrize("limit", ["256", "0.001"], ids=["whole-clones", "schema-only-clones"])
def test_a_misspelt_column_of_a_later_step_exits_2_before_any_change(
    tmp_path: Path, limit: str
) -> None:
    make_app(tmp_path)
    rb = write(tmp_path / "rb.py", RUNBOOK.replace("{gates}", ""))
    before = state(tmp_path)
    result = cli("run", rb, "--yes", "--preflight-limit", limit)
    assert result.exit_code == 2, result.output
    assert "mark long" in result.output  # the step is named
    assert "SIZE_CLAS" in result.output  # and the reason
    assert "nothing was changed" in result.output
    assert state(tmp_path) == before
    assert not list(tmp_path.glob(".handrail/backups/*"))  # not even a backup was needed


def test_without_the_preflight_the_same_runbook_changes_data_then_fails(tmp_path: Path) -> None:
    """What the preflight saves users from: the run fails at step 4 after three changes."""
    make_app(tmp_path)
    rb = write(tmp_path / "rb.py", RUNBOOK.replace("{gates}", ""))
    before = state(tmp_path)
    result = cli("run", rb, "--yes", "--no-preflight")
    assert "--no-preflight" in result.output  # the warning
    assert result.exit_code == 1
    assert state(tmp_path) != before


def test_the_preflight_cost_is_printed_and_a_good_runbook_runs(tmp_path: Path) -> None:
    make_app(tmp_path)
    good = RUNBOOK.replace("{gates}", "").replace("SIZE_CLAS", "size_class")
    rb = write(tmp_path / "rb.py", good)
    result = cli("run", rb, "--yes")
    assert result.exit_code == 0, result.output
    assert "preflight: 2 step(s) validated on the real state; forward run on clones" in said(result)
    assert re.search(r"forward run on clones \([0-9.]+ MB\) in [0-9.]+ s", said(result))
    count = sqlite3.connect(tmp_path / "app.db").execute(
        "SELECT count(*) FROM documents WHERE title LIKE '% (long)'"
    )
    assert count.fetchone()[0] > 0  # the run itself happened once, not twice


def test_a_gate_failing_on_the_clones_is_a_note_not_bad_input(tmp_path: Path) -> None:
    make_app(tmp_path)
    gate = (
        ', gates=[Gate("none long", checks=[checks.RowCount(db, '
        "\"SELECT * FROM documents WHERE title LIKE '%(long)'\", equals=0)])]"
    )
    rb = write(
        tmp_path / "rb.py", RUNBOOK.replace("{gates}", gate).replace("SIZE_CLAS", "size_class")
    )
    result = cli("run", rb, "--yes")
    assert result.exit_code == 1  # the gate stops the real run, as it should
    assert "preflight: on the clones: gate mark long/none long failed" in said(result)


def test_over_the_limit_a_file_that_cannot_be_cloned_as_schema_skips_the_clones(
    tmp_path: Path,
) -> None:
    make_app(tmp_path)
    good = RUNBOOK.replace("{gates}", "").replace("SIZE_CLAS", "size_class")
    rb = write(tmp_path / "rb.py", good)
    (tmp_path / "settings.json").write_text('{"notes": "%s"}' % ("x" * 5000))
    result = cli("run", rb, "--yes", "--preflight-limit", "0.001")
    assert result.exit_code == 0, result.output
    assert "no forward run on clones: settings" in said(result)


def test_plan_reports_what_the_preflight_validates(tmp_path: Path) -> None:
    make_app(tmp_path)
    bad = RUNBOOK.replace("{gates}", "").replace(
        'table="documents", columns={"size', 'table="document", columns={"size'
    )
    rb = write(tmp_path / "rb.py", bad)
    before = state(tmp_path)
    for command in ("plan", "run"):
        result = cli(command, rb, "--yes") if command == "run" else cli(command, rb)
        assert result.exit_code == 2, result.output
        assert "add column" in result.output
        assert "no table 'document'" in result.output
    assert state(tmp_path) == before
