"""CLI commands for rehearsals and generated documents (registered on the main group):
``handrail rehearse``, ``handrail doc`` and ``handrail report``."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import click
from rich.console import Console
from rich.markup import escape

from .executor import Observer

if TYPE_CHECKING:
    from .journal import Journal, RunRow
    from .rehearse import RehearsalResult
    from .report.document import Format
    from .report.runbook_doc import Part


def _format_option(fn: Any) -> Any:
    fn = click.option(
        "-o",
        "--output",
        type=click.Path(path_type=Path, dir_okay=False),
        help="Write to FILE instead of the terminal.",
    )(fn)
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["md", "html"]),
        default="md",
        show_default=True,
        help="Markdown, or one self-contained HTML page.",
    )(fn)


def _emit(text: str, output: Path | None) -> None:
    from .cli import err_console
    from .errors import BadInput
    from .resources._files import atomic_write_bytes

    if output is None:
        click.echo(text, nl=False)
        return
    try:
        atomic_write_bytes(output, text.encode("utf-8"))
    except OSError as exc:
        raise BadInput(f"cannot write {output}: {exc.strerror or exc}") from exc
    err_console.print(f"wrote {escape(str(output))}")


def _state_arg(state_dir: Path | None) -> str:
    """``--state-dir X`` for the commands a document shows, if the user typed it."""
    ctx = click.get_current_context()
    if state_dir is None or ctx.get_parameter_source("state_dir") is not (
        click.core.ParameterSource.COMMANDLINE
    ):
        return ""
    return f" --state-dir {shlex.quote(str(state_dir))}"


def register(main: click.Group) -> None:
    """Add ``rehearse``, ``doc`` and ``report`` to ``main``."""
    from .cli import console, errors, json_option, load_for, open_journal, resolve_run, state_option

    @main.command()
    @click.argument("runbook", type=click.Path(path_type=Path))
    @click.option(
        "--scratch",
        type=click.Path(path_type=Path, file_okay=False),
        help="A directory to make the clones in, in a new subdirectory that is removed "
        "after (default: STATE_DIR/rehearsals/).",
    )
    @click.option(
        "--keep",
        is_flag=True,
        help="Keep the clones and the rehearsal runs' backups and work files to inspect.",
    )
    @state_option
    @json_option
    def rehearse(
        runbook: Path, scratch: Path | None, keep: bool, state_dir: Path | None, as_json: bool
    ) -> None:
        """Prove the rollback on clones: forward, rollback, forward again.

        Every resource the runbook touches is cloned (production is only read); the
        runbook runs forward on the clones with every gate evaluated (gates that need a
        person are approved automatically and listed), is rolled back newest step first,
        and every clone must then equal its state before, exactly; then it runs forward
        again and must give the same result. Apply and rollback times and item counts are
        journalled for `handrail doc`.

        Exit 0 when all of that holds; 1 when it does not, naming the first difference
        (resource, table or file, keys); 2 when it cannot rehearse (a resource that cannot
        be cloned, such as an HTTP service without a sandbox address).
        """
        from .loader import load_runbook, runbook_key
        from .rehearse import RehearsalOptions, check_clonable
        from .rehearse import rehearse as run_rehearsal

        with errors():
            rb = load_runbook(runbook)
            check_clonable(rb)  # before the state directory is even created
            journal = open_journal(runbook, state_dir)
            out = console if not as_json else _stderr()
            result = run_rehearsal(
                rb,
                journal,
                runbook_key=runbook_key(runbook),
                options=RehearsalOptions(scratch=scratch, keep=keep, observer=_PhaseObserver(out)),
            )
            if as_json:
                click.echo(json.dumps(result.to_json(), indent=2, default=str))
            else:
                _show_rehearsal(console, result, str(runbook), keep)
            sys.exit(result.exit_code)

    @main.command()
    @click.argument("runbook", type=click.Path(path_type=Path))
    @_format_option
    @click.option(
        "--part",
        type=click.Choice(["all", "runbook", "blast"]),
        default="all",
        show_default=True,
        help="The operator's runbook, the blast-radius table, or both.",
    )
    @click.option(
        "--plan/--no-plan",
        default=True,
        show_default=True,
        help="Dry-run the runbook now (reads, never writes) for item counts and rollback "
        "times scaled to them.",
    )
    @state_option
    def doc(
        runbook: Path,
        fmt: Format,
        output: Path | None,
        part: Part,
        plan: bool,
        state_dir: Path | None,
    ) -> None:
        """The operator's runbook and the blast-radius table, generated from the runbook.

        Prerequisites, backups and how they are verified, and for each step: its dry run,
        what it changes, its stages, its gates (checks with thresholds, samples, who must
        approve), the command that runs it and how to roll it back. The blast-radius table
        gives each step's worst case, detection signal, rollback and the rollback time
        measured by the last `handrail rehearse`, scaled to the item count of a dry run
        ("not rehearsed" without one). Stable: no timestamps above the footer.
        """
        from .errors import HandrailError
        from .executor import plan_runbook
        from .journal import Journal
        from .loader import default_state_dir, load_runbook, runbook_key
        from .report import DocInputs, last_rehearsal, render, runbook_document

        with errors():
            rb = load_runbook(runbook)
            state = state_dir or default_state_dir(runbook)
            rehearsal = None
            if (state / "journal.sqlite").exists():  # reading must not create a journal
                rehearsal = last_rehearsal(Journal(state), runbook_key(runbook))
            plans, note = None, "Not included here (generated with --no-plan)."
            if plan:
                try:
                    plans = {s.name: p for s, p in plan_runbook(rb)}
                except HandrailError as exc:
                    note = f"The dry run failed when this document was generated: {exc.message}"
            inputs = DocInputs(
                ref=str(runbook),
                base_dir=runbook.resolve().parent,
                state_arg=_state_arg(state_dir),
                plans=plans,
                plan_note=note,
                rehearsal=rehearsal,
            )
            document = runbook_document(rb, inputs, part=part)
            _emit(render(document, fmt), output)

    @main.command()
    @click.argument("run_ref", metavar="RUN")
    @_format_option
    @click.option(
        "--rehearsal",
        is_flag=True,
        help="RUN is a runbook file: report its last rehearsal instead of its last run.",
    )
    @state_option
    def report(
        run_ref: str, fmt: Format, output: Path | None, rehearsal: bool, state_dir: Path | None
    ) -> None:
        """The audit report of one run: plan hash, every gate with its evidence and who
        approved it when, backups with checksums, each step's timings and counts, rejected
        records, and the rollback if one happened. RUN is a run id or a runbook file."""
        from .errors import HandrailError
        from .report import render, run_report

        with errors():
            journal, run = (
                _last_rehearsal_run(run_ref, state_dir)
                if rehearsal
                else _resolve_any(run_ref, state_dir)
            )
            try:
                rb = load_for(run)
            except HandrailError:
                rb = None  # the runbook file is gone or broken: report from the journal
            _emit(render(run_report(journal, run, runbook=rb), fmt), output)

    def _resolve_any(ref: str, state_dir: Path | None) -> tuple[Journal, RunRow]:
        """A run id of any mode (rehearsal runs too), or a runbook file's latest run."""
        from .errors import BadInput

        try:
            return resolve_run(ref, state_dir)
        except BadInput:
            journal = open_journal(None, state_dir)
            found = [r for r in journal.runs(mode=None) if r.id.startswith(ref)]
            if len(found) != 1:
                raise
            return journal, found[0]

    def _last_rehearsal_run(ref: str, state_dir: Path | None) -> tuple[Journal, RunRow]:
        from .errors import BadInput
        from .loader import runbook_key
        from .report import last_rehearsal

        path = Path(ref)
        if not path.is_file():
            raise BadInput(f"--rehearsal takes a runbook file, not {ref!r}")
        journal = open_journal(path, state_dir)
        reh = last_rehearsal(journal, runbook_key(path))
        run = journal.run(reh.run_id) if reh else None
        if run is None:
            raise BadInput(
                f"{path} has not been rehearsed", hint=f"handrail rehearse {shlex.quote(ref)}"
            )
        return journal, run


