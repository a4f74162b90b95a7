"""Steps explain themselves; the documents know no step type (issue 13).

A step defined here, unknown to handrail, shows its own ``explain_changes()``,
``explain_worst_case()`` and ``explain_rollback()`` sentences in ``handrail doc``, in
Markdown and HTML; ``report/`` imports no ready-made step and switches on no step class;
CopyTable, which the report once did not know, says what it does.
"""

from __future__ import annotations

import ast
import html
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

import handrail
from handrail.inline import code, spans
from handrail.runbook import Step

from .helpers import cli, make_items_db, write

REPORT = Path(handrail.__file__).parent / "report"

CHANGES = "turns every widget a quarter clockwise, one crate at a time"
WORST = "half the crate is turned; the turned half stays turned"
ROLLBACK = "turns each widget of this run back a quarter anticlockwise"

RUNBOOK = f'''
from pathlib import Path

from handrail import Runbook, SQLite
from handrail.model import Plan
from handrail.runbook import Step

db = SQLite("shop", Path(__file__).parent / "shop.db")


class TurnWidgets(Step):
    """A step handrail has never heard of."""

    def __init__(self, name, db, **kw):
        self.db = db
        super().__init__(name, writes=[db], **kw)

    def plan(self, ctx):
        return Plan(summary="would turn 0 widget(s)", items=0)

    def apply_batch(self, ctx, batch, items):
        return 0

    def rollback(self, ctx):
        """Not what the document should show: explain_rollback says it better."""

    def explain_changes(self):
        return "{CHANGES}"

    def explain_worst_case(self):
        return "{WORST}"

    def explain_rollback(self):
        return "{ROLLBACK} (`shop.widgets`)"


runbook = Runbook("turn", steps=[TurnWidgets("turn widgets", db)])
'''


@pytest.fixture
def turn_runbook(tmp_path: Path) -> Path:
    make_items_db(tmp_path / "shop.db")
    return write(tmp_path / "runbook.py", RUNBOOK)


