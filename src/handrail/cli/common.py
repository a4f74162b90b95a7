"""What every command shares, and the ``main`` group they register on.

This module ends the import cycle: every command module imports from it, and it imports
no command module (``tests/test_cli_layout.py`` checks). Consoles, the :func:`errors`
context that turns library errors into a message and an exit code, the shared options
(:func:`state_option`, :func:`json_option`), finding a run (:func:`resolve_run`,
:func:`resolve_any_run`, :func:`open_journal`, :func:`load_for`), the run options with
the console observer, and :func:`finish`, which prints a run's outcome and exits.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console

from .. import __version__
from ..engine.executor import RunOptions, RunResult
from ..engine.journal import Journal, RunRow
from ..engine.loader import default_state_dir, load_runbook, runbook_key
from ..errors import BadInput, HandrailError
from ..model import RunStatus
from ..redact import redact
from ..runbook import Runbook
from .render import ConsoleObserver

F = TypeVar("F", bound=Callable[..., Any])
STATE_ENV = "HANDRAIL_STATE_DIR"

console = Console(highlight=False)
say = Console(highlight=False, soft_wrap=True)
# Messages are not wrapped: a path or a command split across lines cannot be copied.
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(exc: HandrailError) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {redact(exc.message)}")
    if exc.hint:
        err_console.print(f"[dim]hint:[/] {redact(exc.hint)}")
    sys.exit(exc.exit_code)


@contextmanager
def errors() -> Iterator[None]:
    """Map library errors to messages and exit codes; Ctrl-C to 130 with a resume hint."""
    try:
        yield
    except HandrailError as exc:
        fail(exc)
    except KeyboardInterrupt:
        err_console.print(
            "[yellow]interrupted[/]: the journal is consistent; run the same "
            "command again to resume"
        )
        sys.exit(130)


def state_option(fn: F) -> F:
    return click.option(
        "--state-dir",
        type=click.Path(path_type=Path),
        envvar=STATE_ENV,
        help="Where the journal and backups live (default: .handrail/ beside the runbook; "
        f"env {STATE_ENV}).",
    )(fn)


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")(fn)


def open_journal(runbook_path: Path | None, state_dir: Path | None) -> Journal:
    if state_dir is None:
        state_dir = default_state_dir(runbook_path) if runbook_path else Path(".handrail")
    return Journal(state_dir)


def resolve_run(ref: str | None, state_dir: Path | None) -> tuple[Journal, RunRow]:
    """RUN is a run id, or a runbook file meaning its latest run."""
    if ref is not None and (ref.endswith(".py") or Path(ref).is_file()):
        path = Path(ref)
        if not path.exists():
            raise BadInput(f"runbook file not found: {path}")
        journal = open_journal(path, state_dir)
        run = journal.latest_run(runbook_key(path))
        if run is None:
            raise BadInput(
                f"{path} has no runs in {journal.path}",
                hint=f"start one with `handrail run {path}`",
            )
        return journal, run
    journal = open_journal(None, state_dir)
    runs = journal.runs()
    if ref is None:
        if not runs:
            raise BadInput(
                f"no runs in {journal.path}",
                hint="pass --state-dir, or a runbook file instead of a run id",
            )
        return journal, runs[-1]
    matches = [r for r in runs if r.id == ref or r.id.startswith(ref)]
    if not matches:
        raise BadInput(
            f"no run {ref!r} in {journal.path}",
            hint="pass --state-dir (or set HANDRAIL_STATE_DIR), or give the "
            "runbook file instead of a run id",
        )
    if len(matches) > 1:
        raise BadInput(f"{ref!r} matches {len(matches)} runs; give more of the id")
    return journal, matches[0]


def resolve_any_run(ref: str, state_dir: Path | None) -> tuple[Journal, RunRow]:
    """Like :func:`resolve_run`, but an id may name a run of any mode: a restore (to undo
    it) or a rehearsal run."""
    try:
        return resolve_run(ref, state_dir)
    except BadInput:
        journal = open_journal(None, state_dir)
        matches = [x for x in journal.runs(mode=None) if x.id == ref or x.id.startswith(ref)]
        if len(matches) != 1:
            raise
        return journal, matches[0]


def load_for(run: RunRow) -> Runbook:
    if not Path(run.runbook_key).exists():
        raise BadInput(f"the runbook of run {run.id} is gone: {run.runbook_key}")
    return load_runbook(run.runbook_key)


def options(
    *,
    yes: bool = False,
    allow_destructive: bool = False,
    take_over: bool = False,
    new: bool = False,
    interactive: bool = False,
) -> RunOptions:
    observer = ConsoleObserver(console, interactive=interactive)
    return RunOptions(
        auto_approve=yes,
        allow_destructive=allow_destructive,
        take_over=take_over,
        new_run=new,
        observer=observer,
    )


def finish(result: RunResult, journal: Journal, runbook_path: str) -> NoReturn:
    rel = os.path.relpath(runbook_path)
    state = f" --state-dir {os.path.relpath(journal.state_dir)}"
    if result.status is RunStatus.PAUSED:
        say.print(
            f"\n[yellow]Paused[/] at gate [bold]{result.paused_gate}[/] (run {result.run_id})."
        )
        say.print(f"  approve: handrail approve {result.run_id}{state}")
        say.print(f"  reject:  handrail reject {result.run_id}{state}")
        say.print(f"  then:    handrail run {rel}")
    elif result.status is RunStatus.COMPLETED:
        say.print(f"\n[bold green]Run {result.run_id} completed.[/]")
        say.print(f"  undo it exactly: handrail rollback {result.run_id}{state}")
    elif result.status is RunStatus.ROLLED_BACK and not result.conflicts:
        say.print(f"\n[bold green]Run {result.run_id} rolled back[/] and verified.")
    elif result.status is RunStatus.ROLLED_BACK:
        err_console.print(f"\n[bold yellow]Run {result.run_id} {result.message}.[/]")
        for c in result.conflicts[:20]:
            err_console.print(f"  [yellow]left as it is:[/] {c}")
        sys.exit(result.exit_code)
    elif result.status is RunStatus.ROLLED_BACK_TO:
        say.print(f"\n[bold green]Run {result.run_id} {result.message}[/] and verified.")
        say.print(f"  apply the undone steps again: handrail run {rel}{state}")
    elif result.stopped_at is not None:
        err_console.print(f"\n[bold red]Run {result.run_id}: {redact(result.message)}[/]")
        label = "not this run's" if result.blocked else "changed since"
        for c in result.conflicts[:20]:
            err_console.print(f"  [red]{label}:[/] {c}")
        if len(result.conflicts) > 20:
            err_console.print(f"  … and {len(result.conflicts) - 20} more (handrail status)")
        err_console.print("  Nothing of it was destroyed; the run stays rolling back. Options:")
        err_console.print(
            f"  - deal with those items, then:   handrail rollback {result.run_id}{state}"
        )
        if not result.blocked:
            err_console.print(
                "  - put back what the run found:  "
                f"handrail rollback {result.run_id}{state} --force"
            )
        err_console.print(
            "  - finish around them:           "
            f"handrail rollback {result.run_id}{state} --keep-theirs"
        )
        for w in result.warnings[:20]:
            err_console.print(f"  [yellow]note:[/] {w}")
        sys.exit(result.exit_code)
    else:
        err_console.print(
            f"\n[bold red]Run {result.run_id} {result.status.value}:[/] {redact(result.message)}"
        )
        err_console.print(f"  resume after fixing: handrail run {rel}")
        err_console.print(f"  or undo:             handrail rollback {result.run_id}{state}")
    for c in result.conflicts[:20]:
        err_console.print(f"  [red]left alone:[/] {c}")
    for w in result.warnings[:20]:
        err_console.print(f"  [yellow]note:[/] {w}")
    sys.exit(result.exit_code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="handrail")
def main() -> None:
    """handrail runs data migrations as runbooks written in code.

    Verified backups before any change, dry runs, STOP gates with checks and approvals,
    staged rollout, exact rollback, resume after a crash, and an audit journal.

    Exit codes: 0 done, 1 a check or step failed, 2 bad usage or input, 3 paused at a gate.
    """
