"""`handrail doc`: the generated runbook and blast-radius documents.

The golden file ``tests/golden/runbook_doc.md`` is the whole Markdown document of a small
runbook, above its footer. When a change to the document is intended, regenerate it with

    HANDRAIL_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_doc.py -k golden

and review the diff of the golden file like any other change.
"""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from handrail import recipes
from handrail.engine.journal import StepRow
from handrail.engine.loader import load_runbook
from handrail.model import Plan, StepStatus
from handrail.report import FOOTER_MARK, DocInputs, Rehearsal, rollback_estimate

from .helpers import cli, make_items_db, write

ROOT = Path(__file__).parent.parent
GOLDEN = Path(__file__).parent / "golden" / "runbook_doc.md"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

RUNBOOK = '''
"""Review tracking for the document store."""
from pathlib import Path

from handrail import (SQL, AddColumns, BlastRadius, Checkpoint, CreateIndex, Gate, ImportJSON,
                      JSONFile, RejectShare, Runbook, SQLite, SourceRecord, checks)

here = Path(__file__).parent
db = SQLite("app", here / "app.db")
feed = JSONFile("feed", here / "reviews.json")


def reviews(doc, name):
    for key, value in doc["reviews"].items():
        yield SourceRecord(name, key, value)


def to_row(rec):
    return {"id": int(rec.key), "name": rec.value["name"], "status": rec.value["status"],
            "score": rec.value["score"]}


imports = ImportJSON(
    "import reviews", source=feed, reader=reviews, db=db, table="items", key="id",
    mapper=to_row, stages=[10, None], batch_size=5,
    blast=BlastRadius(changes="upserts review rows into items by id",
                      worst_case="a batch fails: it rolls back whole; resume skips done batches",
                      detection="row counts after each stage"),
    gates=[Gate("count after stage", at="stage",
                checks=[checks.RowCount(db, "items", at_least=50)])],
)

runbook = Runbook(
    "review-tracking",
    description="Adds review columns, imports reviews from reviews.json, marks stale rows.",
    prerequisites=["stop the review worker (systemctl stop review-worker)",
                   "announce a 10-minute maintenance window"],
    steps=[
        AddColumns("add review columns", db, table="items",
                   columns={"reviewed_at": "TEXT", "reviewer": "TEXT"},
                   gates=[Gate("columns in place", checks=[
                       checks.ColumnsExist(db, "items", ["reviewed_at", "reviewer"]),
                       checks.SchemaSuperset(db)])]),
        CreateIndex("index status", db, index="idx_items_status", table="items",
                    columns=["status"]),
        imports,
        SQL("mark stale", db,
            up="UPDATE items SET status = 'stale' WHERE score < 2 AND status = 'old'",
            down="UPDATE items SET status = 'old' WHERE status = 'stale'",
            verify="SELECT count(*) = 0 FROM items WHERE score < 2 AND status = 'old'",
            gates=[Gate("looks right", approval=True, on_fail="rollback",
                        instructions="Compare five rows with the old admin page.",
                        checks=[checks.Sample(db, "SELECT id, name, status FROM items", 5),
                                checks.RowCount(db, "SELECT count(*) FROM items "
                                                "WHERE status = 'stale'", at_most=40)])]),
        Checkpoint("final check", gates=[Gate("nothing lost", checks=[
            RejectShare(imports, max_share=0.02),
            checks.RowCount(db, "items", at_least=60)])]),
        SQL("drop scratch table", db, up="DROP TABLE IF EXISTS scratch",
            blast=BlastRadius(changes="drops the scratch table",
                              worst_case="the table is gone: restore the backup",
                              detection="the app logs a missing-table error")),
    ],
)
'''


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    make_items_db(tmp_path / "app.db", 50)
    reviews = {
        str(i): {"name": f"review {i}", "status": "new", "score": i / 10} for i in range(40, 71)
    }
    (tmp_path / "reviews.json").write_text(json.dumps({"reviews": reviews}))
    write(tmp_path / "runbook.py", RUNBOOK)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def body(text: str) -> str:
    """The document above its footer (the part that must be stable)."""
    assert FOOTER_MARK in text
    return text.split(FOOTER_MARK)[0]


