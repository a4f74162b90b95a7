"""Rollback removes only what the run created and nobody changed since.

A matrix over every ``Step`` subclass in the package (a new one fails
``test_every_step_class_is_in_the_matrix`` until it has a case): the run applies the
step, then "the application" changes what the run created (a value it wrote, a row in its
table, a value in its column, a recreated path, a rewritten file), and the rollback must
lose nothing the application wrote. Results are judged with digests computed without
handrail (tests/digests.py) and plain SQL. Every case also shows the rollback is never
stuck: ``--force`` either completes or is refused up front with nothing changed, and
``--keep-theirs`` always finishes.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

import handrail
from handrail import (
    SQL,
    AddColumns,
    Backfill,
    CreateIndex,
    CreateSchema,
    Directory,
    Executor,
    JSONFile,
    Runbook,
    RunStatus,
    SQLite,
    TransformJSON,
)
from handrail.errors import PolicyError
from handrail.resources.postgres import Postgres
from handrail.runbook import Step
from handrail.steps.checkpoint import Checkpoint
from handrail.steps.json_import import ImportRecords, SourceRecord
from handrail.steps.pg_backfill import PgBackfill
from handrail.steps.pg_sql import PgSQL
from handrail.steps.quarantine import QuarantineDelete
from handrail.tablecopy.mapping import Column, TableMap
from handrail.tablecopy.steps import CopyTable

from .digests import pg_digest, sqlite_digest, tree_digest
from .helpers import cli, make_executor, make_items_db, write

# -- the matrix's coverage ----------------------------------------------------------------
#: every Step subclass, and the test that rolls it back after someone else changed its work
COVERED: dict[str, str] = {
    "handrail.steps.sql.SQL": "test_sql_created_table_with_their_rows_is_not_dropped",
    "handrail.steps.sql.CreateSchema": "test_create_schema_table_with_their_rows_is_not_dropped",
    "handrail.steps.sql.AddColumns": "test_added_columns_holding_their_values_are_not_dropped",
    "handrail.steps.sql.CreateIndex": "test_create_index_undo_keeps_their_rows",
    "handrail.steps.backfill.Backfill": "test_added_columns_holding_their_values_are_not_dropped",
    "handrail.steps.json_import.ImportRecords": "test_import_never_deletes_a_row_they_changed",
    "handrail.steps.json_import.ImportJSON": "test_import_never_deletes_a_row_they_changed "
    "(ImportRecords reading a JSON file: same undo log)",
    "handrail.recipes.domains.recipe.StampPushed": "test_added_columns_holding_their_values_"
    "are_not_dropped (a Backfill) and tests/test_domains_recipe.py",
    "handrail.steps.json_transform.TransformJSON": (
        "test_transform_json_rewritten_file_is_a_conflict"
    ),
    "handrail.steps.quarantine.QuarantineDelete": (
        "test_quarantine_never_overwrites_a_recreated_path"
    ),
    "handrail.steps.checkpoint.Checkpoint": "test_checkpoint_undo_touches_nothing",
    "handrail.steps.pg_sql.PgSQL": "test_pg_sql_created_table_with_their_rows_is_not_dropped",
    "handrail.steps.pg_backfill.PgBackfill": "test_pg_backfill_conflict_then_force",
    "handrail.tablecopy.steps.CopyTable": "test_copy_table_is_not_emptied_after_they_wrote_to_it",
    "handrail.steps.http_push.HTTPPush": "tests/test_http_push.py::"
    "test_rollback_reports_a_video_changed_since_and_force_restores_it",
    "handrail.recipes.dhash.recipe.HashImages": "tests/test_dhash_recipe.py (store is the run's)",
    "handrail.recipes.dhash.recipe.FindDuplicates": "tests/test_dhash_recipe.py (the run's own)",
    "handrail.recipes.dhash.recipe.WriteLibrary": "test_write_library_keeps_their_edits",
}


def _step_classes() -> set[str]:
    root = Path(handrail.__file__).parent  # ops/ is a namespace package: walk the files
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if "testing" not in parts:
            importlib.import_module(".".join(p for p in parts if p != "__init__"))
    out: set[str] = set()
    todo = list(Step.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        concrete = not inspect.isabstract(cls) and cls.__module__.startswith("handrail.")
        if concrete and cls.__name__ != "SQLiteStep":  # SQLiteStep: the SQL steps' base
            out.add(f"{cls.__module__}.{cls.__qualname__}")
    return out


def test_every_step_class_is_in_the_matrix() -> None:
    assert _step_classes() == set(COVERED)


# -- helpers ------------------------------------------------------------------------------
def app(db: Path, *sql: str) -> None:
    """The application writes, outside handrail."""
    conn = sqlite3.connect(db)
    for stmt in sql:
        conn.execute(stmt)
    conn.commit()
    conn.close()


def rows(db: Path, query: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


@dataclass
class Outcome:
    """What a rollback, a forced one and a keep-theirs one did."""

    first: Any
    forced: Any
    refused: str | None
    kept: Any


def roll_back_three_ways(ex: Executor, run_id: str, data: Callable[[], Any]) -> Outcome:
    """rollback; then --force (refused up front with ``data()`` unchanged, or done);
    then, if still unfinished, --keep-theirs, which always finishes."""
    first = ex.rollback(run_id)
    refused, forced, kept = None, None, None
    if first.exit_code != 0:
        before = data()
        try:
            forced = ex.rollback(run_id, force=True)
        except PolicyError as exc:
            refused = str(exc)
            assert data() == before, "a refused --force changed data"
            assert ex.journal.run(run_id).status is RunStatus.ROLLING_BACK
        if forced is None:
            kept = ex.rollback(run_id, keep_theirs=True)
            assert kept.status is RunStatus.ROLLED_BACK  # never stuck
            assert kept.exit_code == 1  # what stayed is listed, not hidden
    return Outcome(first, forced, refused, kept)


# -- SQLite schema steps ------------------------------------------------------------------
def docs_db(path: Path, n: int = 60) -> SQLite:
    app(
        path,
        "CREATE TABLE documents (id INTEGER PRIMARY KEY, words INTEGER, title TEXT)",
        *[f"INSERT INTO documents VALUES ({i}, {i * 37 % 500}, 'doc {i}')" for i in range(1, n)],
    )
    return SQLite("db", path)


def size_class(row: dict[str, Any]) -> dict[str, Any]:
    return {"size_class": "long" if row["words"] > 250 else "short", "checked": 1}


def add_and_backfill(db: SQLite) -> Runbook:
    return Runbook(
        "add-and-fill",
        steps=[
            AddColumns(
                "add columns",
                db,
                table="documents",
                columns={"size_class": "TEXT", "checked": "INT"},
            ),
            Backfill(
                "fill",
                db,
                table="documents",
                key="id",
                columns=["size_class", "checked"],
                compute=size_class,
                batch_size=10,
            ),
        ],
    )


def test_added_columns_holding_their_values_are_not_dropped(tmp_path: Path) -> None:
    """The reported defect: the app edits a backfilled row and inserts rows with values in
    the new columns; rollback used to drop both columns anyway."""
    db = docs_db(tmp_path / "app.db")
    ex = make_executor(add_and_backfill(db), tmp_path / ".handrail", auto_approve=True)
    run = ex.run()
    assert run.status is RunStatus.COMPLETED
    app(
        db.path,
        "UPDATE documents SET size_class='hand-checked' WHERE id=7",
        "INSERT INTO documents (id, words, title) VALUES (1000, 5, 'theirs')",  # at NULL
        "INSERT INTO documents (id, words, title, size_class, checked) "
        "VALUES (1001, 9, 'theirs too', 'app-set', 2)",
    )
    theirs = "SELECT id, size_class, checked FROM documents WHERE id IN (7, 1000, 1001) ORDER BY id"
    before = rows(db.path, theirs)
    out = roll_back_three_ways(ex, run.run_id, lambda: sqlite_digest(db.path))
    # the first rollback stops after "fill": row 7 was left alone, nothing was dropped
    assert out.first.exit_code == 1
    assert out.first.stopped_at == "fill"
    assert any("id=7" in c for c in out.first.conflicts)
    # --force would have to drop columns that hold row 1001's values: refused up front
    assert out.refused is not None
    assert "documents.size_class" in out.refused
    assert "1001" in out.refused
    # --keep-theirs finished around them: every value the app wrote is still there
    assert rows(db.path, theirs) == before
    # the run's values are gone but on row 7, which the app changed (a row is one item)
    assert rows(db.path, "SELECT id FROM documents WHERE checked = 1") == [(7,)]
    assert any("add columns" in k for k in out.kept.conflicts)


def test_added_columns_are_dropped_when_force_only_overwrites(tmp_path: Path) -> None:
    """Only a backfilled value was changed: --force puts it back, then the columns hold
    nothing but defaults and go; the table is exactly as before the run."""
    db = docs_db(tmp_path / "app.db")
    original = sqlite_digest(db.path)
    ex = make_executor(add_and_backfill(db), tmp_path / ".handrail", auto_approve=True)
    run = ex.run()
    app(db.path, "UPDATE documents SET size_class='hand-checked' WHERE id=7")
    out = roll_back_three_ways(ex, run.run_id, lambda: sqlite_digest(db.path))
    assert out.first.exit_code == 1
    assert out.refused is None
    assert out.forced.exit_code == 0
    assert sqlite_digest(db.path) == original


def test_sql_created_table_with_their_rows_is_not_dropped(tmp_path: Path) -> None:
    db = docs_db(tmp_path / "app.db")
    step = SQL(
        "archive",
        db,
        up="CREATE TABLE archive (id INTEGER PRIMARY KEY, note TEXT); "
        "INSERT INTO archive SELECT id, title FROM documents WHERE id < 5",
        down="DROP TABLE archive",
    )
    ex = make_executor(Runbook("t", steps=[step]), tmp_path / ".handrail", auto_approve=True)
    run = ex.run()
    app(db.path, "INSERT INTO archive VALUES (500, 'the app wrote this')")
    out = roll_back_three_ways(ex, run.run_id, lambda: sqlite_digest(db.path))
    assert out.first.exit_code == 1
    assert out.first.blocked
    assert "table archive" in out.first.conflicts[0]
    assert out.refused is not None
    assert "table archive" in out.refused
    assert rows(db.path, "SELECT note FROM archive WHERE id=500") == [("the app wrote this",)]


def test_sql_created_table_the_app_left_alone_is_dropped(tmp_path: Path) -> None:
    db = docs_db(tmp_path / "app.db")
    original = sqlite_digest(db.path)
    step = SQL(
        "archive",
        db,
        up="CREATE TABLE archive (id INTEGER PRIMARY KEY, note TEXT); "
        "INSERT INTO archive SELECT id, title FROM documents WHERE id < 5; "
        "ALTER TABLE documents ADD COLUMN archived INT; UPDATE documents SET archived=1 "
        "WHERE id < 5",
        down="DROP TABLE archive; ALTER TABLE documents DROP COLUMN archived",
    )
    ex = make_executor(Runbook("t", steps=[step]), tmp_path / ".handrail", auto_approve=True)
    run = ex.run()
    app(db.path, "INSERT INTO documents (id, words, title) VALUES (900, 1, 'new, no archived')")
    undone = ex.rollback(run.run_id)
    assert undone.exit_code == 0, undone.conflicts
    assert rows(db.path, "SELECT title FROM documents WHERE id=900") == [("new, no archived",)]
    app(db.path, "DELETE FROM documents WHERE id=900")
    assert sqlite_digest(db.path, include_handrail=False) == original


def test_sql_added_column_with_a_value_they_changed_is_not_dropped(tmp_path: Path) -> None:
    db = docs_db(tmp_path / "app.db")
    step = SQL(
        "flag",
        db,
        up="ALTER TABLE documents ADD COLUMN flag TEXT; UPDATE documents SET flag='x' WHERE id<3",
        down="ALTER TABLE documents DROP COLUMN flag",
    )
    ex = make_executor(Runbook("t", steps=[step]), tmp_path / ".handrail", auto_approve=True)
    run = ex.run()
    app(db.path, "UPDATE documents SET flag='theirs' WHERE id=40")
    undone = ex.rollback(run.run_id)
    assert undone.blocked
    assert "documents.flag" in undone.conflicts[0]
    assert rows(db.path, "SELECT flag FROM documents WHERE id=40") == [("theirs",)]


def test_create_schema_table_with_their_rows_is_not_dropped(tmp_path: Path) -> None:
    db = docs_db(tmp_path / "app.db")
    step = CreateSchema(
        "schema",
        db,
        ddl="CREATE TABLE IF NOT EXISTS reviews (id INTEGER PRIMARY KEY, verdict TEXT); "
        "CREATE INDEX IF NOT EXISTS reviews_verdict ON reviews(verdict)",
    )
    ex = make_executor(Runbook("t", steps=[step]), tmp_path / ".handrail", auto_approve=True)
    run = ex.run()
    app(db.path, "INSERT INTO reviews VALUES (1, 'approved by a person')")
    out = roll_back_three_ways(ex, run.run_id, lambda: sqlite_digest(db.path))
    assert out.first.blocked
    assert out.refused is not None
    assert rows(db.path, "SELECT verdict FROM reviews") == [("approved by a person",)]


def test_create_index_undo_keeps_their_rows(tmp_path: Path) -> None:
    db = docs_db(tmp_path / "app.db")
    step = CreateIndex("index", db, index="docs_words", table="documents", columns=["words"])
    ex = make_executor(Runbook("t", steps=[step]), tmp_path / ".handrail", auto_approve=True)
    run = ex.run()
    app(db.path, "INSERT INTO documents VALUES (777, 1, 'theirs')")
    mine = sqlite_digest(db.path, include_handrail=False)
    undone = ex.rollback(run.run_id)
    assert undone.exit_code == 0
    after = sqlite_digest(db.path, include_handrail=False)
    assert after["tables"] == mine["tables"]  # their row is there; only the index went
    assert not any(name == "docs_words" for _, name, _ in after["schema"])


def imported(n: int) -> Callable[[Any], list[SourceRecord]]:
    def read(ctx: Any) -> list[SourceRecord]:
        return [SourceRecord("list", str(i), {"id": i}) for i in range(1, n + 1)]

    return read


def test_import_never_deletes_a_row_they_changed(tmp_path: Path) -> None:
    db = SQLite("db", make_items_db(tmp_path / "x.db", n=10))
    step = ImportRecords(
        "import",
        read=imported(20),
        db=db,
        table="items",
        key="id",
        mapper=lambda rec: {"id": rec.value["id"], "name": f"imp {rec.key}", "status": "imp"},
    )
    ex = make_executor(Runbook("t", steps=[step]), tmp_path / ".handrail", auto_approve=True)
    run = ex.run()
    # 15 was inserted by the run, 5 updated by it; the app changes both
    app(
        db.path,
        "UPDATE items SET name='edited 15' WHERE id=15",
        "UPDATE items SET score=99 WHERE id=5",
    )
    out = roll_back_three_ways(ex, run.run_id, lambda: sqlite_digest(db.path))
    assert out.first.blocked
    assert "'id': 15" in out.first.conflicts[0]
    assert out.refused is not None
    assert "'id': 15" in out.refused
    assert rows(db.path, "SELECT name FROM items WHERE id=15") == [("edited 15",)]
    assert rows(db.path, "SELECT score FROM items WHERE id=5") == [(99.0,)]


# -- files ---------------------------------------------------------------------------------
def test_transform_json_rewritten_file_is_a_conflict(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"mode": "old", "n": 1}))
    f = JSONFile("settings", path)
    step = TransformJSON("bump", f, lambda doc: doc | {"mode": "new"})
    ex = make_executor(Runbook("t", steps=[step]), tmp_path / ".handrail", auto_approve=True)
    run = ex.run()
    path.write_text(json.dumps({"mode": "new", "n": 2, "theirs": True}))
    theirs = tree_digest(path)
    undone = ex.rollback(run.run_id)
    assert undone.exit_code == 1
    assert undone.stopped_at == "bump"
    assert tree_digest(path) == theirs  # left alone
    forced = ex.rollback(run.run_id, force=True)  # overwriting a value the run wrote: allowed
    assert forced.exit_code == 0
    assert json.loads(path.read_text()) == {"mode": "old", "n": 1}


def test_quarantine_never_overwrites_a_recreated_path(tmp_path: Path) -> None:
    root = tmp_path / "artefacts"
    for name in ("a.bin", "b.bin", "c.bin"):
        write(root / name, f"old {name}\n")
    step = QuarantineDelete("clean", Directory("files", root), select=["a.bin", "b.bin"])
    ex = make_executor(
        Runbook("t", steps=[step]),
        tmp_path / ".handrail",
        auto_approve=True,
        allow_destructive=True,
    )
    run = ex.run()
    assert run.status is RunStatus.COMPLETED, run.message
    write(root / "a.bin", "the app made a new a.bin\n")
    undone = ex.rollback(run.run_id)
    assert undone.exit_code == 1
    assert (root / "a.bin").read_text() == "the app made a new a.bin\n"
    assert (root / "b.bin").read_text() == "old b.bin\n"  # the rest went back
    forced = ex.rollback(run.run_id, force=True)
    assert forced.exit_code == 0
    assert (root / "a.bin").read_text() == "old a.bin\n"
    displaced = [p.read_text() for p in (tmp_path / ".handrail").rglob("a.bin")]
    assert "the app made a new a.bin\n" in displaced  # moved aside, never deleted


def test_checkpoint_undo_touches_nothing(tmp_path: Path) -> None:
    db = docs_db(tmp_path / "app.db")
    ex = make_executor(
        Runbook("t", steps=[Checkpoint("look", reads=[db])]),
        tmp_path / ".handrail",
        auto_approve=True,
    )
    run = ex.run()
    app(db.path, "DELETE FROM documents WHERE id < 10")
    mine = sqlite_digest(db.path)
    assert ex.rollback(run.run_id).exit_code == 0
    assert sqlite_digest(db.path) == mine


def test_write_library_keeps_their_edits(tmp_path: Path) -> None:
    from handrail.recipes.dhash.recipe import WriteLibrary

    path = tmp_path / "library.json"
    path.write_text(json.dumps({"images": [{"path": "a.jpg", "tags": []}]}))
    lib = JSONFile("library", path)

    def add_hash(doc: dict[str, Any]) -> dict[str, Any]:
        return {"images": [img | {"dhash": "0f0f"} for img in doc["images"]]}

    ex = make_executor(
        Runbook("t", steps=[WriteLibrary("write", lib, add_hash)]),
        tmp_path / ".handrail",
        auto_approve=True,
    )
    run = ex.run()
    assert run.status is RunStatus.COMPLETED, run.message
    doc = json.loads(path.read_text())
    doc["images"][0]["tags"] = ["holiday"]  # the app edits the library afterwards
    path.write_text(json.dumps(doc))
    assert ex.rollback(run.run_id).exit_code == 0
    assert json.loads(path.read_text())["images"][0]["tags"] == ["holiday"]
    assert "dhash" not in json.loads(path.read_text())["images"][0]


# -- PostgreSQL ----------------------------------------------------------------------------
pg = pytest.mark.postgres


def pg_exec(dsn: str, *sql: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for stmt in sql:
            conn.execute(stmt.encode())


@pg
def test_pg_sql_created_table_with_their_rows_is_not_dropped(pg_dsn: str, tmp_path: Path) -> None:
    pg_exec(pg_dsn, "CREATE TABLE video (id int PRIMARY KEY, category int)")
    db = Postgres("pg", pg_dsn)
    step = PgSQL(
        "make table",
        db,
        up="CREATE TABLE review (id int PRIMARY KEY, verdict text); "
        "ALTER TABLE video ADD COLUMN domain text",
        down="DROP TABLE review; ALTER TABLE video DROP COLUMN domain",
    )
    ex = make_executor(Runbook("t", steps=[step]), tmp_path / ".handrail", auto_approve=True)
    run = ex.run()
    assert run.status is RunStatus.COMPLETED, run.message
    pg_exec(pg_dsn, "INSERT INTO review VALUES (1, 'theirs')", "INSERT INTO video VALUES (1, 2)")
    out = roll_back_three_ways(ex, run.run_id, lambda: pg_digest(pg_dsn))
    assert out.first.blocked
    assert "table public.review" in out.first.conflicts[0]
    assert out.refused is not None
    assert pg_digest(pg_dsn)["review"]["rows"] == 1


@pg
def test_pg_sql_undo_goes_through_when_only_default_rows_came(pg_dsn: str, tmp_path: Path) -> None:
    pg_exec(pg_dsn, "CREATE TABLE video (id int PRIMARY KEY, category int)")
    original = pg_digest(pg_dsn)
    db = Postgres("pg", pg_dsn)
    step = PgSQL(
        "add",
        db,
        up="ALTER TABLE video ADD COLUMN domain text",
        down="ALTER TABLE video DROP COLUMN domain",
    )
    ex = make_executor(Runbook("t", steps=[step]), tmp_path / ".handrail", auto_approve=True)
    run = ex.run()
    pg_exec(pg_dsn, "INSERT INTO video (id, category) VALUES (5, 1)")  # domain left NULL
    assert ex.rollback(run.run_id).exit_code == 0
    pg_exec(pg_dsn, "DELETE FROM video WHERE id = 5")
    assert pg_digest(pg_dsn) == original


@pg
def test_pg_backfill_conflict_then_force(pg_dsn: str, tmp_path: Path) -> None:
    pg_exec(
        pg_dsn,
        "CREATE TABLE video (id int PRIMARY KEY, category int)",
        "INSERT INTO video SELECT g, NULL FROM generate_series(1, 30) g",
    )
    original = pg_digest(pg_dsn)
    db = Postgres("pg", pg_dsn)
    step = PgBackfill(
        "cat", db, table="video", key="id", columns=["category"], compute=lambda r: {"category": 7}
    )
    ex = make_executor(Runbook("t", steps=[step]), tmp_path / ".handrail", auto_approve=True)
    run = ex.run()
    pg_exec(pg_dsn, "UPDATE video SET category = 99 WHERE id = 3")
    out = roll_back_three_ways(ex, run.run_id, lambda: pg_digest(pg_dsn))
    assert out.first.exit_code == 1
    assert not out.first.blocked
    assert out.refused is None
    assert out.forced.exit_code == 0
    assert pg_digest(pg_dsn) == original


@pg
def test_copy_table_is_not_emptied_after_they_wrote_to_it(pg_dsn: str, tmp_path: Path) -> None:
    src = tmp_path / "src.db"
    app(
        src,
        "CREATE TABLE content (id TEXT PRIMARY KEY, title TEXT)",
        *[f"INSERT INTO content VALUES ('c{i}', 'title {i}')" for i in range(50)],
    )
    pg_exec(pg_dsn, "CREATE TABLE content (id text PRIMARY KEY, title text)")
    mapping = TableMap("content", "content", key=["id"], columns=[Column("id"), Column("title")])
    step = CopyTable("copy", SQLite("src", src), Postgres("pg", pg_dsn), mapping)
    ex = make_executor(Runbook("t", steps=[step]), tmp_path / ".handrail", auto_approve=True)
    run = ex.run()
    assert run.status is RunStatus.COMPLETED, run.message
    pg_exec(pg_dsn, "INSERT INTO content VALUES ('new', 'written by the app after the copy')")
    out = roll_back_three_ways(ex, run.run_id, lambda: pg_digest(pg_dsn))
    assert out.first.blocked
    assert "public.content" in out.first.conflicts[0]
    assert out.refused is not None
    assert pg_digest(pg_dsn)["content"]["rows"] == 51


# -- as a user meets it ----------------------------------------------------------------------
def test_cli_lists_what_stopped_the_rollback_and_the_ways_out(tmp_path: Path) -> None:
    docs_db(tmp_path / "app.db")
    rb = write(
        tmp_path / "rb.py",
        """
        from pathlib import Path
        from handrail import AddColumns, Backfill, Runbook, SQLite

        db = SQLite("app", Path(__file__).parent / "app.db")

        def size(row):
            return {"size_class": "long" if row["words"] > 250 else "short"}

        runbook = Runbook("sizes", steps=[
            AddColumns("add", db, table="documents", columns={"size_class": "TEXT"}),
            Backfill("fill", db, table="documents", key="id", columns=["size_class"],
                     compute=size),
        ])
        """,
    )
    assert cli("run", rb, "--yes").exit_code == 0
    app(tmp_path / "app.db", "INSERT INTO documents VALUES (999, 1, 'new', 'app value')")
    first = cli("rollback", rb)
    assert first.exit_code == 1
    assert "documents.size_class" in first.output
    assert "999" in first.output
    assert "--keep-theirs" in first.output
    data = sqlite_digest(tmp_path / "app.db")
    forced = cli("rollback", rb, "--force")
    assert forced.exit_code == 2
    assert "nothing was changed" in forced.output
    assert sqlite_digest(tmp_path / "app.db") == data
    kept = cli("rollback", rb, "--keep-theirs")
    assert kept.exit_code == 1
    assert "left as it is" in kept.output
    assert rows(tmp_path / "app.db", "SELECT size_class FROM documents WHERE id=999") == [
        ("app value",)
    ]
    status = cli("status", rb, "--json")
    assert json.loads(status.output)["status"] == "rolled_back"


def test_rollback_to_exits_0_and_run_applies_the_undone_steps_again(tmp_path: Path) -> None:
    db = docs_db(tmp_path / "app.db")
    ex = make_executor(add_and_backfill(db), tmp_path / ".handrail", auto_approve=True)
    run = ex.run()
    done = sqlite_digest(db.path, include_handrail=False)
    partial = ex.rollback(run.run_id, to_step="fill")
    assert partial.exit_code == 0
    assert partial.status is RunStatus.ROLLED_BACK_TO
    assert rows(db.path, "SELECT count(*) FROM documents WHERE size_class IS NOT NULL") == [(0,)]
    again = ex.run()
    assert again.run_id == run.run_id
    assert again.status is RunStatus.COMPLETED, again.message
    assert sqlite_digest(db.path, include_handrail=False) == done
    assert ex.rollback(run.run_id).exit_code == 0
