"""The dHash recipe's own command, ``handrail review``: its near-duplicate review queue.

The recipe brings it (``Recipe.commands``) and the core CLI registers it. The queue's step
is found in the runbook by its type (:class:`~.recipe.FindDuplicates`), never by a name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ...cli.common import console, errors, json_option, open_journal
from ...engine.loader import load_runbook, runbook_key
from ...errors import BadInput

if TYPE_CHECKING:
    from .recipe import FindDuplicates


def review_step(runbook: Path) -> FindDuplicates:
    """The runbook's step that keeps the review queue and its decisions."""
    from .recipe import FindDuplicates

    for step in load_runbook(runbook).steps:
        if isinstance(step, FindDuplicates):
            return step
    raise BadInput(
        f"{runbook} has no step with a review queue",
        hint="`handrail review` works with the dhash recipe",
    )


@click.group()
def review() -> None:
    """The near-duplicate review queue: list it, import decisions made on its page."""


@review.command("list")
@click.argument("runbook", type=click.Path(path_type=Path))
@json_option
def review_list(runbook: Path, as_json: bool) -> None:
    """Where the latest run's review files are, and how many pairs wait for a human."""
    with errors():
        step = review_step(runbook)
        journal = open_journal(runbook, None)
        run = journal.latest_run(runbook_key(runbook))
        if run is None:
            raise BadInput(f"{runbook} has no runs yet", hint=f"handrail run {runbook}")
        state = journal.step(run.id, step.name).state
        stored = 0
        if step.decisions.exists():
            stored = len(json.loads(step.decisions.read_text()).get("decisions", []))
        data = {
            "run": run.id,
            "pending_pairs": state.get("review"),
            "clusters": state.get("clusters"),
            "page": state.get("review_html"),
            "decisions_kept": stored,
            "decisions_file": str(step.decisions),
        }
        if as_json:
            click.echo(json.dumps(data, indent=2))
            return
        console.print(
            f"{data['pending_pairs']} pair(s) to review, {data['clusters']} "
            f"cluster(s), {stored} decision(s) kept"
        )
        console.print(f"open the page: {data['page']}")


@review.command("import")
@click.argument("decisions_file", type=click.Path(path_type=Path))
@click.option(
    "--runbook",
    type=click.Path(path_type=Path),
    required=True,
    help="The dhash runbook whose decisions store gets them.",
)
def review_import(decisions_file: Path, runbook: Path) -> None:
    """Import decisions saved from the review page; kept across re-runs."""
    from ...images import DecisionStore, import_decisions

    with errors():
        store = DecisionStore(review_step(runbook).decisions)
        changed = store.record(import_decisions(decisions_file))
        store.save()
        console.print(f"{changed} decision(s) recorded ({len(store)} kept in {store.path})")
        console.print(f"apply them: handrail run {runbook} --new")
