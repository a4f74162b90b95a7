"""Rendering for people: Rich tables, gate evidence, a progress bar. Only the CLI uses it."""

from __future__ import annotations

import json
import time
from typing import Any

from rich.console import Console
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

from .executor import Observer
from .model import CheckResult, Plan
from .runbook import Gate, Step

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
