"""The CLI's layout: no import cycle, commands importable alone, recipes that bring their own
commands, and nothing a user sees pointing at folders that are not in this repository."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from handrail import recipes
from handrail.cli import main
from handrail.cli.demo import register_recipe_commands

from .helpers import cli, make_items_db, write

SRC = Path(__file__).parent.parent / "src" / "handrail"
CLI_DIR = SRC / "cli"
#: the modules that define commands (common and render define none)
COMMAND_MODULES = ("run", "state", "reports", "demo")
RECIPE_COMMANDS = ("handrail.recipes.dhash.commands", "handrail.recipes.domains.commands")


def python(code: str) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter: what it imports is not hidden by this process's imports."""
    env = os.environ | {"COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def cli_imports(module: Path) -> set[str]:
    """The sibling modules of handrail.cli that ``module`` imports (at any depth)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(a.name for a in node.names)
    return found


@pytest.mark.parametrize(
    "module",
    [f"handrail.cli.{m}" for m in ("common", "render", *COMMAND_MODULES)] + list(RECIPE_COMMANDS),
)
def test_each_cli_module_imports_alone(module: str) -> None:
    proc = python(f"import {module}")
    assert proc.returncode == 0, proc.stderr


def test_common_imports_no_command_module() -> None:
    proc = python(
        """
        import json, sys
        import handrail.cli.common
        print(json.dumps(sorted(m for m in sys.modules if m.startswith("handrail."))))
        """
    )
    assert proc.returncode == 0, proc.stderr
    loaded = set(json.loads(proc.stdout))
    assert "handrail.cli.common" in loaded
    commands = {f"handrail.cli.{m}" for m in COMMAND_MODULES} | {"handrail.recipes"}
    assert not loaded & commands, loaded & commands


def test_no_cli_module_imports_a_command_module_but_the_package() -> None:
    """The cycle was cli -> cli_reports -> cli: now only __init__ imports command modules."""
    for path in CLI_DIR.glob("*.py"):
        if path.name == "__init__.py":
            continue
        imported = cli_imports(path) & set(COMMAND_MODULES)
        assert not imported, f"{path.name} imports {imported}"
    assert set(COMMAND_MODULES) <= cli_imports(CLI_DIR / "__init__.py")


def test_production_code_does_not_import_testing() -> None:
    """Only the old alias modules in testing/ may name it; recipes use recipes.demo_services."""
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.parent.name == "testing":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any("testing" in n.split(".") for n in names):
                offenders.append(str(path.relative_to(SRC)))
    assert offenders == []


def test_the_core_cli_names_no_recipe_step_or_resource() -> None:
    text = "\n".join(p.read_text() for p in CLI_DIR.glob("*.py"))
    for magic in ("find duplicates", '"recon"', "PEERTUBE_URL", "review_html"):
        assert magic not in text


def test_old_paths_are_the_moved_modules() -> None:
    import handrail.cli.render
    import handrail.console
    import handrail.recipes.demo_services.peertube
    import handrail.recipes.demo_services.postgres
    import handrail.testing.peertube
    import handrail.testing.postgres

    assert handrail.console is handrail.cli.render
    assert handrail.testing.postgres is handrail.recipes.demo_services.postgres
    assert handrail.testing.peertube is handrail.recipes.demo_services.peertube
    cluster = handrail.testing.postgres.TempCluster
    assert cluster.__module__ == "handrail.recipes.demo_services.postgres"


def test_the_recipes_own_commands_are_registered_on_main() -> None:
    from handrail.recipes.dhash.commands import review
    from handrail.recipes.domains.commands import ties

    assert main.commands["review"] is review
    assert main.commands["ties"] is ties
    assert recipes.get("dhash").commands == (review,)
    assert recipes.get("domains").commands == (ties,)


@click.command()
@click.argument("who")
def hello(who: str) -> None:
    """Say hello (a command a test recipe brings)."""
    click.echo(f"hello {who} from a recipe")


def test_a_recipe_that_declares_a_command_gets_it_registered() -> None:
    tiny = recipes.Recipe("tiny", "a test recipe", "a test", lambda root: "", commands=(hello,))
    group = click.Group("handrail", commands=dict(main.commands))
    register_recipe_commands(group, [tiny])
    result = CliRunner().invoke(group, ["hello", "ana"])
    assert result.exit_code == 0, result.output
    assert result.output == "hello ana from a recipe\n"
    assert "Say hello" in CliRunner().invoke(group, ["--help"]).output


def test_a_recipe_command_cannot_replace_a_core_command() -> None:
    @click.command("run")
    def fake_run() -> None:
        """Not the real run."""

    bad = recipes.Recipe("bad", "a test recipe", "a test", lambda root: "", commands=(fake_run,))
    group = click.Group("handrail", commands=dict(main.commands))
    with pytest.raises(ValueError, match="recipe 'bad' brings a command 'run'"):
        register_recipe_commands(group, [bad])
    assert group.commands["run"] is main.commands["run"]


def test_a_recipe_added_before_the_cli_loads_has_its_command_in_handrail() -> None:
    """The real path: handrail.cli.main registers what every recipe in RECIPES brings."""
    proc = python(
        """
        import click
        from handrail import recipes

        @click.command()
        def hello():
            click.echo("hello from a recipe")

        recipes.RECIPES["tiny"] = recipes.Recipe(
            "tiny", "a test recipe", "a test", lambda root: "", commands=(hello,)
        )
        from handrail.cli import main
        main(["hello"])
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hello from a recipe\n"


def every_command(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            out += every_command(command, (*prefix, name))
        else:
            out.append((*prefix, name))
    return out


def test_recipes_and_help_texts_mention_no_seed_folders_or_policy_numbers() -> None:
    listed = cli("recipes", "--json")
    assert listed.exit_code == 0
    rows = json.loads(listed.output)
    assert {r["name"] for r in rows} == set(recipes.RECIPES)
    assert all(r["source"] for r in rows)
    texts = [listed.output.lower(), cli("recipes").output.lower()]
    for path in every_command(main):
        texts.append(cli(*path, "--help").output.lower())
    for text in texts:
        for word in ("seed", "shared/", "policy 4"):
            assert word not in text, (word, text[:300])


def test_review_finds_the_queue_step_by_its_type_whatever_its_name(tmp_path: Path) -> None:
    rb = write(
        tmp_path / "runbook.py",
        """
        from pathlib import Path
        from handrail import Runbook
        from handrail.recipes.dhash.recipe import FindDuplicates

        here = Path(__file__).parent
        runbook = Runbook("renamed", steps=[
            FindDuplicates("cluster the photos", threshold=4, band=(5, 10),
                           decisions=here / "mine.json"),
        ])
        """,
    )
    result = cli("review", "list", rb)
    assert result.exit_code == 2
    assert "has no runs yet" in result.output  # found the step; only the run is missing
    from handrail.images.review import DECISIONS_FORMAT, VERSION

    empty = {"format": DECISIONS_FORMAT, "version": VERSION, "decisions": []}
    (tmp_path / "decisions.json").write_text(json.dumps(empty))
    imported = cli("review", "import", tmp_path / "decisions.json", "--runbook", rb)
    assert imported.exit_code == 0, imported.output
    assert str(tmp_path / "mine.json") in imported.output.replace("\n", "")


def test_review_and_ties_refuse_a_runbook_of_another_recipe(tmp_path: Path) -> None:
    db = make_items_db(tmp_path / "app.db")
    rb = write(
        tmp_path / "runbook.py",
        f"""
        from handrail import Runbook, SQLite
        from handrail.steps.sql import AddColumns

        runbook = Runbook("other", steps=[
            AddColumns("add", SQLite("recon", {str(db)!r}), table="items",
                       columns={{"x": "TEXT"}}),
        ])
        """,
    )
    review = cli("review", "list", rb)
    assert review.exit_code == 2
    assert "has no step with a review queue" in review.output
    ties = cli("ties", "list", rb)  # a database named "recon" is not what makes it the queue
    assert ties.exit_code == 2
    assert "has no step that assigns domains to documents" in ties.output


def test_ties_finds_the_database_the_recipe_writes_domains_to(tmp_path: Path) -> None:
    from handrail.recipes.domains.commands import review_database

    db = tmp_path / "catalogue.db"
    rb = write(
        tmp_path / "runbook.py",
        f"""
        from handrail import Runbook, SQLite
        from handrail.steps.backfill import Backfill
        from handrail.recipes.domains.logic import COLUMNS

        runbook = Runbook("renamed", steps=[
            Backfill("assign", SQLite("catalogue", {str(db)!r}), table="documents",
                     key="hash", columns=list(COLUMNS), compute=lambda row: None),
        ])
        """,
    )
    assert review_database(rb) == db


def test_the_demo_says_what_it_started_from_the_recipes_needs() -> None:
    """The words the demo printed when it tested PEERTUBE_URL, now from ``needs``."""
    from handrail.recipes.demo_services import describe

    assert describe(recipes.get("domains").needs) == (
        "a throwaway PostgreSQL cluster and a PeerTube-like API on loopback"
    )
    assert describe(recipes.get("merge").needs) == "a throwaway PostgreSQL cluster"
    assert recipes.get("json-state").needs == ()
