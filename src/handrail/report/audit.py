"""The audit report of one run, from its journal: what was approved by whom and when, on
which evidence, which backups with which checksums, what each step did and how long it
took, which records were rejected, and the rollback if there was one.

It reads the journal only. Secrets never reach it: the journal stores redacted text.
"""

from __future__ import annotations

import json
from typing import Any

from ..engine.journal import Journal, RunRow
from ..runbook import Runbook
from .describe import fmt_seconds
from .document import Document, code, plain, strong

#: evidence longer than this is cut (the journal keeps all of it: `handrail status --json`)
EVIDENCE_CHARS = 600
#: rejected records listed in full; the rest are counted
REJECT_ROWS = 500
ROLLBACK_EVENTS = (
    "rollback",
    "step-rollback",
    "step-rolled-back",
    "rollback-conflict",
    "rollback-drift",
    "rolled-back",
    "restored",
    "gate-failed",
)


def _evidence(ev: dict[str, Any]) -> str:
    shown = {k: v for k, v in ev.items() if k not in ("rows", "rejects")}
    if not shown:
        return "-"
    text = json.dumps(shown, sort_keys=True, default=str, ensure_ascii=False)
    if len(text) > EVIDENCE_CHARS:
        text = text[: EVIDENCE_CHARS - 1] + "…"
    return code(text)


def _seconds(s: float | None) -> str:
    return "-" if s is None else fmt_seconds(s)


def run_report(journal: Journal, run: RunRow, *, runbook: Runbook | None = None) -> Document:
    """The audit report of ``run`` (``runbook``, if given, tells whether it changed since)."""
    doc = Document(f"Run report: {plain(run.runbook_name)}, run {code(run.id)}")
    facts = [
        ["run", code(run.id)],
        ["runbook", plain(run.runbook_name)],
        ["file", code(run.runbook_key)],
        ["mode", run.mode],
        [
            "status",
            strong(run.status.value)
            + (f" at gate {code(run.paused_gate)}" if run.paused_gate else ""),
        ],
        ["started", f"{run.started_at} by {plain(run.started_by)}"],
        ["finished", run.finished_at or "-"],
        ["plan hash", code(run.plan_hash)],
    ]
    if runbook is not None:
        same = runbook.plan_hash() == run.plan_hash
        facts.append(
            [
                "runbook now",
                "unchanged since the run (same plan hash)"
                if same
                else "changed since the run: approvals given before the change are void",
            ]
        )
    doc.table(["", ""], facts)

    _steps(doc, journal, run)
    _backups(doc, journal, run)
    _gates(doc, journal, run)
    _rejects(doc, journal, run)
    _rollback(doc, journal, run)
    doc.footer = [f"Audit report of run {code(run.id)} from the journal {code(str(journal.path))}."]
    return doc


def _steps(doc: Document, journal: Journal, run: RunRow) -> None:
    doc.heading(2, "Steps")
    rows = []
    for i, s in enumerate(journal.steps(run.id), 1):
        items = (
            f"{s.items_done:,} / {s.items_total:,}"
            if s.items_total
            else ("-" if s.items_total is None else "single")
        )
        plan = (s.plan or {}).get("summary", "")
        rows.append(
            [
                str(i),
                plain(s.name),
                s.tier,
                s.status.value,
                plain(plan) if plan else "-",
                items,
                _seconds(s.apply_seconds),
                _seconds(s.rollback_seconds),
                plain(s.error) if s.error else "",
            ]
        )
    doc.table(
        ["#", "step", "tier", "status", "dry run", "items done", "apply", "rollback", "error"],
        rows,
        ["right", "left", "left", "left", "left", "right", "right", "right", "left"],
    )


