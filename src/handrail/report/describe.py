"""Sentences for people about a runbook's parts: how a step rolls back, how a resource is
backed up, who answers a gate. Shared by the runbook document and the run report.

Every function reads the definition only (the steps, gates and resources as written);
nothing here touches state.
"""

from __future__ import annotations

from ..checks import Sample
from ..inline import names as names
from ..inline import spans
from ..model import BlastRadius, Tier
from ..resources.base import Resource
from ..runbook import Gate, Step
from .document import code, plain

TIER_MEANING = {
    Tier.READ_ONLY: "reads only; nothing to undo",
    Tier.REVERSIBLE: "changes local state with a known, exact undo",
    Tier.EXTERNAL: "writes that other people see (another service, an API)",
    Tier.DESTRUCTIVE: "deletes, or changes with no inverse: recovery is a restore",
}

GATE_WHEN = {
    "plan": "after the dry run, before the step changes anything",
    "stage": "after each stage",
    "done": "after the step is applied and verified",
}

BACKUP_METHOD = {
    "sqlite": "SQLite online backup API (a consistent copy even while others write)",
    "json": "a byte copy of the file",
    "directory": "a tar archive of the tree, with a manifest of every entry",
    "postgres": "pg_dump in custom format",
    "http": "a record of the configured endpoints' bodies (not restorable: a push keeps "
    "each item's prior value itself)",
}


def ticked(text: str) -> str:
    """Text whose `backtick-quoted` parts are code (as checks' ``describe()`` write SQL)."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: all of it is plain text
        return plain(text)
    return "".join(code(p) if i % 2 else plain(p) for i, p in enumerate(parts))


def changes_text(step: Step) -> str:
    """What the step changes: the author's words, or the step's own explanation."""
    if step.blast.changes != step.default_changes():
        return plain(step.blast.changes)
    return spans(step.explain_changes())


def worst_case_text(step: Step) -> str:
    """The worst case on a partial failure: the author's words, or the step's own."""
    if step.blast.worst_case != BlastRadius("").worst_case:
        return plain(step.blast.worst_case)
    return spans(step.explain_worst_case())


def rollback_text(step: Step, *, inline: bool = True) -> str:
    """How the step's rollback undoes it, in one sentence (``inline=False``: a SQL step's
    down statements are shown after it, not in it)."""
    if not _explains_its_rollback(step):
        return spans(Step.explain_rollback(step))
    if not inline and step.explain_sql() is not None:
        return "runs its down statements (below) in one transaction"
    return spans(step.explain_rollback())


def _explains_its_rollback(step: Step) -> bool:
    """Whether the step's own explanation may speak: only for a step that writes and has
    an inverse (the engine's facts win), and only when the explanation is defined at or
    below the rollback it explains (a subclass that replaced the rollback and said nothing
    about it gets the default, drawn from the new rollback's docstring)."""
    if step.tier is Tier.READ_ONLY or not step.reversible():
        return False
    cls = type(step)
    return issubclass(_defined_in(cls, "explain_rollback"), _defined_in(cls, "rollback"))


def _defined_in(cls: type[Step], attr: str) -> type:
    return next(c for c in cls.__mro__ if attr in vars(c))


def backup_text(resource: Resource) -> str:
    return BACKUP_METHOD.get(resource.kind, f"the {resource.kind} resource's snapshot")


def verify_text(resource: Resource) -> str:
    if resource.restore_testable:
        return (
            "checksum re-read; restored into a scratch copy whose fingerprint must equal "
            "the original's"
        )
    return "checksum re-read (a restore test is not possible for this kind)"


def human_checks(gate: Gate) -> list[str]:
    """Checks whose outcome only a person can judge (samples)."""
    return [c.name for c in gate.checks if isinstance(c, Sample)]


def approver_text(gate: Gate) -> str:
    """Who must answer the gate, and how."""
    if gate.approval:
        return (
            "a person must approve (" + code("handrail approve RUN") + "); the approval "
            "is bound to the plan hash"
        )
    samples = human_checks(gate)
    if samples:
        return f"a person ({names(samples)} is always inconclusive: someone must look); " + code(
            "handrail approve RUN"
        )
    return (
        "nobody when every check passes; an inconclusive check pauses for a person, "
        "a failed one stops the run"
    )


def needs_person(gate: Gate) -> bool:
    return gate.approval or bool(human_checks(gate))


def on_fail_text(gate: Gate) -> str:
    if gate.on_fail == "rollback":
        return "the step is rolled back, then the run stops"
    return "the run stops with the step applied, for inspection"


def stages_text(step: Step) -> str:
    if step.stages is None:
        return "none: all in one stage"
    sizes = [f"{s:,}" if isinstance(s, int) else "the rest" for s in step.stages.describe()]
    gate = step.gates_at("stage")
    after = f"; gate {names([g.name for g in gate])} after each" if gate else ""
    return f"{', then '.join(sizes)} (batches of {step.batch_size}){after}"


def fmt_seconds(seconds: float) -> str:
    """A duration for people: 0.04 s, 1.2 s, 3.5 min, 1.2 h."""
    if seconds < 0.01:
        return "< 0.01 s"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
