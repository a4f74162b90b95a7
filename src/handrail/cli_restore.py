"""What `handrail backups restore` shows and asks before it overwrites anything."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from .errors import PolicyError
from .journal import Journal
from .restore import RestorePlan, RestoreResult


def print_restore_plan(out: Console, err: Console, plan: RestorePlan) -> None:
    """Per resource: what differs from the backup, who wrote it since, what nobody here did."""
    out.print(f"Restore from the backups of run [bold]{plan.run_id}[/] would overwrite:")
    for o in plan.resources:
        if not o.restorable:
            continue
        if not o.differs:
            out.print(f"  {o.resource} ({o.kind}): equal to the backup; nothing to overwrite")
            continue
        out.print(f"  [bold]{o.resource}[/] ({o.kind}): {escape(', '.join(o.differs))}")
        if o.writers:
            out.print(f"    written since the backup by: {escape('; '.join(o.writers))}")
        if o.outside:
            out.print(
                "    [yellow]changed by no run of this journal[/] (someone else's work?): "
                f"{escape(', '.join(o.outside))}"
            )
    if not plan.changes:
        out.print("  nothing: every resource equals its backup")
    for w in plan.warnings:
        err.print(f"[yellow]note:[/] {escape(w)}")


def confirm_restore(plan: RestorePlan, *, yes: bool) -> None:
    """Ask, unless --yes. Without a terminal there is nobody to ask: refuse (exit 2)."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise PolicyError(
            "backups restore overwrites the changes listed above and there is no terminal "
            "to confirm it",
            hint=f"read the list (`handrail backups restore {plan.run_id} --dry-run`), "
            "then pass --yes",
        )
    if not click.confirm(
        "Overwrite these with the backups? The current state is kept first, so this can be undone",
        default=False,
    ):
        raise PolicyError("not confirmed; nothing was changed")


def print_restored(
    out: Console, result: RestoreResult, journal: Journal, state_dir: Path | None
) -> None:
    state = f" --state-dir {os.path.relpath(journal.state_dir)}"
    if result.restored:
        out.print(f"[green]restored and verified:[/] {', '.join(result.restored)}")
    if result.unchanged:
        out.print(f"already equal to the backup: {', '.join(result.unchanged)}")
    out.print(f"the state before the restore is kept as run {result.undo_run}")
    out.print(f"  undo this restore: handrail backups restore {result.undo_run}{state}")
