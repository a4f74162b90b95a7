"""The command line: a thin layer that parses arguments, calls the library, and turns its
errors into a message and an exit code (0 done, 1 failed, 2 bad input, 3 paused at a gate).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.table import Table

from . import __version__
from .console import ConsoleObserver, plan_table
from .errors import BadInput, HandrailError, PolicyError
from .executor import Executor, RunOptions, RunResult, plan_runbook
from .journal import Journal, RunRow, whoami
from .loader import default_state_dir, load_runbook, runbook_key
from .model import RunStatus
from .preflight import DEFAULT_LIMIT
from .redact import redact
from .resources.base import verify_backup
from .restore import backup_objects
from .runbook import Runbook

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


# -- demo and recipes -----------------------------------------------------------------------
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
    from . import recipes

    with errors():
        r = recipes.get(recipe or recipes.DEFAULT)
        if fresh and directory.exists():
            marker = directory / ".handrail-demo"
            if not marker.exists():
                raise PolicyError(
                    f"{directory} exists and was not made by `handrail demo`",
                    hint="choose another --dir",
                )
            import shutil

            shutil.rmtree(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / ".handrail-demo").write_text("made by handrail demo\n")
        with recipes.services(r) as env:
            os.environ.update(env)
            rb_path = directory / "runbook.py"
            if fresh or not rb_path.exists():
                console.print(f"[bold]handrail demo[/]: recipe [bold]{r.name}[/] — {r.summary}")
                if env:
                    console.print(
                        "Started a throwaway PostgreSQL cluster"
                        + (" and a PeerTube-like API on loopback" if "PEERTUBE_URL" in env else "")
                        + " for this demo."
                    )
                console.print(f"Making sample data in {directory}/ …")
                rb_path.write_text(r.prepare(directory))
            runbook = load_runbook(rb_path)
            journal = open_journal(rb_path, None)
            ex = Executor(
                runbook,
                journal,
                runbook_key=runbook_key(rb_path),
                options=options(yes=True, allow_destructive=True),
            )
            console.print(plan_table(ex.plan()))
            console.print(
                f"\nRunning {rb_path} (gates that need a human are approved automatically):"
            )
            result = ex.run()
            if result.status is RunStatus.COMPLETED:
                rejects = journal.rejects(result.run_id)
                if rejects:
                    console.print(
                        f"\n{len(rejects)} record(s) could not be imported; each is in the "
                        f"journal (`handrail status {result.run_id} --state-dir "
                        f"{os.path.relpath(journal.state_dir)} --json`)."
                    )
            if env and result.status is RunStatus.COMPLETED:
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
    """List the recipes (one per real migration in shared/seeds/)."""
    from . import recipes

    rows = [
        {"name": r.name, "summary": r.summary, "seed": r.seed} for r in recipes.RECIPES.values()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    t = Table(title="Recipes")
    for col in ("name", "summary", "seed"):
        t.add_column(col)
    for row in rows:
        t.add_row(row["name"], row["summary"], row["seed"])
    console.print(t)
    console.print("Run one: handrail demo --recipe NAME")


# -- plan and run ---------------------------------------------------------------------------
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
@click.option("--allow-destructive", is_flag=True, help="Allow destructive steps (policy 4).")
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


# -- status, approvals -----------------------------------------------------------------------
@main.command()
@click.argument("run_ref", metavar="[RUN]", required=False)
@state_option
@json_option
def status(run_ref: str | None, state_dir: Path | None, as_json: bool) -> None:
    """Where a run stands: steps, batches, gates, rejects. RUN is an id or a runbook file."""
    with errors():
        journal, r = resolve_run(run_ref, state_dir)
        steps = journal.steps(r.id)
        data = {
            "run": r.id,
            "runbook": r.runbook_name,
            "file": r.runbook_key,
            "status": r.status.value,
            "paused_gate": r.paused_gate,
            "plan_hash": r.plan_hash,
            "started_at": r.started_at,
            "finished_at": r.finished_at,
            "started_by": r.started_by,
            "steps": [
                {
                    "name": s.name,
                    "tier": s.tier,
                    "status": s.status.value,
                    "items_done": s.items_done,
                    "items_total": s.items_total,
                    "apply_seconds": s.apply_seconds,
                    "rollback_seconds": s.rollback_seconds,
                    "error": s.error,
                }
                for s in steps
            ],
            "backups": [
                {
                    "resource": b["resource"],
                    "sha256": b["sha256"],
                    "size": b["size"],
                    "path": b["path"],
                    "verified_at": b["verified_at"],
                }
                for b in journal.backups(r.id)
            ],
            "approvals": journal.approvals(r.id),
            "rejects": journal.rejects(r.id),
            "lease": journal.lease(r.runbook_key),
        }
        if r.paused_gate:
            data["gate_checks"] = journal.checks(r.id, r.paused_gate)
        if as_json:
            click.echo(json.dumps(data, indent=2, default=str))
            return
        console.print(
            f"[bold]Run {r.id}[/] of {r.runbook_name}: [bold]{r.status.value}[/]"
            + (f" at gate {r.paused_gate}" if r.paused_gate else "")
        )
        t = Table()
        for col in ("step", "tier", "status", "items", "apply s", "error"):
            t.add_column(col)
        for s in steps:
            items = f"{s.items_done}/{s.items_total}" if s.items_total else "-"
            t.add_row(
                s.name,
                s.tier,
                s.status.value,
                items,
                f"{s.apply_seconds:.2f}" if s.apply_seconds else "-",
                s.error or "",
            )
        console.print(t)
        if data["rejects"]:
            console.print(f"{len(data['rejects'])} record(s) rejected (see --json)")


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


# -- rollback ---------------------------------------------------------------------------------
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


# -- backups ------------------------------------------------------------------------------------
@main.group()
def backups() -> None:
    """List, verify and restore the backups runs took."""


@backups.command("list")
@click.argument("run_ref", metavar="[RUN]", required=False)
@state_option
@json_option
def backups_list(run_ref: str | None, state_dir: Path | None, as_json: bool) -> None:
    """Backups of a run (or of the latest run) with their checksums."""
    with errors():
        journal, r = resolve_run(run_ref, state_dir)
        rows = journal.backups(r.id)
        if as_json:
            click.echo(json.dumps(rows, indent=2, default=str))
            return
        t = Table(title=f"Backups of run {r.id}")
        for col in ("resource", "kind", "size", "sha256", "verified", "path"):
            t.add_column(col)
        for b in rows:
            t.add_row(
                b["resource"],
                b["kind"],
                f"{b['size']:,}",
                b["sha256"][:16] or "-",
                b["evidence"].get("restore_test", ""),
                b["path"] or "(absent before)",
            )
        console.print(t)


@backups.command("verify")
@click.argument("run_ref", metavar="[RUN]", required=False)
@state_option
def backups_verify(run_ref: str | None, state_dir: Path | None) -> None:
    """Re-read every backup's checksum and restore it into a scratch copy to prove it."""
    with errors():
        journal, r = resolve_run(run_ref, state_dir)
        rb = load_for(r)
        resources = {res.name: res for res in rb.resources}
        bad = 0
        for name, b in backup_objects(journal, r.id).items():
            res = resources.get(name)
            if res is None:
                console.print(f"[yellow]{name}: no longer in the runbook; checksum only[/]")
                b.check_artefact()
                continue
            try:
                ev = verify_backup(res, b, journal.state_dir / "scratch" / f"verify-{name}")
                console.print(f"[green]{name}: ok[/] ({ev['restore_test']})")
            except HandrailError as exc:
                bad += 1
                err_console.print(f"[red]{name}: {exc}[/]")
        sys.exit(1 if bad else 0)