def _backups(doc: Document, journal: Journal, run: RunRow) -> None:
    doc.heading(2, "Backups")
    backups = journal.backups(run.id)
    if not backups:
        doc.para("No backups were taken (the run changed nothing, or stopped before).")
        return
    rows = []
    for b in backups:
        ev = b["evidence"]
        rows.append(
            [
                code(b["resource"]),
                b["kind"],
                f"{b['size']:,}" if b["path"] else "(absent before the run)",
                code(b["sha256"]) if b["sha256"] else "-",
                b["taken_at"],
                plain(ev.get("restore_test", "")) or "-",
            ]
        )
    doc.table(["resource", "kind", "bytes", "sha256", "taken", "verified"], rows)


def _gates(doc: Document, journal: Journal, run: RunRow) -> None:
    doc.heading(2, "Gates and checks")
    checks = journal.checks(run.id)
    approvals = journal.approvals(run.id)
    order: list[str] = []
    for c in checks:
        if c["gate"] not in order:
            order.append(c["gate"])
    for a in approvals:
        if a["gate"] not in order:
            order.append(a["gate"])
    if not order:
        doc.para("No gate was reached.")
        return
    for key in order:
        label = "Verification" if key.endswith("/verify") else "Gate"
        doc.heading(3, f"{label} {code(key)}")
        mine = [c for c in checks if c["gate"] == key]
        if mine:
            doc.table(
                ["at", "check", "outcome", "message", "evidence"],
                [
                    [
                        c["at"],
                        plain(c["name"]),
                        strong(c["outcome"]) if c["outcome"] != "pass" else c["outcome"],
                        plain(c["message"]) or "-",
                        _evidence(c["evidence"]),
                    ]
                    for c in mine
                ],
            )
        for c in mine:
            rows = c["evidence"].get("rows")
            if rows:
                doc.para(
                    f"{strong(plain(c['name']))}: the {len(rows)} row(s) shown, of "
                    f"{c['evidence'].get('population', '?')}:"
                )
                width = max(len(r) for r in rows)
                doc.table(
                    [f"col {i + 1}" for i in range(width)],
                    [[plain(v) for v in r] + [""] * (width - len(r)) for r in rows],
                )
        decided = [a for a in approvals if a["gate"] == key]
        if decided:
            doc.table(
                ["at", "decision", "who", "how", "plan hash", "comment"],
                [
                    [
                        a["at"],
                        strong(a["decision"]),
                        plain(a["who"]),
                        "automatically" if a["automatic"] else "by a person",
                        code(a["plan_hash"][:16])
                        + ("" if a["plan_hash"] == run.plan_hash else " (void: plan changed)"),
                        plain(a["comment"]) or "-",
                    ]
                    for a in decided
                ],
            )


def _rejects(doc: Document, journal: Journal, run: RunRow) -> None:
    doc.heading(2, "Rejected records")
    rejects = journal.rejects(run.id)
    if not rejects:
        doc.para("None: every source record was imported.")
        return
    by_step: dict[str, int] = {}
    for r in rejects:
        by_step[r["step"]] = by_step.get(r["step"], 0) + 1
    doc.bullets([f"{plain(step)}: {n:,}" for step, n in by_step.items()])
    doc.table(
        ["step", "source", "key", "reason"],
        [
            [plain(r["step"]), code(r["source"]), code(r["key"]), plain(r["reason"])]
            for r in rejects[:REJECT_ROWS]
        ],
    )
    if len(rejects) > REJECT_ROWS:
        doc.para(
            f"… and {len(rejects) - REJECT_ROWS:,} more "
            f"({code(f'handrail status {run.id} --json')} lists all)."
        )


def _rollback(doc: Document, journal: Journal, run: RunRow) -> None:
    events = journal.events(run.id)
    undo = [e for e in events if e["kind"] in ROLLBACK_EVENTS]
    doc.heading(2, "Rollback")
    if not undo:
        doc.para("The run was not rolled back.")
    else:
        doc.table(
            ["at", "event", "step", "what happened"],
            [[e["at"], e["kind"], plain(e["step"] or ""), plain(e["message"])] for e in undo],
        )
    doc.heading(2, "Event log")
    doc.table(
        ["at", "event", "step", "what happened"],
        [[e["at"], e["kind"], plain(e["step"] or ""), plain(e["message"])] for e in events],
    )
