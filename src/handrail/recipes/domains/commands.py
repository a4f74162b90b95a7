"""The domain recipe's own command, ``handrail ties``: documents whose domain stayed tied.

The recipe brings it (``Recipe.commands``) and the core CLI registers it. The queue's
database is found in the runbook as the one the recipe's backfill writes its status
column to, never by a resource name.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ...cli.common import console, errors, json_option
from ...engine.loader import load_runbook
from ...errors import BadInput
from .logic import COLUMNS

#: the column the passes write a document's status to (``tied_manual`` waits for a human)
_STATUS = COLUMNS[1]


def review_database(runbook: Path) -> Path:
    """The SQLite database of the runbook whose documents get the recipe's domain status."""
    from ...steps.backfill import Backfill

    for step in load_runbook(runbook).steps:
        if isinstance(step, Backfill) and _STATUS in step.columns:
            return Path(step.db.path)
    raise BadInput(
        f"{runbook} has no step that assigns domains to documents",
        hint="`handrail ties` works with the domains recipe",
    )


@click.group()
def ties() -> None:
    """Documents whose domain stayed tied: list them, assign one (manual_assigned)."""


@ties.command("list")
@click.argument("runbook", type=click.Path(path_type=Path))
@json_option
def ties_list(runbook: Path, as_json: bool) -> None:
    """The tied_manual documents with their tied domains and the channel's counts."""
    from rich.table import Table

    from .review import list_queue

    with errors():
        items = list_queue(review_database(runbook))
        if as_json:
            click.echo(
                json.dumps(
                    [
                        {
                            "hash": i.hash,
                            "filename": i.filename,
                            "channel": i.channel,
                            "tied": [list(t) for t in i.tied],
                            "fallback": i.fallback,
                        }
                        for i in items
                    ],
                    indent=2,
                )
            )
            return
        t = Table(title=f"{len(items)} document(s) waiting for a human")
        for col in ("hash", "filename", "channel", "tied domains", "fallback"):
            t.add_column(col)
        for i in items:
            t.add_row(
                i.hash[:12],
                i.filename or "",
                i.channel or "",
                ", ".join(f"{d} ({n})" for d, n in i.tied),
                i.fallback or "",
            )
        console.print(t)


@ties.command("resolve")
@click.argument("runbook", type=click.Path(path_type=Path))
@click.argument("doc_hash", metavar="HASH")
@click.argument("domain")
@click.option("--as", "who", default=None, help="Who decides (default: the current user).")
def ties_resolve(runbook: Path, doc_hash: str, domain: str, who: str | None) -> None:
    """Assign DOMAIN to the tied document HASH (status manual_assigned).

    HASH is the full hash or a unique prefix of at least 8 characters, such as the 12
    that `handrail ties list` shows.
    """
    from ...engine.journal import whoami
    from .review import resolve

    with errors():
        full = resolve(review_database(runbook), doc_hash, domain, who=who or whoami())
        console.print(f"{full}: {domain} (manual_assigned)")