def test_a_step_of_its_own_explains_itself_in_markdown(turn_runbook: Path) -> None:
    md = cli("doc", turn_runbook, "--no-plan").stdout
    step = md.split("### Step 1: turn widgets")[1]
    assert f"**Changes:** {CHANGES}" in step
    assert f"**Worst case on partial failure:** {WORST}" in step
    assert f"**Rollback:** {ROLLBACK} (`shop.widgets`)." in step
    assert "Not what the document should show" not in md
    blast = md.split("## Blast radius")[1]
    row = next(line for line in blast.splitlines() if line.startswith("| 1. turn widgets"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:3] == [CHANGES, WORST]
    assert cells[4] == f"{ROLLBACK} (`shop.widgets`)"


def test_a_step_of_its_own_explains_itself_in_html(turn_runbook: Path) -> None:
    page = cli("doc", turn_runbook, "--no-plan", "--format", "html").stdout
    assert page.count(html.escape(CHANGES)) == 3  # the summary, the step, the blast table
    assert page.count(html.escape(WORST)) == 2  # the step, the blast table
    assert page.count(f"{html.escape(ROLLBACK)} (<code>shop.widgets</code>)") == 2
    assert "Not what the document should show" not in page


def test_a_subclass_that_replaces_the_rollback_is_not_explained_by_its_parent(
    tmp_path: Path,
) -> None:
    """An explanation speaks for the rollback it sits beside: a subclass with its own
    rollback and no word on it gets that rollback's docstring, not the parent's sentence."""
    make_items_db(tmp_path / "shop.db")
    text = RUNBOOK.replace(
        'runbook = Runbook("turn", steps=[TurnWidgets("turn widgets", db)])',
        "class TurnOtherWay(TurnWidgets):\n"
        "    def rollback(self, ctx):\n"
        '        """Turns them back the other way round. Details follow."""\n\n\n'
        'runbook = Runbook("turn", steps=[TurnOtherWay("turn widgets", db)])',
    )
    md = cli("doc", write(tmp_path / "runbook.py", text), "--no-plan").stdout
    assert "**Rollback:** Turns them back the other way round." in md
    assert ROLLBACK not in md
    assert CHANGES in md  # what it changes is still the parent's to say


def test_the_engine_facts_win_over_a_step_without_an_inverse(tmp_path: Path) -> None:
    """A step with no rollback has no inverse, whatever its explanation claims."""
    make_items_db(tmp_path / "shop.db")
    text = RUNBOOK.replace("    def rollback(self, ctx):\n", "    def _unused(self, ctx):\n")
    md = cli("doc", write(tmp_path / "runbook.py", text), "--no-plan").stdout
    assert ROLLBACK not in md
    assert "no inverse: restore the run's verified backups with" in md
    assert "handrail backups restore RUN" in md


# -- report/ knows no step type -------------------------------------------------------------
#: where handrail's steps live
STEP_PACKAGES = ("handrail.steps", "handrail.ops", "handrail.recipes", "handrail.tablecopy")


def step_classes() -> dict[str, type[Step]]:
    """Every Step subclass handrail ships (ops and recipes), by class name."""
    for pkg in ("handrail.steps", "handrail.recipes", "handrail.tablecopy"):
        base = importlib.import_module(pkg)
        for info in pkgutil.walk_packages(base.__path__, pkg + "."):
            importlib.import_module(info.name)
    found: dict[str, type[Step]] = {}
    todo: list[type[Step]] = [Step]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__.startswith(STEP_PACKAGES):
                found[sub.__name__] = sub
            todo.append(sub)
    return found


def step_type_knowledge(source: str, package: str, known: dict[str, type[Step]]) -> list[str]:
    """What in ``source`` (a module of ``package``) knows a step type: imports of
    handrail.ops or handrail.recipes, imported step classes, ``isinstance`` against a
    step class, and step class names as strings."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            module = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            if module.startswith(STEP_PACKAGES):
                found.append(f"imports {module}")
            found += [f"imports {a.name}" for a in node.names if a.name in known]
        elif isinstance(node, ast.Import):
            found += [f"imports {a.name}" for a in node.names if a.name.startswith(STEP_PACKAGES)]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "isinstance":
            names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
            found += [f"isinstance on {n}" for n in sorted(names & {*known, "Step"})]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in known:
            found.append(f"names {node.value!r}")
    return sorted(set(found))


def test_the_report_imports_no_step_class_and_asks_no_step_its_type() -> None:
    known = step_classes()
    assert {"SQL", "Backfill", "ImportJSON", "CopyTable", "HTTPPush", "PgSQL"} <= set(known)
    for path in sorted(REPORT.glob("*.py")):
        found = step_type_knowledge(path.read_text(), "handrail.report", known)
        assert found == [], f"{path.name} knows step types: {found}"


def test_the_scan_would_catch_the_old_switch() -> None:
    """The scan is not vacuous: the way describe.py used to know steps is caught."""
    old = (
        "from ..steps.sql import SQL, AddColumns\n"
        "from ..runbook import Step\n"
        "def f(step):\n"
        "    if isinstance(step, AddColumns | SQL):\n"
        "        return 1\n"
        '    return "PgSQL" in {c.__name__ for c in type(step).__mro__}\n'
    )
    found = step_type_knowledge(old, "handrail.report", step_classes())
    assert found == [
        "imports AddColumns",
        "imports SQL",
        "imports handrail.steps.sql",
        "isinstance on AddColumns",
        "isinstance on SQL",
        "names 'PgSQL'",
    ]


# -- CopyTable, unknown to the report before, explains itself ---------------------------------
COPY_RUNBOOK = """
from pathlib import Path

from handrail import Runbook, SQLite
from handrail.ops.pg_copy import CopyTable
from handrail.resources.postgres import Postgres
from handrail.sqlmap import TableMap

src = SQLite("shop", Path(__file__).parent / "shop.db")
pg = Postgres("warehouse", "postgresql://nobody@127.0.0.1:9/none")
mapping = TableMap("items", "stock.items", key=["id"])
runbook = Runbook("copy", steps=[CopyTable("copy items", src, pg, mapping, rows_per_batch=250)])
"""


def test_copy_table_explains_its_change_and_rollback(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    make_items_db(tmp_path / "shop.db")
    rb = write(tmp_path / "runbook.py", COPY_RUNBOOK)
    md = cli("doc", rb, "--no-plan").stdout
    step = md.split("### Step 1: copy items")[1]
    assert (
        "**Changes:** upserts the rows of `items` in `shop` into `stock.items` on "
        "`warehouse` by `id`, in key ranges of up to 250 rows" in step
    )
    assert "**Worst case on partial failure:** a batch fails: it rolls back whole" in step
    assert "**Rollback:** empties `stock.items` again if it was empty before the copy" in step
    assert "restore the run's verified backups with `handrail backups restore RUN`" in step
    for degraded in ("writes warehouse", "its own inverse", "one transaction rolls back"):
        assert degraded not in md


# -- the inline convention ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sentence", "markup"),
    [
        ("plain words", "plain words"),
        ("a *star* and a \\ backslash", "a \\*star\\* and a \\\\ backslash"),
        (f"adds {code('c`2 INT')} to `items`", "adds ``c`2 INT`` to `items`"),
        ("one ` unpaired", "one \\` unpaired"),
        ("``a`` then `", "``a`` then \\`"),
    ],
)
def test_explanations_keep_their_code_spans_and_nothing_else_is_markup(
    sentence: str, markup: str
) -> None:
    assert spans(sentence) == markup
