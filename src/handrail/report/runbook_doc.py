"""The operator's runbook and the blast-radius table, generated from a runbook definition
and its journal, so the documents never drift from what runs.

What comes from where:

- steps, tiers, stages, gates, checks, blast radius, prerequisites: the definition
  (:meth:`Runbook.describe`, each check's ``describe()``);
- what each step would change now: a dry run (:func:`~handrail.engine.executor.plan_runbook`),
  when the caller made one;
- rollback times: the last rehearsal in the journal (``handrail rehearse``), scaled from
  the items the rehearsal's dry run counted to the items the current dry run counts.

The order is the runbook's, and nothing above the footer depends on the clock or the
machine (resource paths are shown relative to the runbook's directory).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .. import __version__
from ..engine.journal import Journal, StepRow
from ..engine.rehearse import check_clonable
from ..errors import HandrailError
from ..model import Plan, Tier
from ..resources.base import Resource
from ..runbook import Gate, Runbook, Step
from .describe import (
    GATE_WHEN,
    TIER_MEANING,
    approver_text,
    backup_text,
    changes_text,
    fmt_seconds,
    names,
    needs_person,
    on_fail_text,
    rollback_text,
    stages_text,
    ticked,
    verify_text,
    worst_case_text,
)
from .document import Document, code, plain, strong

Part = Literal["all", "runbook", "blast"]


@dataclass(frozen=True)
class Rehearsal:
    """What the last rehearsal of a runbook measured (see :mod:`handrail.engine.rehearse`)."""

    run_id: str
    ok: bool
    message: str
    plan_hash: str
    rollback_method: str
    rollback_seconds: float | None
    steps: dict[str, StepRow] = field(default_factory=dict)

    def planned(self, step: str) -> int | None:
        row = self.steps.get(step)
        items = (row.plan or {}).get("items") if row else None
        return int(items) if isinstance(items, int) else None


def last_rehearsal(journal: Journal, runbook_key: str) -> Rehearsal | None:
    """The newest rehearsal of this runbook that finished its rollback phase, if any."""
    for run in reversed(journal.runs(runbook_key, mode="rehearsal")):
        events = [e for e in journal.events(run.id) if e["kind"] == "rehearsal"]
        if not events:
            continue  # a second forward run, or a rehearsal that was interrupted
        data: dict[str, Any] = events[-1]["data"]
        return Rehearsal(
            run_id=run.id,
            ok=bool(data.get("ok")),
            message=str(events[-1]["message"]),
            plan_hash=run.plan_hash,
            rollback_method=str(data.get("rollback_method", "steps")),
            rollback_seconds=data.get("rollback_seconds"),
            steps={s.name: s for s in journal.steps(run.id)},
        )
    return None


@dataclass
class DocInputs:
    """Everything a runbook document is made from besides the runbook itself."""

    ref: str  # how commands name the runbook file ("runbook.py", "demo/runbook.py")
    base_dir: Path | None = None  # resource paths under it are shown relative to it
    state_arg: str = ""  # e.g. " --state-dir /srv/state", appended to commands
    plans: dict[str, Plan] | None = None  # the current dry run, by step
    plan_note: str = ""  # why there is no dry run
    rehearsal: Rehearsal | None = None


def _where(resource: Resource, base: Path | None) -> str:
    loc = resource.location()
    if base is not None:
        try:
            return str(Path(loc).resolve().relative_to(base.resolve()))
        except (ValueError, OSError):
            pass
    return loc


def _cmd(*args: str) -> str:
    return " ".join(shlex.quote(a) for a in args)


def _rollback_short(step: Step) -> str:
    if step.tier is Tier.READ_ONLY:
        return "nothing to undo"
    if not step.reversible():
        return "restore backups"
    return "exact undo"


def rollback_estimate(step: Step, inputs: DocInputs) -> str:
    """The measured rollback time of the last rehearsal, scaled to the current item count."""
    if step.tier is Tier.READ_ONLY:
        return "none needed"
    reh = inputs.rehearsal
    if reh is None:
        return "not rehearsed"
    if reh.rollback_method == "backups":
        # A step without inverse made the rehearsal restore every backup instead.
        if reh.rollback_seconds is None:
            return "not rehearsed"
        restore = fmt_seconds(reh.rollback_seconds)
        if not step.reversible():
            return f"{restore} (restore of every backup, rehearsed)"
        return (
            "not rehearsed step by step (the rehearsed recovery, a restore of every "
            f"backup, took {restore})"
        )
    row = reh.steps.get(step.name)
    if row is None or row.rollback_seconds is None:
        return "not rehearsed"
    measured = row.rollback_seconds
    then = reh.planned(step.name)
    now = inputs.plans[step.name].items if inputs.plans and step.name in inputs.plans else None
    if then and now and then != now:
        scaled = measured * now / then
        return (
            f"≈ {fmt_seconds(scaled)} (rehearsed: {fmt_seconds(measured)} for {then:,} "
            f"item(s); now {now:,})"
        )
    items = f" for {then:,} item(s)" if then else ""
    return f"{fmt_seconds(measured)} (rehearsed{items})"


def _detection(step: Step) -> str:
    text = plain(step.blast.detection)
    gates = [g.name for g in step.gates if g.checks]
    if gates:
        text += f"; gate {names(gates)}"
    return text


# -- the document ---------------------------------------------------------------------------------
def runbook_document(runbook: Runbook, inputs: DocInputs, *, part: Part = "all") -> Document:
    """The operator's runbook and/or the blast-radius table of ``runbook``."""
    title = f"Blast radius: {runbook.name}" if part == "blast" else f"Runbook: {runbook.name}"
    doc = Document(plain(title))
    if runbook.description:
        doc.para(plain(runbook.description))
    if part in ("all", "runbook"):
        _operator_runbook(doc, runbook, inputs)
    if part in ("all", "blast"):
        _blast_radius(doc, runbook, inputs)
    doc.footer = [
        f"Generated by handrail {__version__} ({code('handrail doc')}) from {code(inputs.ref)}; "
        f"plan hash {code(runbook.plan_hash()[:16])} (approvals are bound to it)."
    ]
    return doc