def test_golden_markdown(project: Path) -> None:
    out = cli("doc", "runbook.py")
    assert out.exit_code == 0, out.output
    text = body(out.stdout)
    if os.environ.get("HANDRAIL_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "regenerate: HANDRAIL_UPDATE_GOLDEN=1 (see docstring)"
    # Stable: the same runbook and journal give the same bytes, footer included.
    assert cli("doc", "runbook.py").stdout == out.stdout
    footer = out.stdout.split(FOOTER_MARK)[1]
    assert re.search(r"plan hash `[0-9a-f]{16}`", footer)


def test_document_says_what_the_engine_enforces(project: Path) -> None:
    text = cli("doc", "runbook.py").stdout
    # Commands are copyable as shown, with quoting where a step name needs it.
    assert "`handrail rollback runbook.py --to 'import reviews'`" in text
    assert "`handrail run runbook.py --allow-destructive`" in text
    # Stages and their gate, the manual gate and who answers it, the rollback on failure.
    assert "10, then the rest (batches of 5); gate `count after stage` after each" in text
    assert "Who answers: a person must approve" in text
    assert "the step is rolled back, then the run stops" in text
    assert "**Operator:** Compare five rows with the old admin page." in text
    # The destructive step: no inverse, restore from backups.
    assert "**destructive** — deletes, or changes with no inverse" in text
    assert "no inverse: restore the run's verified backups" in text
    # Without a rehearsal, nothing pretends to be measured.
    assert "not rehearsed" in text


def test_blast_part_only(project: Path) -> None:
    text = cli("doc", "runbook.py", "--part", "blast").stdout
    assert text.startswith("# Blast radius: review-tracking")
    assert "| 3. import reviews | upserts review rows into items by id |" in text
    assert "## Steps\n" not in text
    assert "### Steps by risk tier" in text


def test_doc_after_a_rehearsal_shows_measured_rollback_times(project: Path) -> None:
    # Without the destructive step, every step's own rollback is rehearsed and timed.
    rb = project / "runbook.py"
    rb.write_text(rb.read_text().split('        SQL("drop scratch table"')[0] + "    ],\n)\n")
    rehearsed = cli("rehearse", "runbook.py", "--json")
    assert rehearsed.exit_code == 0, rehearsed.output
    text = cli("doc", "runbook.py").stdout
    run_id = json.loads(rehearsed.stdout)["run_id"]
    assert f"the last one (`{run_id}`) passed" in text
    blast = text.split("## Blast radius")[1]
    assert "not rehearsed" not in blast
    row = re.search(r"\| 3\. import reviews \|.*\| ([^|]+) \| reversible \|", blast)
    assert row, blast
    assert re.fullmatch(r"(< )?[\d.]+ s \(rehearsed for 31 item\(s\)\)", row.group(1))
    assert "The runbook changed since" not in text


def test_doc_after_rehearsing_a_restore(project: Path) -> None:
    assert cli("rehearse", "runbook.py").exit_code == 0
    blast = cli("doc", "runbook.py").stdout.split("## Blast radius")[1]
    assert "(restore of every backup, rehearsed)" in blast  # the destructive step
    assert "not rehearsed step by step (the rehearsed recovery" in blast  # the others


def test_rollback_estimate_scales_to_the_current_dry_run() -> None:
    from handrail import SQL, Runbook, SQLite

    step = SQL("s", SQLite("db", "/nonexistent.db"), up="SELECT 1", down="SELECT 1")
    Runbook("r", steps=[step])
    row = StepRow(
        name="s",
        position=0,
        tier="reversible",
        status=StepStatus.ROLLED_BACK,
        plan={"summary": "", "items": 100},
        state={},
        items_total=100,
        items_done=100,
        apply_seconds=4.0,
        rollback_seconds=2.0,
        pre_fingerprints=None,
        error=None,
    )
    reh = Rehearsal("r1", True, "ok", "hash", "steps", 2.0, {"s": row})
    scaled = DocInputs("rb.py", plans={"s": Plan("", items=1000)}, rehearsal=reh)
    assert rollback_estimate(step, scaled) == (
        "≈ 20 s (rehearsed: 2.00 s for 100 item(s); now 1,000)"
    )
    same = DocInputs("rb.py", plans={"s": Plan("", items=100)}, rehearsal=reh)
    assert rollback_estimate(step, same) == "2.00 s (rehearsed for 100 item(s))"
    assert rollback_estimate(step, DocInputs("rb.py")) == "not rehearsed"


def test_doc_without_data_still_documents_the_runbook(project: Path) -> None:
    (project / "app.db").unlink()
    out = cli("doc", "runbook.py")
    assert out.exit_code == 0, out.output
    assert "The dry run failed when this document was generated" in out.stdout
    assert "## Blast radius" in out.stdout
    no_plan = cli("doc", "runbook.py", "--no-plan").stdout
    assert "generated with --no-plan" in no_plan


def test_doc_writes_a_file_and_refuses_bad_input(project: Path) -> None:
    out = cli("doc", "runbook.py", "-o", "docs/runbook.md")
    assert out.exit_code == 0, out.output
    assert (project / "docs" / "runbook.md").read_text().startswith("# Runbook: review-tracking")
    assert cli("doc", "missing.py").exit_code == 2
    (project / "afile").write_text("")
    unwritable = cli("doc", "runbook.py", "-o", "afile/runbook.md")
    assert unwritable.exit_code == 2
    assert "cannot write afile/runbook.md" in unwritable.output
    assert cli("doc", "runbook.py", "--format", "pdf").exit_code == 2


NO_SANDBOX = """
from pathlib import Path
from handrail import Runbook, TransformJSON
from handrail.errors import ResourceError
from handrail.resources import JSONFile

class Service(JSONFile):
    external = True
    def check_clone(self):
        raise ResourceError("videos: no sandbox address", hint="give it a sandbox address")

svc = Service("videos", Path(__file__).parent / "videos.json")
runbook = Runbook("push", steps=[
    TransformJSON("set `odd` * | names", svc, lambda old: old, stages=[1, None]),
])
"""


def test_a_runbook_that_cannot_be_rehearsed_says_so_and_names_stay_literal(
    tmp_path: Path,
) -> None:
    (tmp_path / "videos.json").write_text("{}")
    rb = write(tmp_path / "rb.py", NO_SANDBOX)
    md = cli("doc", rb).stdout
    assert (
        "**Rehearsal:** not possible as written: videos: no sandbox address "
        "(give it a sandbox address)." in md
    )
    # Markup characters in a step name are escaped, and a pipe does not split a cell.
    assert "### Step 1: set \\`odd\\` \\* | names" in md
    assert "| 1. set \\`odd\\` \\* \\| names |" in md
    page = cli("doc", rb, "--format", "html").stdout
    assert "Step 1: set `odd` * | names</h3>" in page
    assert "<td>1. set `odd` * | names</td>" in page


@pytest.fixture
def small_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    """Recipes make their usual sample data, only less of it (the document is the same)."""
    import handrail.images.sample as images_sample
    import handrail.recipes.domains.sample as domains_sample

    full_images = images_sample.make_sample_library
    monkeypatch.setattr(
        images_sample,
        "make_sample_library",
        lambda root, count=0, **kw: full_images(Path(root).resolve(), count=12, **kw),
    )
    full_domains = domains_sample.make_sample
    monkeypatch.setattr(
        domains_sample,
        "make_sample",
        lambda root, documents=0, **kw: full_domains(root, documents=120, **kw),
    )


def recipe_params() -> list[Any]:
    """Every recipe; those whose demo starts PostgreSQL carry the postgres marker."""
    return [
        pytest.param(name, marks=[pytest.mark.postgres] if "postgres" in recipe.needs else [])
        for name, recipe in sorted(recipes.RECIPES.items())
    ]


@pytest.mark.usefixtures("small_samples")
@pytest.mark.parametrize("name", recipe_params())
def test_every_step_gate_and_check_of_each_recipe_is_in_its_document(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = recipes.RECIPES[name]
    root = tmp_path / name
    root.mkdir()
    with recipes.services(recipe) as env:  # a throwaway PostgreSQL and API, if it needs them
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        rb_path = write(root / "runbook.py", recipe.prepare(root))
        rb = load_runbook(rb_path)
        md = cli("doc", rb_path, "--no-plan").stdout
        page = cli("doc", rb_path, "--no-plan", "--format", "html").stdout
    blast = md.split("## Blast radius")[1]
    for i, step in enumerate(rb.steps, 1):
        assert f"### Step {i}: {step.name}" in md
        assert f"| {i}. {step.name} |" in blast
        assert f"Step {i}: {html.escape(step.name)}</h3>" in page
        for gate in step.gates:
            assert f"Gate `{gate.name}`" in md
            assert html.escape(gate.name) in page
            for check in gate.checks:
                assert f"| {check.name} |" in md


def open_page(browser: Any, path: Path) -> tuple[Any, list[str]]:
    """A page on ``path`` and the console errors and page errors it raised."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    return page, errors


@pytest.mark.browser
def test_html_documents_open_in_headless_chromium(project: Path) -> None:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "run scripts/ensure-chromium.sh first"
    assert cli("doc", "runbook.py", "--format", "html", "-o", "runbook.html").exit_code == 0
    assert cli("run", "runbook.py", "--yes", "--allow-destructive").exit_code == 0
    assert cli("report", "runbook.py", "--format", "html", "-o", "report.html").exit_code == 0
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page, errors = open_page(browser, project / "runbook.html")
            assert errors == []
            assert page.text_content("h1") == "Runbook: review-tracking"
            assert page.locator("h3").count() == 7  # six steps and "by risk tier"
            assert page.locator(".callout.stop").count() == 4
            assert page.locator("nav a").count() == 7
            page.screenshot(path=str(ARTIFACTS / "runbook-doc.png"), full_page=True)

            page, errors = open_page(browser, project / "report.html")
            assert errors == []
            assert "Run report: review-tracking" in (page.text_content("h1") or "")
            assert page.locator("h2", has_text="Gates and checks").count() == 1
            page.screenshot(path=str(ARTIFACTS / "run-report.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "runbook-doc.png").stat().st_size > 10_000
