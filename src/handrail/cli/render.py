"""Rendering for people, used only by the CLI: the plan table, gate evidence, the progress
bar of a run (:class:`ConsoleObserver`), a rehearsal's phases and result, and what a
restore from backups overwrites."""

from __future__ import annotations

import json
import os
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.prompt import Confirm
from rich.table import Table

from ..engine.executor import Observer
from ..model import CheckResult, Plan
from ..runbook import Gate, Step

if TYPE_CHECKING:
    from ..engine.journal import Journal
    from ..engine.rehearse import RehearsalResult
    from ..engine.restore import RestorePlan, RestoreResult

OUTCOME_STYLE = {"pass": "green", "fail": "bold red", "inconclusive": "yellow"}
TIER_STYLE = {
    "read-only": "dim",
    "reversible": "cyan",
    "external": "magenta",
    "destructive": "bold red",
}


def plan_table(plans: list[tuple[Step, Plan]]) -> Table:
    t = Table(title="Plan (dry run: nothing was changed)", show_lines=False)
    t.add_column("#", justify="right")
    t.add_column("step")
    t.add_column("tier")
    t.add_column("what it would do")
    t.add_column("stages")
    t.add_column("gates")
    for i, (step, plan) in enumerate(plans, 1):
        tier = step.tier.label
        gates = ", ".join(f"{g.name}{' (human)' if g.approval else ''}" for g in step.gates) or "-"
        stages = "/".join(str(s) for s in step.stages.describe()) if step.stages else "-"
        t.add_row(str(i), step.name, f"[{TIER_STYLE[tier]}]{tier}[/]", plan.summary, stages, gates)
    return t


def _short(value: Any, width: int = 90) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def gate_panel(
    console: Console, key: str, gate: Gate, results: list[CheckResult], needs_human: bool
) -> None:
    t = Table(title=f"Gate {key}", title_justify="left", expand=False)
    t.add_column("check")
    t.add_column("outcome")
    t.add_column("evidence")
    for r in results:
        ev = {k: v for k, v in r.evidence.items() if k not in ("rows", "rejects")}
        style = OUTCOME_STYLE[r.outcome.value]
        detail = r.message + ("; " if r.message and ev else "") + _short(ev, 110)
        t.add_row(r.name, f"[{style}]{r.outcome.value}[/]", detail)
    console.print(t)
    for r in results:
        rows = r.evidence.get("rows")
        if rows:
            s = Table(
                title=f"{r.name}: {len(rows)} of {r.evidence.get('population', '?')}",
                title_justify="left",
                show_header=False,
            )
            for row in rows:
                s.add_row(*[_short(v, 40) for v in row])
            console.print(s)
        rejects = r.evidence.get("rejects")
        if rejects:
            s = Table(title=f"{r.name}: records not imported", title_justify="left")
            for col in ("source", "key", "reason"):
                s.add_column(col)
            for rej in rejects:
                s.add_row(
                    _short(rej.get("source", ""), 30),
                    _short(rej.get("key", ""), 50),
                    _short(rej.get("reason", ""), 60),
                )
            console.print(s)
    if gate.instructions:
        console.print(f"[bold]Operator:[/] {gate.instructions}")
    if needs_human:
        console.print("[yellow]This gate needs a human decision.[/]")


class ConsoleObserver(Observer):
    """Draws a run: events as lines, batched steps as a progress bar with count and rate."""

    def __init__(
        self, console: Console, *, interactive: bool = False, auto_note: bool = False
    ) -> None:
        self.console = console
        self.interactive = interactive
        self.auto_note = auto_note
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._step: str | None = None
        self._started = 0.0
        self._first = 0

    def _stop_bar(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None
            self._step = None

    def event(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        if kind in ("step-done", "gate-passed", "step", "backup"):
            self._stop_bar()
        style = {
            "failed": "bold red",
            "rejected": "bold red",
            "paused": "yellow",
            "auto-approved": "yellow",
            "completed": "bold green",
            "rolled-back": "bold green",
            "backup-verified": "green",
            "step-done": "green",
            "gate-passed": "green",
            "rollback-conflict": "bold red",
            "batch-recovered": "cyan",
            "resume": "cyan",
        }.get(kind, "")
        text = f"[{style}]{message}[/]" if style else message
        if kind == "auto-approved":
            text += " [dim](the demo approves manual gates itself; a real run would pause here)[/]"
        if self._progress is not None:
            self._progress.console.print(text)
        else:
            self.console.print(text)

    def progress(self, step: str, done: int, total: int) -> None:
        if total <= 0:
            return
        if self._step != step:
            self._stop_bar()
            self._progress = Progress(
                TextColumn("  {task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(step, total=total, rate="")
            self._step = step
            self._started = time.monotonic()
            self._first = done  # resumed steps start part way: rate counts this run's work
        assert self._progress is not None
        assert self._task is not None
        elapsed = time.monotonic() - self._started
        rate = f"{(done - self._first) / elapsed:,.0f} items/s" if elapsed > 0.05 else ""
        self._progress.update(self._task, completed=done, rate=rate)

    def gate(self, key: str, gate: Gate, results: list[CheckResult], needs_human: bool) -> None:
        self._stop_bar()
        gate_panel(self.console, key, gate, results, needs_human)

    def ask(self, key: str, gate: Gate, results: list[CheckResult]) -> bool | None:
        if not self.interactive:
            return None
        return Confirm.ask(f"Approve gate {key}?", console=self.console, default=False)

    def close(self) -> None:
        self._stop_bar()


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


class PhaseObserver(Observer):
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


def show_rehearsal(console: Console, result: RehearsalResult, ref: str, kept: bool) -> None:
    from ..report.describe import fmt_seconds

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