def _summary(doc: Document, runbook: Runbook, inputs: DocInputs) -> None:
    doc.heading(2, "Summary")
    rows = []
    for i, s in enumerate(runbook.steps, 1):
        gates = ", ".join(plain(g.name) + (" (person)" if needs_person(g) else "") for g in s.gates)
        stages = "/".join(str(x) for x in s.stages.describe()) if s.stages else "-"
        rows.append(
            [
                str(i),
                plain(s.name),
                s.tier.label,
                changes_text(s),
                stages,
                gates or "-",
                _rollback_short(s),
            ]
        )
    doc.table(
        ["#", "step", "tier", "what it changes", "stages", "gates", "rollback"],
        rows,
        ["right", "left", "left", "left", "left", "left", "left"],
    )
    doc.para(_rehearsal_line(runbook, inputs))


def _rehearsal_line(runbook: Runbook, inputs: DocInputs) -> str:
    reh = inputs.rehearsal
    rehearse = code(_cmd("handrail", "rehearse", inputs.ref) + inputs.state_arg)
    if reh is None:
        try:
            check_clonable(runbook)
        except HandrailError as exc:
            why = exc.__cause__ if isinstance(exc.__cause__, HandrailError) else exc
            hint = f" ({plain(why.hint)})" if why.hint else ""
            return f"{strong('Rehearsal:')} not possible as written: {plain(why.message)}{hint}."
        return (
            f"{strong('Rehearsal:')} none yet. {rehearse} runs the whole runbook forward, "
            "back and forward again on clones and proves that the rollback restores every "
            "resource exactly; the rollback times below come from it."
        )
    verdict = "passed" if reh.ok else "FAILED"
    text = f"{strong('Rehearsal:')} the last one ({code(reh.run_id)}) {verdict}: "
    text += plain(reh.message.split(": ", 1)[-1]) + "."
    if reh.plan_hash != runbook.plan_hash():
        text += f" The runbook changed since; rehearse again with {rehearse}."
    return text


def _step_id(i: int, step: Step) -> str:
    from .document import anchor

    return anchor(f"step {i} {step.name}")


