"""Sentences for people about a runbook's parts: how a step rolls back, how a resource is
backed up, who answers a gate. Shared by the runbook document and the run report.

Every function reads the definition only (the steps, gates and resources as written);
nothing here touches state.
"""

from __future__ import annotations

from collections.abc import Callable

from ..checks import Sample
from ..model import BlastRadius, Tier
from ..ops.backfill import Backfill
from ..ops.checkpoint import Checkpoint
from ..ops.json_import import ImportRecords
from ..ops.json_transform import TransformJSON
from ..ops.sql import SQL, AddColumns, CreateIndex, CreateSchema
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

_KNOWN_ROLLBACKS = (SQL, CreateSchema, AddColumns, CreateIndex, Backfill, ImportRecords)


def names(items: list[str]) -> str:
    """``a``, ``b`` and ``c`` as inline code."""
    coded = [code(i) for i in items]
    if len(coded) <= 1:
        return "".join(coded)
    return ", ".join(coded[:-1]) + " and " + coded[-1]


def ticked(text: str) -> str:
    """Text whose `backtick-quoted` parts are code (as checks' ``describe()`` write SQL)."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: all of it is plain text
        return plain(text)
    return "".join(code(p) if i % 2 else plain(p) for i, p in enumerate(parts))


def changes_text(step: Step) -> str:
    """What the step changes: the author's words, or a sentence from its parameters."""
    if step.blast.changes != step.default_changes():
        return plain(step.blast.changes)
    if not step.writes:
        return "nothing: it only reads"
    if isinstance(step, AddColumns):
        cols = [f"{c} {t}" for c, t in step.columns.items()]
        return f"adds nullable column(s) {names(cols)} to {code(step.table)} if missing"
    if isinstance(step, CreateIndex):
        on = f"{step.table}({', '.join(step.cols)})"
        return f"creates index {code(step.index)} on {code(on)} if missing"
    if isinstance(step, CreateSchema):
        return (
            f"creates missing tables and indexes in {code(step.db.name)} "
            f"({len(step.ddl)} statement(s))"
        )
    sql = sql_of(step)
    if sql is not None:
        return f"runs {len(sql[0])} statement(s) on {_resource_name(step, 'db')} in one transaction"
    if isinstance(step, Backfill):
        return (
            f"sets {names(step.columns)} in rows of {code(step.table)}, in batches by "
            f"{code(step.key)}"
        )
    if isinstance(step, ImportRecords):
        return f"upserts rows into {code(step.table)} by {names(step.key_cols)}"
    if isinstance(step, TransformJSON):
        return f"rewrites {code(step.file.name)} atomically (temp file, fsync, rename)"
    return plain(step.blast.changes)


def worst_case_text(step: Step) -> str:
    """The worst case on a partial failure: the author's words, or what the engine ensures."""
    if step.blast.worst_case != BlastRadius("").worst_case:
        return plain(step.blast.worst_case)
    if not step.writes:
        return "none: it changes nothing"
    if isinstance(step, ImportRecords | Backfill):
        return (
            "a batch fails: it rolls back whole; committed batches stay and a resume does "
            "not apply them again"
        )
    if step.exactly_once:
        return "it fails: its one transaction rolls back whole, nothing is half-applied"
    if isinstance(step, TransformJSON):
        return "none half-written: the old file or the new one, never a mix"
    return "see the rollback"


def rollback_text(step: Step, *, inline: bool = True) -> str:
    """How the step's rollback undoes it, in one sentence (``inline=False``: the SQL of a
    ``SQL`` step's down statements is shown after it, not in it)."""
    if step.tier is Tier.READ_ONLY or isinstance(step, Checkpoint):
        return "nothing to undo: it changes nothing"
    if not step.reversible():
        return "no inverse: restore the run's verified backups with " + code(
            "handrail backups restore RUN"
        )
    owner = getattr(type(step).rollback, "__qualname__", "").split(".")[0]
    known = owner in {c.__name__ for c in (*_KNOWN_ROLLBACKS, TransformJSON)} | {
        "SQLiteStep",
        *_BY_NAME,
    }
    if not known:
        doc = (type(step).rollback.__doc__ or "").strip().splitlines()
        first = doc[0].rstrip(".") if doc else ""
        return plain(first) if first else f"its own inverse ({code(owner + '.rollback')})"
    sql = sql_of(step)
    if sql is not None:
        if not inline:
            return "runs its down statements (below) in one transaction"
        return "runs its down statements: " + " ".join(code(s) for s in sql[1] or [])
    if isinstance(step, CreateSchema):
        return (
            f"drops the tables and indexes this run created in {code(step.db.name)} "
            "(and the database file, if the run created it)"
        )
    if isinstance(step, AddColumns):
        return (
            f"drops the columns this run added to {code(step.table)} "
            f"({names(list(step.columns))}); columns that were already there stay"
        )
    if isinstance(step, CreateIndex):
        return f"drops index {code(step.index)} if this run created it"
    if isinstance(step, Backfill):
        return (
            f"puts back the prior values of {code(step.table)} from the step's undo table; "
            "rows changed since are reported and left alone"
        )
    if isinstance(step, ImportRecords):
        return (
            f"replays the undo log on {code(step.table)}: deletes the rows this run inserted "
            "and restores the prior values of rows it updated; rows changed since are "
            "reported and left alone"
        )
    if isinstance(step, TransformJSON):
        return (
            f"writes back the previous bytes of {code(step.file.name)} if it still holds "
            "what the step wrote (removes it if the step created it); otherwise reports it"
        )
    for cls in type(step).__mro__:
        describe = _BY_NAME.get(cls.__name__)
        if describe is not None:
            return describe(step)
    return f"its own inverse ({code(type(step).__name__ + '.rollback')})"


def _mro_names(step: Step) -> set[str]:
    return {c.__name__ for c in type(step).__mro__}


def sql_of(step: Step) -> tuple[list[str], list[str] | None] | None:
    """(up, down) statements of a SQL step on SQLite or PostgreSQL, else None."""
    if isinstance(step, SQL) or "PgSQL" in _mro_names(step):
        up = getattr(step, "up", [])
        down = getattr(step, "down", None)
        return list(up), (list(down) if down is not None else None)
    return None


def _resource_name(step: Step, attr: str) -> str:
    res = getattr(step, attr, None)
    return code(getattr(res, "name", "?"))


# Steps from modules with optional dependencies (httpx, psycopg) are recognised by class
# name, so describing a runbook never imports what it does not use.
_BY_NAME: dict[str, Callable[[Step], str]] = {
    "HTTPPush": lambda s: (
        f"puts back each item's prior value on {_resource_name(s, 'service')} (read and "
        "kept right before the push wrote it); items changed since are reported and left "
        "alone"
    ),
    "QuarantineDelete": lambda s: (
        f"moves what it quarantined back into {_resource_name(s, 'target')} and undoes its "
        f"row updates, while the quarantine is kept ({code('handrail purge')} empties it)"
    ),
    "PgBackfill": lambda s: (
        f"puts back the prior values of {code(getattr(s, 'table', '?'))} from the step's undo "
        "log in the database; rows changed since are reported and left alone"
    ),
}


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
