"""`handrail purge`: empty the quarantine of old, finished runs (registered on the main group)."""

from __future__ import annotations

import json
from pathlib import Path

import click


def register(main: click.Group) -> None:
    """Add this module's commands to ``main``."""
    from rich.table import Table

    from .cli import STATE_ENV, console, errors, json_option, state_option
    from .ops.quarantine import human_bytes, purge_quarantine

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
                console.print(
                    f"no quarantine in {report.state_dir} (use --state-dir or {STATE_ENV})"
                )
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