def _stderr() -> Console:
    from .cli import err_console

    return err_console


class _PhaseObserver(Observer):
    """Prints the rehearsal's phases and what deserves attention, not every event."""

    STYLES: ClassVar[dict[str, str]] = {
        "rehearsal": "bold",
        "auto-approved": "yellow",
        "failed": "bold red",
        "gate-failed": "bold red",
        "rollback-drift": "bold red",
        "rollback-conflict": "bold red",
    }

    def __init__(self, console: Console) -> None:
        self.console = console

    def event(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        style = self.STYLES.get(kind)
        if style is not None:
            self.console.print(f"[{style}]{escape(message)}[/]", soft_wrap=True)


def _show_rehearsal(console: Console, result: RehearsalResult, ref: str, kept: bool) -> None:
    from rich.table import Table

    from .report.describe import fmt_seconds

    def say(text: str) -> None:
        console.print(text, soft_wrap=True)  # a difference or a command stays on one line

    def sec(s: float | None) -> str:
        return "-" if s is None else fmt_seconds(s)

    t = Table(title=f"Rehearsal of {result.runbook} on clones")
    t.add_column("step")
    t.add_column("tier")
    for col in ("items", "apply", "rollback", "apply again"):
        t.add_column(col, justify="right")
    for s in result.steps:
        t.add_row(
            s.name,
            s.tier,
            f"{s.items:,}" if s.items else "-",
            sec(s.apply_seconds),
            sec(s.rollback_seconds),
            sec(s.reapply_seconds),
        )
    console.print(t)
    r = Table(title="Resources (fingerprints of the clones)")
    for col in ("resource", "kind", "after rollback", "after applying again"):
        r.add_column(col)
    mark = {True: "[green]equal to before[/]", False: "[bold red]differs[/]", None: "-"}
    again = {True: "[green]equal to first run[/]", False: "[bold red]differs[/]", None: "-"}
    for res in result.resources:
        r.add_row(res.name, res.kind, mark[res.restored], again[res.reproducible])
    console.print(r)
    if result.rollback_method == "backups":
        say(f"rollback by restoring backups: {sec(result.rollback_seconds)}")
    if result.approved:
        say(
            "[yellow]Approved automatically on the clones[/] (a real run pauses at each for "
            "a person): " + escape(", ".join(result.approved))
        )
    for note in result.notes:
        say(f"[dim]note:[/] {escape(note)}")
    if result.ok:
        say(f"\n[bold green]Rehearsal passed[/]: {escape(result.message)}.")
        say(f"  the documents use its timings: handrail doc {shlex.quote(ref)}")
    else:
        say(f"\n[bold red]Rehearsal failed[/]: {escape(result.message)}")
        diffs = result.differences or result.reapply_differences
        for d in diffs[:10]:
            say(f"  [red]{escape(d.resource)}[/]: {escape(d.where)} {escape(d.what)}")
            if d.detail:
                say(f"    {escape(d.detail)}")
        if len(diffs) > 10:
            say(f"  … and {len(diffs) - 10} more (--json lists all)")
    if kept:
        say(f"clones kept in {escape(result.scratch)}")
