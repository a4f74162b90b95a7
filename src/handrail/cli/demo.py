"""``demo``, which makes a recipe's sample data and runs it end to end, and ``recipes``,
which lists them; and :func:`register_recipe_commands`, which adds the commands recipes
bring to ``main``.

The demo knows no recipe: the recipe says which services it needs and
:mod:`handrail.recipes.demo_services` starts them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click
from rich.table import Table

from .. import recipes
from ..engine.executor import Executor
from ..engine.loader import load_runbook, runbook_key
from ..errors import PolicyError
from ..model import RunStatus
from ..recipes.demo_services import describe as describe_services
from .common import console, errors, finish, json_option, main, open_journal, options
from .render import plan_table

if TYPE_CHECKING:
    from ..recipes import Recipe


@main.command()
@click.option("--recipe", default=None, help="Which recipe to run (see `handrail recipes`).")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    default=Path("handrail-demo"),
    show_default=True,
    help="Where to make the sample data and the runbook.",
)
@click.option(
    "--fresh/--keep",
    default=True,
    show_default=True,
    help="Start from new sample data (removes DIR first) or keep what is there.",
)
def demo(recipe: str | None, directory: Path, fresh: bool) -> None:
    """Make sample data and run a recipe end to end, non-interactively.

    Prints the plan, every gate with its evidence (manual gates are approved
    automatically, and it says so), the result, and the command that rolls it back.
    """
    with errors():
        r = recipes.get(recipe or recipes.DEFAULT)
        _make_room(directory, fresh)
        with recipes.services(r) as env:
            os.environ.update(env)
            rb_path = directory / "runbook.py"
            if fresh or not rb_path.exists():
                console.print(f"[bold]handrail demo[/]: recipe [bold]{r.name}[/] — {r.summary}")
                if r.needs:
                    console.print(f"Started {describe_services(r.needs)} for this demo.")
                console.print(f"Making sample data in {directory}/ …")
                rb_path.write_text(r.prepare(directory))
            _run_demo(rb_path, rollback_now=bool(r.needs))


def _make_room(directory: Path, fresh: bool) -> None:
    """Empty DIR for fresh sample data, but only a DIR the demo made (it leaves a marker)."""
    marker = directory / ".handrail-demo"
    if fresh and directory.exists():
        if not marker.exists():
            raise PolicyError(
                f"{directory} exists and was not made by `handrail demo`",
                hint="choose another --dir",
            )
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    marker.write_text("made by handrail demo\n")


def _run_demo(rb_path: Path, *, rollback_now: bool) -> NoReturn:
    """Plan and run with every gate approved; with ``rollback_now`` (the services stop with
    the demo), roll the completed run back before they do."""
    journal = open_journal(rb_path, None)
    ex = Executor(
        load_runbook(rb_path),
        journal,
        runbook_key=runbook_key(rb_path),
        options=options(yes=True, allow_destructive=True),
    )
    console.print(plan_table(ex.plan()))
    console.print(f"\nRunning {rb_path} (gates that need a human are approved automatically):")
    result = ex.run()
    if result.status is RunStatus.COMPLETED:
        rejects = journal.rejects(result.run_id)
        if rejects:
            console.print(
                f"\n{len(rejects)} record(s) could not be imported; each is in the "
                f"journal (`handrail status {result.run_id} --state-dir "
                f"{os.path.relpath(journal.state_dir)} --json`)."
            )
    if rollback_now and result.status is RunStatus.COMPLETED:
        # The cluster goes away with the demo: show the exact rollback now instead
        # of printing a command that could not reach it later.
        console.print(
            "\nThe throwaway services stop with the demo, so it rolls the "
            "run back now, the way `handrail rollback` would:"
        )
        result = ex.rollback(result.run_id)
    finish(result, journal, str(rb_path))


@main.command("recipes")
@json_option
def recipes_cmd(as_json: bool) -> None:
    """List the recipes: ready-made runbooks for real migrations once done by hand."""
    rows = [
        {"name": r.name, "summary": r.summary, "source": r.source} for r in recipes.RECIPES.values()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    t = Table(title="Recipes")
    for col in ("name", "summary", "source"):
        t.add_column(col)
    for row in rows:
        t.add_row(row["name"], row["summary"], row["source"])
    console.print(t)
    console.print("Run one: handrail demo --recipe NAME")


def register_recipe_commands(group: click.Group, found: Iterable[Recipe]) -> None:
    """Add the commands each recipe brings to ``group`` (sqlite-utils' register_commands
    hook, without the plugin machinery). A recipe may not take a name already used: a
    command silently replaced would run something else than its help says."""
    for recipe in found:
        for command in recipe.commands:
            name = command.name or ""
            if name in group.commands:
                raise ValueError(
                    f"recipe {recipe.name!r} brings a command {name!r} that already exists"
                )
            group.add_command(command, name)