def _operator_runbook(doc: Document, runbook: Runbook, inputs: DocInputs) -> None:
    ref, st = inputs.ref, inputs.state_arg
    _summary(doc, runbook, inputs)

    doc.heading(2, "Prerequisites")
    doc.bullets([plain(p) for p in runbook.prerequisites] or ["none listed in the runbook"])
    engine = [
        "every resource exists, is readable and is not corrupt (otherwise exit 2, nothing changed)",
        "no other run of this runbook holds its lease",
        "approvals are bound to the plan hash: editing the runbook after an approval voids it",
    ]
    destructive = [s.name for s in runbook.steps if s.tier is Tier.DESTRUCTIVE]
    if destructive:
        engine.append(
            f"{code('--allow-destructive')} is given, because {names(destructive)} "
            "is of tier destructive"
        )
    doc.para("handrail checks these itself before any change:")
    doc.bullets(engine)

    doc.heading(2, "Backups")
    snap = {r.name for r in runbook.snapshotted}
    doc.para(
        f"Before the first change, {code('handrail run')} snapshots each resource below into "
        f"the state directory ({code('.handrail/backups/RUN/')} by default), records its "
        "sha256 and verifies it. No step above read-only runs until every snapshot is "
        "verified."
    )
    rows = []
    for r in runbook.resources:
        if r.name in snap:
            rows.append(
                [
                    code(r.name),
                    r.kind,
                    code(_where(r, inputs.base_dir)),
                    backup_text(r),
                    verify_text(r),
                ]
            )
        else:
            why = (
                "only read (backup_when_read=False)"
                if not r.backup_when_read
                else "only read by read-only steps"
            )
            rows.append([code(r.name), r.kind, code(_where(r, inputs.base_dir)), "none", why])
    doc.table(["resource", "kind", "location", "backup", "verification"], rows)
    doc.code(
        "\n".join(
            [
                _cmd("handrail", "backups", "list", ref) + st + "      # checksums, how verified",
                _cmd("handrail", "backups", "verify", ref) + st + "    # prove them again",
                _cmd("handrail", "backups", "restore", ref)
                + st
                + "   # last resort: everything back, whole",
            ]
        )
    )

    doc.heading(2, "Dry run")
    doc.code(_cmd("handrail", "plan", ref) + st)
    doc.para(
        "It validates every resource and shows, for each step, what it would change with "
        "counts and samples, its tier, stages and gates. It writes nothing."
    )
    if inputs.plans:
        doc.table(
            ["#", "step", "the dry run says", "items"],
            [
                [
                    str(i),
                    plain(s.name),
                    plain(inputs.plans[s.name].summary) if s.name in inputs.plans else "-",
                    _items(inputs.plans[s.name].items) if s.name in inputs.plans else "-",
                ]
                for i, s in enumerate(runbook.steps, 1)
            ],
            ["right", "left", "left", "right"],
        )
    elif inputs.plan_note:
        doc.para(plain(inputs.plan_note))

    doc.heading(2, "Steps")
    run_args = ["handrail", "run", ref]
    if destructive:
        run_args.append("--allow-destructive")
    doc.para(
        f"{code(_cmd(*run_args) + st)} runs the steps in this order and resumes where the "
        "last run stopped (after a gate, a failure, a crash or Ctrl-C); no batch is applied "
        "twice. Each step below says what to expect and how to undo it."
    )
    for i, step in enumerate(runbook.steps, 1):
        _step_section(doc, i, step, inputs, run_args)

    doc.heading(2, "If something goes wrong")
    doc.bullets(
        [
            f"A check fails: the run stops (exit 1). {code(_cmd('handrail', 'status', ref) + st)} "
            f"shows the evidence. Fix the cause and {code(_cmd(*run_args) + st)} resumes, or "
            "undo it.",
            f"Interrupted, killed or the machine lost power: run {code(_cmd(*run_args) + st)} "
            "again; the journal says what is done.",
            f"Undo everything: {code(_cmd('handrail', 'rollback', ref) + st)}, newest step "
            "first, each verified against its fingerprint from before it ran. Rows someone "
            f"changed since are reported and left alone; {code('--force')} overwrites them.",
            f"Last resort: {code(_cmd('handrail', 'backups', 'restore', ref) + st)} puts "
            "every resource back from the run's verified backups, whole.",
        ]
    )


