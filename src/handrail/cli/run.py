"""Running a runbook: ``plan`` (the dry run), ``run``, ``approve`` and ``reject`` at a gate,
and ``rollback``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from rich.table import Table

from ..engine.executor import Executor, plan_runbook
from ..engine.journal import whoami
from ..engine.loader import load_runbook, runbook_key
from ..engine.preflight import DEFAULT_LIMIT
from ..errors import PolicyError
from ..model import RunStatus
from .common import (
    console,
    err_console,
    errors,
    finish,
    json_option,
    load_for,
    main,
    open_journal,
    options,
    resolve_run,
    state_option,
)
from .render import plan_table


@main.command()
@click.argument("runbook", type=click.Path(path_type=Path))
@state_option
@json_option
def plan(runbook: Path, state_dir: Path | None, as_json: bool) -> None:
    """Dry run: what each step would change, its risk tier and blast radius. Writes nothing."""
    with errors():
        rb = load_runbook(runbook)
        plans = plan_runbook(rb)
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "runbook": rb.name,
                        "plan_hash": rb.plan_hash(),
                        "steps": [s.describe() | {"plan": p.to_json()} for s, p in plans],
                    },
                    indent=2,
                    default=str,
                )
            )
            return
        console.print(plan_table(plans))
        t = Table(title="Blast radius")
        for col in ("step", "changes", "worst case", "detection", "rollback"):
            t.add_column(col)
        for s, _ in plans:
            t.add_row(
                s.name,
                s.blast.changes,
                s.blast.worst_case,
                s.blast.detection,
                "exact undo" if s.reversible() else "[red]none: restore backups[/]",
            )
        console.print(t)
        console.print(f"plan hash {rb.plan_hash()[:16]}… (approvals are bound to it)")


@main.command()
@click.argument("runbook", type=click.Path(path_type=Path))
@click.option(
    "--yes", is_flag=True, help="Approve gates that need a human (failed checks still stop)."
)
@click.option(
    "--allow-destructive",
    is_flag=True,
    help="Allow steps of the destructive tier (a run refuses them without it).",
)
@click.option("--take-over", is_flag=True, help="Take over a stale lease of another run.")
@click.option("--new", is_flag=True, help="Start a new run instead of resuming the last one.")
@click.option("--no-input", is_flag=True, help="Never prompt; pause at gates (exit 3).")
@click.option(
    "--no-preflight",
    is_flag=True,
    help="Skip the preflight (the forward run on clones that finds bad input before the "
    "first change). Bad input may then surface after earlier steps changed data.",
)
@click.option(
    "--preflight-limit",
    type=click.FloatRange(min=0),
    default=DEFAULT_LIMIT / (1024 * 1024),
    show_default=True,
    metavar="MB",
    help="Clone data up to this size for the preflight; larger SQLite databases are "
    "cloned as their schema only.",
)
@state_option
def run(
    runbook: Path,
    yes: bool,
    allow_destructive: bool,
    take_over: bool,
    new: bool,
    no_input: bool,
    no_preflight: bool,
    preflight_limit: float,
    state_dir: Path | None,
) -> None:
    """Run a runbook, or resume its last run. Pauses at gates (exit code 3).

    A new run first proves every step can run (the preflight): each step is validated
    against the real schema and files, and the whole runbook runs forward on clones.
    Anything found there exits 2 with nothing changed.
    """
    with errors():
        if no_preflight:
            err_console.print(
                "[yellow]warning:[/] --no-preflight: bad input is no longer found before the "
                "first change; it may stop the run after earlier steps changed data"
            )
        rb = load_runbook(runbook)
        journal = open_journal(runbook, state_dir)
        interactive = sys.stdin.isatty() and not no_input and not yes
        opts = options(
            yes=yes,
            allow_destructive=allow_destructive,
            take_over=take_over,
            new=new,
            interactive=interactive,
        )
        opts.preflight = not no_preflight
        opts.preflight_limit = int(preflight_limit * 1024 * 1024)
        ex = Executor(rb, journal, runbook_key=runbook_key(runbook), options=opts)
        result = ex.run()
        finish(result, journal, str(runbook))


def _answer(
    run_ref: str, state_dir: Path | None, decision: str, who: str | None, comment: str
) -> None:
    with errors():
        journal, r = resolve_run(run_ref, state_dir)
        if r.status is not RunStatus.PAUSED or not r.paused_gate:
            raise PolicyError(f"run {r.id} is {r.status.value}, not paused at a gate")
        rb = load_for(r)
        plan_hash = rb.plan_hash()
        journal.approve(r.id, r.paused_gate, decision, who or whoami(), plan_hash, comment)
        journal.event(r.id, decision, f"gate {r.paused_gate}: {decision} by {who or whoami()}")
        verb = "approved" if decision == "approve" else "rejected"
        console.print(f"Gate {r.paused_gate} of run {r.id} {verb}.")
        rel = os.path.relpath(r.runbook_key)
        if decision == "approve":
            console.print(f"  continue: handrail run {rel}")
        else:
            console.print(
                f"  undo:     handrail rollback {r.id} --state-dir "
                f"{os.path.relpath(journal.state_dir)}"
            )


@main.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--as", "who", help="Who approves (default: the current user).")
@click.option("--comment", default="", help="Why.")
@state_option
def approve(run_ref: str, who: str | None, comment: str, state_dir: Path | None) -> None:
    """Approve the gate a run is paused at (bound to the runbook's current plan hash)."""
    _answer(run_ref, state_dir, "approve", who, comment)


@main.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--as", "who", help="Who rejects (default: the current user).")
@click.option("--comment", default="", help="Why.")
@state_option
def reject(run_ref: str, who: str | None, comment: str, state_dir: Path | None) -> None:
    """Reject the gate a run is paused at; the run stops there (then roll it back)."""
    _answer(run_ref, state_dir, "reject", who, comment)


@main.command()
@click.argument("run_ref", metavar="RUN")
@click.option("--to", "to_step", help="Undo back to and including this step only.")
@click.option(
    "--force",
    is_flag=True,
    help="Put back the values the run found where someone changed them since. Never "
    "deletes a row, column, table or file holding anything not the run's: when finishing "
    "would need that, it is refused up front and nothing changes.",
)
@click.option(
    "--keep-theirs",
    is_flag=True,
    help="Finish the rollback around what others changed: their values stay, and a step "
    "whose undo would remove their data is not undone; lists what stayed (exit 1).",
)
@click.option("--take-over", is_flag=True, help="Take over a stale lease of another run.")
@state_option
def rollback(
    run_ref: str,
    to_step: str | None,
    force: bool,
    keep_theirs: bool,
    take_over: bool,
    state_dir: Path | None,
) -> None:
    """Undo a run's steps, newest first, verifying each.

    RUN is a run id, or a runbook file: then every run of it that is not yet rolled back
    is undone, newest first (a second, idempotent run is undone before the first).

    Only what the run created and nobody changed since is removed. A step whose undo
    would remove others' data stops the rollback before it; values changed since the run
    wrote them stop it after their step. Nothing is destroyed, the run stays resumable,
    and the output lists the items and the options (--force, --keep-theirs).
    With --to, the run stays resumable: `handrail run` applies the undone steps again.
    """
    with errors():
        journal, r = resolve_run(run_ref, state_dir)
        targets = [r]
        if run_ref.endswith(".py") or Path(run_ref).is_file():
            done = (RunStatus.ROLLED_BACK,)
            targets = [x for x in reversed(journal.runs(r.runbook_key)) if x.status not in done]
            if not targets:
                raise PolicyError(f"every run of {run_ref} is already rolled back")
        rb = load_for(r)
        ex = Executor(rb, journal, runbook_key=r.runbook_key, options=options(take_over=take_over))
        result = None
        for target in targets:
            result = ex.rollback(target.id, to_step=to_step, force=force, keep_theirs=keep_theirs)
            if result.exit_code != 0:
                break
        assert result is not None
        finish(result, journal, r.runbook_key)
