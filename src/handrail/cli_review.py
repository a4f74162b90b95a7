"""`handrail review`: the near-duplicate review queue of the dHash recipe."""

from __future__ import annotations

import json
from pathlib import Path

import click


def register(main: click.Group) -> None:
    """Add the ``review`` group to ``main``."""
    from .cli import console, errors, json_option, open_journal
    from .errors import BadInput
    from .loader import load_runbook, runbook_key

    def decisions_path(runbook: Path) -> Path:
        rb = load_runbook(runbook)
        for step in rb.steps:
            path = getattr(step, "decisions", None)
            if isinstance(path, Path):
                return path
        raise BadInput(
            f"{runbook} has no step with a review queue",
            hint="`handrail review` works with the dhash recipe",
        )

    @main.group()
    def review() -> None:
        """The near-duplicate review queue: list it, import decisions made on its page."""

    @review.command("list")
    @click.argument("runbook", type=click.Path(path_type=Path))
    @json_option
    def review_list(runbook: Path, as_json: bool) -> None:
        """Where the latest run's review files are, and how many pairs wait for a human."""
        with errors():
            decisions = decisions_path(runbook)
            journal = open_journal(runbook, None)
            run = journal.latest_run(runbook_key(runbook))
            if run is None:
                raise BadInput(f"{runbook} has no runs yet", hint=f"handrail run {runbook}")
            state = journal.step(run.id, "find duplicates").state
            stored = 0
            if decisions.exists():
                stored = len(json.loads(decisions.read_text()).get("decisions", []))
            data = {
                "run": run.id,
                "pending_pairs": state.get("review"),
                "clusters": state.get("clusters"),
                "page": state.get("review_html"),
                "decisions_kept": stored,
                "decisions_file": str(decisions),
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
        from .images import DecisionStore, import_decisions

        with errors():
            store = DecisionStore(decisions_path(runbook))
            changed = store.record(import_decisions(decisions_file))
            store.save()
            console.print(f"{changed} decision(s) recorded ({len(store)} kept in {store.path})")
            console.print(f"apply them: handrail run {runbook} --new")


def register_ties(main: click.Group) -> None:
    """Add the ``ties`` group: the domain recipe's tied_manual review queue."""
    from .cli import console, errors, json_option
    from .errors import BadInput
    from .loader import load_runbook
    from .resources.sqlite import SQLite

    def recon_db(runbook: Path) -> Path:
        rb = load_runbook(runbook)
        for r in rb.resources:
            if isinstance(r, SQLite) and r.name == "recon":
                return r.path
        raise BadInput(
            f"{runbook} has no 'recon' database",
            hint="`handrail ties` works with the domains recipe",
        )

    @main.group()
    def ties() -> None:
        """Documents whose domain stayed tied: list them, assign one (manual_assigned)."""

    @ties.command("list")
    @click.argument("runbook", type=click.Path(path_type=Path))
    @json_option
    def ties_list(runbook: Path, as_json: bool) -> None:
        """The tied_manual documents with their tied domains and the channel's counts."""
        from rich.table import Table

        from .recipes.domains.review import list_queue

        with errors():
            items = list_queue(recon_db(runbook))
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
        from .journal import whoami
        from .recipes.domains.review import resolve

        with errors():
            full = resolve(recon_db(runbook), doc_hash, domain, who=who or whoami())
            console.print(f"{full}: {domain} (manual_assigned)")
