"""What the state directory holds: ``status`` of a run, its ``backups`` (list, verify,
restore), ``purge`` of old quarantine, and ``fingerprint`` of a file or directory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.table import Table

from ..engine.executor import Executor
from ..engine.restore import RestorePlan, backup_objects, plan_restore
from ..errors import BadInput, HandrailError, PolicyError
from ..resources.base import verify_backup
from ..steps.quarantine import human_bytes, purge_quarantine
from .common import (
    STATE_ENV,
    console,
    err_console,
    errors,
    json_option,
    load_for,
    main,
    options,
    resolve_any_run,
    resolve_run,
    state_option,
)
from .render import print_restore_plan, print_restored


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
    from ..resources import Directory, JSONFile, SQLite

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


@main.command()
@click.option(
    "--older-than",
    "older_than",
    type=click.FloatRange(min=0),
    required=True,
    metavar="DAYS",
    help="Purge runs that finished more than DAYS days ago.",
)
@click.option("--dry-run", is_flag=True, help="Show what would be removed; remove nothing.")
@click.option(
    "--force",
    is_flag=True,
    help="Also purge runs that are not finished (their rollback then cannot restore "
    "what they deleted).",
)
@state_option
@json_option
def purge(
    older_than: float, dry_run: bool, force: bool, state_dir: Path | None, as_json: bool
) -> None:
    """Empty the quarantine of runs that finished (completed or rolled back) more than
    DAYS days ago: what their delete steps moved aside is removed for good.

    The quarantine of a run that is not finished is kept unless --force: its rollback
    may still need it.
    """
    with errors():
        report = purge_quarantine(
            state_dir or Path(".handrail"),
            older_than_days=older_than,
            dry_run=dry_run,
            force=force,
        )
        if as_json:
            click.echo(json.dumps(report.to_json(), indent=2))
            return
        if not report.entries:
            console.print(f"no quarantine in {report.state_dir} (use --state-dir or {STATE_ENV})")
            return
        t = Table(title=f"Quarantine in {report.state_dir}")
        for col in ("run", "status", "age (days)", "files", "size", "action", "why"):
            t.add_column(col)
        for e in report.entries:
            t.add_row(
                e.run_id,
                e.status or "?",
                f"{e.age_days:.1f}",
                str(e.files),
                human_bytes(e.bytes),
                e.action,
                e.reason,
            )
        console.print(t)
        verb = "would free" if dry_run else "freed"
        console.print(
            f"{len(report.removed)} run(s) {'to purge' if dry_run else 'purged'}; "
            f"{verb} {human_bytes(report.bytes_freed)} ({report.bytes_freed} bytes)"
        )
