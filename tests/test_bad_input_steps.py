"""Bad step parameters exit 2 before the first change, naming the step and what to do.

Each row is a runbook a user could write; ``plan`` and ``run --yes`` must both exit 2
(``run`` also when only its forward run on clones can see the mistake), name the file,
step, table or column, and leave every data path as it was, by digests computed without
handrail. The other bad-input tables: tests/test_bad_input_files.py (JSON files and
directories), tests/test_bad_input_sqlite.py (database files, locks) and
tests/test_bad_input_errors.py (runbook files, services, options).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from .digests import sqlite_digest, tree_digest
from .helpers import cli, write

HEAD = """
from pathlib import Path
from handrail import (SQL, AddColumns, Backfill, CreateIndex, CreateSchema, Gate, ImportRecords,
                      Runbook, SQLite, SourceRecord, checks)

db = SQLite("app", Path(__file__).parent / "app.db")

def size(row):
    return {"size_class": "long" if row["words"] > 250 else "short"}

def records(ctx):
    return [SourceRecord("list", str(i), {"id": i}) for i in range(5)]

"""

#: (id, the runbook's steps, what the message must name, whether plan sees it too)
CASES = [
    (
        "backfill-missing-column",
        'Backfill("fill", db, table="documents", key="id", columns=["size_klass"], compute=size)',
        ["fill", "size_klass", "documents"],
        True,
    ),
    (
        "backfill-columns-as-a-string",
        'Backfill("fill", db, table="documents", key="id", columns="size_class", compute=size)',
        ["fill", "not the string", "columns=['size_class']"],
        True,
    ),
    (
        "backfill-missing-key",
        'Backfill("fill", db, table="documents", key="uid", columns=["words"], compute=size)',
        ["fill", "uid"],
        True,
    ),
    (
        "backfill-missing-read-column",
        'Backfill("fill", db, table="documents", key="id", columns=["words"], compute=size, '
        'read=["wrds"])',
        ["fill", "wrds"],
        True,
    ),
    (
        "backfill-where-does-not-compile",
        'Backfill("fill", db, table="documents", key="id", columns=["words"], compute=size, '
        'where="words >> AND 1")',
        ["fill", "where", "does not compile"],
        True,
    ),
    (
        "backfill-missing-table",
        'Backfill("fill", db, table="docs", key="id", columns=["words"], compute=size)',
        ["fill", "no table 'docs'", "documents"],
        True,
    ),
    (
        "backfill-key-in-columns",
        'Backfill("fill", db, table="documents", key="id", columns=["id"], compute=size)',
        ["fill", "key column"],
        True,
    ),
    (
        "sql-syntax-error",
        'SQL("mark", db, up="UPDATE documents SET title = 1 WHERE", down="SELECT 1")',
        ["mark", "statement 1", "does not compile", "syntax error"],
        True,
    ),
    (
        "sql-missing-table",
        'SQL("mark", db, up="UPDATE docs SET title = 1", down="SELECT 1")',
        ["mark", "no such table: docs"],
        True,
    ),
    (
        "sql-second-statement-after-ddl",
        'SQL("mark", db, up="ALTER TABLE documents ADD COLUMN flag INT; '
        'UPDATE documents SET flg = 1", down="ALTER TABLE documents DROP COLUMN flag")',
        ["mark", "no such column: flg"],
        False,
    ),
    (
        "later-step-misspells-an-added-column",
        'AddColumns("add", db, table="documents", columns={"size_class": "TEXT"}), '
        'SQL("mark", db, up="UPDATE documents SET title = 1 WHERE size_clas = 2", '
        'down="SELECT 1")',
        ["mark", "size_clas"],
        False,
    ),
    (
        "add-columns-missing-table",
        'AddColumns("add", db, table="document", columns={"size_class": "TEXT"})',
        ["add", "no table 'document'"],
        True,
    ),
    (
        "index-missing-column",
        'CreateIndex("index", db, index="i", table="documents", columns=["wordz"])',
        ["index", "wordz"],
        True,
    ),
    (
        "import-missing-key",
        'ImportRecords("import", read=records, db=db, table="documents", key="uuid", '
        'mapper=lambda r: {"uuid": r.key})',
        ["import", "uuid"],
        True,
    ),
    (
        "create-schema-bad-ddl",
        'CreateSchema("schema", db, ddl="CREATE TABLE x (id INTEGER PRIMARY KEY,,)")',
        ["schema", "syntax error"],
        True,
    ),
    (
        "gate-at-nowhere",
        'SQL("mark", db, up="SELECT 1", down="SELECT 1", gates=[Gate("g", at="later")])',
        ["rb.py", "at must be plan, stage or done"],
        True,
    ),
    (
        "two-steps-one-name",
        'SQL("mark", db, up="SELECT 1", down="SELECT 1"), '
        'SQL("mark", db, up="SELECT 2", down="SELECT 1")',
        ["step names must be unique", "mark"],
        True,
    ),
    (
        "a-stage-of-zero",
        'Backfill("fill", db, table="documents", key="id", columns=["words"], compute=size, '
        "stages=[0, None])",
        ["stage sizes must be positive"],
        True,
    ),
    (
        "tier-lowered",
        'SQL("mark", db, up="DELETE FROM documents", tier="read-only")',
        ["mark", "can be raised, never lowered"],
        True,
    ),
    (
        "batch-size-zero",
        'Backfill("fill", db, table="documents", key="id", columns=["words"], compute=size, '
        "batch_size=0)",
        ["fill", "batch_size must be positive"],
        True,
    ),
    (
        "destructive-without-the-flag",
        'SQL("wipe", db, up="DELETE FROM documents")',
        ["wipe", "destructive", "--allow-destructive"],
        False,
    ),
]


def make_app(tmp: Path, *, empty: bool = False) -> Path:
    path = tmp / "app.db"
    if empty:
        path.write_bytes(b"")
        return path
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE documents (id INTEGER PRIMARY KEY, words INTEGER, title TEXT)")
    conn.executemany(
        "INSERT INTO documents VALUES (?,?,?)", [(i, i * 37 % 500, f"doc {i}") for i in range(50)]
    )
    conn.commit()
    conn.close()
    return path


def said(output: str) -> str:
    return " ".join(output.split())


@pytest.mark.parametrize(
    ("steps", "names", "plan_sees"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_step_parameters_exit_2_before_any_change(
    tmp_path: Path, steps: str, names: list[str], plan_sees: bool
) -> None:
    db = make_app(tmp_path)
    rb = write(tmp_path / "rb.py", HEAD + f"runbook = Runbook('bad', steps=[{steps}])\n")
    before = (sqlite_digest(db), tree_digest(db))
    commands = [("plan",), ("run", "--yes")] if plan_sees else [("run", "--yes")]
    for command in commands:
        result = cli(*command, rb)
        assert result.exit_code == 2, f"{command}: {result.output}"
        text = said(result.output)
        for name in names:
            assert name in text, f"{command}: {name!r} not in {text}"
        assert (sqlite_digest(db), tree_digest(db)) == before
    assert not list(tmp_path.glob(".handrail/backups/*/*"))


def test_a_zero_byte_database_where_tables_are_expected(tmp_path: Path) -> None:
    db = make_app(tmp_path, empty=True)
    rb = write(
        tmp_path / "rb.py",
        HEAD + "runbook = Runbook('t', steps=[Backfill('fill', db, table='documents', "
        "key='id', columns=['words'], compute=size)])\n",
    )
    for command in (("plan",), ("run", "--yes")):
        result = cli(*command, rb)
        assert result.exit_code == 2, result.output
        assert "no table 'documents'" in said(result.output)
        assert "tables: none" in said(result.output)
        assert db.read_bytes() == b""
