"""Rehearsals and generated documents: ``rehearse`` (forward, rollback and forward again
on clones), ``doc`` (the operator's runbook and blast-radius table) and ``report`` (the
audit report of one run)."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape

from ..engine.executor import plan_runbook
from ..engine.journal import Journal
from ..engine.loader import default_state_dir, load_runbook, runbook_key
from ..engine.rehearse import RehearsalOptions, check_clonable
from ..engine.rehearse import rehearse as run_rehearsal
from ..errors import BadInput, HandrailError
from ..report import DocInputs, last_rehearsal, render, run_report, runbook_document
from ..resources._files import atomic_write_bytes
from .common import (
    console,
    err_console,
    errors,
    json_option,
    load_for,
    main,
    open_journal,
    resolve_any_run,
    state_option,
)
from .render import PhaseObserver, show_rehearsal

if TYPE_CHECKING:
    from ..engine.journal import RunRow
    from ..report.document import Format
    from ..report.runbook_doc import Part


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
    with errors():
        rb = load_runbook(runbook)
        check_clonable(rb)  # before the state directory is even created
        journal = open_journal(runbook, state_dir)
        out = console if not as_json else err_console
        result = run_rehearsal(
            rb,
            journal,
            runbook_key=runbook_key(runbook),
            options=RehearsalOptions(scratch=scratch, keep=keep, observer=PhaseObserver(out)),
        )
        if as_json:
            click.echo(json.dumps(result.to_json(), indent=2, default=str))
        else:
            show_rehearsal(console, result, str(runbook), keep)
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
    with errors():
        journal, run = (
            _last_rehearsal_run(run_ref, state_dir)
            if rehearsal
            else resolve_any_run(run_ref, state_dir)
        )
        try:
            rb = load_for(run)
        except HandrailError:
            rb = None  # the runbook file is gone or broken: report from the journal
        _emit(render(run_report(journal, run, runbook=rb), fmt), output)


def _last_rehearsal_run(ref: str, state_dir: Path | None) -> tuple[Journal, RunRow]:

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