@backups.command("restore")
@click.argument("run_ref", metavar="RUN")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (read the list first).")
@click.option("--dry-run", is_flag=True, help="Only show what the restore would overwrite.")
@click.option("--take-over", is_flag=True, help="Take over a stale lease of another run.")
@state_option
@json_option
def backups_restore(
    run_ref: str,
    yes: bool,
    dry_run: bool,
    take_over: bool,
    state_dir: Path | None,
    as_json: bool,
) -> None:
    """Put every resource back from a run's backups, whole.

    First shows what it overwrites (per resource, what differs from the backup and which
    runs wrote it since), then asks; the current state is snapshotted before anything is
    overwritten, so the restore can itself be undone with the command it prints. RUN is a
    run id (also of an earlier restore, to undo it) or a runbook file (its latest run).
    """
    from .cli_restore import confirm_restore, print_restore_plan, print_restored
    from .restore import plan_restore

    with errors():
        journal, r = resolve_any_run(run_ref, state_dir)
        rb = load_for(r)
        ex = Executor(rb, journal, runbook_key=r.runbook_key, options=options(take_over=take_over))
        plan = plan_restore(journal, rb, r.id, ex.resource)
        if as_json and dry_run:
            click.echo(json.dumps(plan.to_json(), indent=2))
            return
        print_restore_plan(console, err_console, plan)
        if dry_run:
            return
        confirm_restore(plan, yes=yes)
        result = ex.restore_backups(r.id)
        print_restored(console, result, journal, state_dir)


def resolve_any_run(ref: str, state_dir: Path | None) -> tuple[Journal, RunRow]:
    """Like :func:`resolve_run`, but an id may also name a restore (to undo it)."""
    try:
        return resolve_run(ref, state_dir)
    except BadInput:
        journal = open_journal(None, state_dir)
        matches = [x for x in journal.runs(mode=None) if x.id == ref or x.id.startswith(ref)]
        if len(matches) != 1:
            raise
        return journal, matches[0]


# -- fingerprint ----------------------------------------------------------------------------------
@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--kind",
    type=click.Choice(["auto", "sqlite", "json", "directory"]),
    default="auto",
    help="What PATH is (auto: by content).",
)
@click.option("--parts", is_flag=True, help="Show the digest of every part (table, file, key).")
@json_option
def fingerprint(path: Path, kind: str, parts: bool, as_json: bool) -> None:
    """The logical digest of a SQLite file, JSON file or directory: equal exactly when the
    content is equal (row order, JSON formatting and file times do not count)."""
    from .resources import Directory, JSONFile, SQLite

    with errors():
        if not path.exists():
            raise BadInput(f"no such file or directory: {path}")
        if kind == "auto":
            if path.is_dir():
                kind = "directory"
            elif path.read_bytes()[:16] == b"SQLite format 3\0":
                kind = "sqlite"
            else:
                kind = "json"
        res = {"sqlite": SQLite, "json": JSONFile, "directory": Directory}[kind]("target", path)
        fp = res.fingerprint()
        if as_json:
            click.echo(json.dumps({"path": str(path), "kind": kind} | fp.to_json(), indent=2))
            return
        click.echo(f"{fp.digest}  {kind}  {path}")
        if parts:
            for name in sorted(fp.parts):
                click.echo(f"  {fp.parts[name][:16]}  {name}")


def _register_extensions() -> None:
    """Commands that live in their own modules register themselves on ``main``."""
    from . import cli_ops, cli_reports, cli_review

    cli_ops.register(main)
    cli_reports.register(main)
    cli_review.register(main)
    cli_review.register_ties(main)


_register_extensions()

if __name__ == "__main__":  # pragma: no cover
    main()