def _items(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _step_section(
    doc: Document, i: int, step: Step, inputs: DocInputs, run_args: list[str]
) -> None:
    ref, st = inputs.ref, inputs.state_arg
    doc.heading(3, f"Step {i}: {plain(step.name)}", _step_id(i, step))
    what = [f"{strong(step.tier.label)}: {TIER_MEANING[step.tier]}"]
    if step.writes:
        what.append(f"writes {names([r.name for r in step.writes])}")
    if step.reads:
        what.append(f"reads {names([r.name for r in step.reads])}")
    doc.para("; ".join(what) + ".")
    if step.description:
        doc.para(plain(step.description))
    facts = [f"{strong('Changes:')} {changes_text(step)}"]
    dry = f"{strong('Dry run:')} {code(_cmd('handrail', 'plan', ref) + st)}"
    if inputs.plans and step.name in inputs.plans:
        dry += f" — now: {plain(inputs.plans[step.name].summary)}"
    facts.append(dry)
    facts.append(f"{strong('Run:')} {code(_cmd(*run_args) + st)}")
    facts.append(f"{strong('Stages:')} {stages_text(step)}")
    facts.append(f"{strong('Worst case on partial failure:')} {worst_case_text(step)}")
    facts.append(f"{strong('Detection:')} {_detection(step)}")
    doc.bullets(facts)
    sql = step.explain_sql()
    if sql is not None:
        doc.code(";\n".join(s.rstrip(";") for s in sql[0]) + ";", "sql")
    for gate in step.gates:
        _gate_section(doc, step, gate, inputs)
    rollback = [f"{strong('Rollback:')} {rollback_text(step, inline=False)}."]
    if step.tier is not Tier.READ_ONLY and step.reversible():
        cmd = _cmd("handrail", "rollback", ref, "--to", step.name) + st
        rollback.append(
            f"{code(cmd)} undoes this step and every later one, newest first, and checks "
            "each against its fingerprint from before it ran."
        )
    rollback.append(f"Estimated time: {rollback_estimate(step, inputs)}.")
    doc.para(" ".join(rollback))
    if sql is not None and sql[1]:
        doc.code(";\n".join(s.rstrip(";") for s in sql[1]) + ";", "sql")


def _gate_section(doc: Document, step: Step, gate: Gate, inputs: DocInputs) -> None:
    ref, st = inputs.ref, inputs.state_arg
    doc.callout(
        "stop",
        f"Gate {code(gate.name)}, {GATE_WHEN[gate.at]}. "
        f"Who answers: {approver_text(gate)}. If a check fails: {on_fail_text(gate)}.",
    )
    if gate.checks:
        doc.table(
            ["check", "asserts"],
            [[plain(c.name), ticked(c.describe())] for c in gate.checks],
        )
    if gate.instructions:
        doc.para(f"{strong('Operator:')} {plain(gate.instructions)}")
    if needs_person(gate):
        doc.code(
            "\n".join(
                [
                    _cmd("handrail", "status", ref) + st + "     # the evidence and the sample",
                    _cmd("handrail", "approve", ref, "--comment", "why") + st,
                    _cmd("handrail", "reject", ref, "--comment", "why") + st,
                ]
            )
        )


def _blast_radius(doc: Document, runbook: Runbook, inputs: DocInputs) -> None:
    doc.heading(2, "Blast radius")
    rows = []
    for i, s in enumerate(runbook.steps, 1):
        rows.append(
            [
                f"{i}. {plain(s.name)}",
                changes_text(s),
                worst_case_text(s),
                _detection(s),
                rollback_text(s),
                rollback_estimate(s, inputs),
                s.tier.label,
            ]
        )
    doc.table(
        [
            "step",
            "what changes",
            "worst case on partial failure",
            "detection signal",
            "rollback",
            "est. rollback time",
            "risk tier",
        ],
        rows,
    )
    doc.heading(3, "Steps by risk tier")
    items = []
    for tier in sorted(Tier, reverse=True):
        steps = [s.name for s in runbook.steps if s.tier is tier]
        listed = names(steps) if steps else "none"
        items.append(f"{strong(tier.label)} — {TIER_MEANING[tier]}: {listed}")
    doc.bullets(items)
