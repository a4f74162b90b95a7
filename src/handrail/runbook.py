"""The runbook model: resources, steps with their inverse, stages and gates.

A runbook file is a Python file that defines ``runbook``::

    from handrail import Runbook, SQLite, SQL, Gate, checks

    db = SQLite("app", "data/app.db")
    runbook = Runbook(
        "add-status-index",
        steps=[
            SQL(
                "add index",
                db,
                up="CREATE INDEX IF NOT EXISTS idx_status ON items(status)",
                down="DROP INDEX IF EXISTS idx_status",
                gates=[Gate("index exists", checks=[checks.IndexExists(db, "idx_status")])],
            ),
        ],
    )

Steps are data objects: the executor owns their lifecycle (snapshot, plan, apply in
stages and batches, verify, gate, rollback); a step never calls its own verify or
rollback.
"""

from __future__ import annotations

import hashlib
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from .errors import RunbookError
from .hashing import canonical_json
from .model import BlastRadius, CheckResult, Plan, Tier
from .resources.base import Resource

if TYPE_CHECKING:
    from .engine.context import StepContext

GateAt = Literal["plan", "stage", "done"]

#: the worst case of a step applied in batches, each committed whole with its ledger mark
BATCH_WORST_CASE = (
    "a batch fails: it rolls back whole; committed batches stay and a resume does not apply "
    "them again"
)


def describe_callable(fn: Callable[..., Any]) -> str:
    """A stable description of a function for the plan hash: its source when available."""
    try:
        return inspect.getsource(fn).strip()
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        digest = hashlib.sha256(code.co_code).hexdigest()[:16] if code else "?"
        return f"{getattr(fn, '__qualname__', repr(fn))}#{digest}"


class Check(ABC):
    """A named assertion that records the numbers it saw.

    ``baseline`` runs once at the start of the run, right after the backups, so a check
    can compare "before" with "now" even after a crash and resume.
    """

    #: a short sentence for documents: what it asserts, with thresholds
    def __init__(self, name: str) -> None:
        self.name = name

    def baseline(self, ctx: StepContext) -> Any:
        """What to remember before anything changes (JSON-serialisable); None by default."""
        return None

    @abstractmethod
    def evaluate(self, ctx: StepContext, baseline: Any) -> CheckResult:
        """Look at the state now and return pass, fail or inconclusive with evidence."""

    @abstractmethod
    def describe(self) -> str:
        """One line for people: what is checked and the threshold."""

    def result(self, ok: bool | None, evidence: dict[str, Any], message: str = "") -> CheckResult:
        from .model import Outcome

        outcome = Outcome.INCONCLUSIVE if ok is None else (Outcome.PASS if ok else Outcome.FAIL)
        return CheckResult(self.name, outcome, evidence, message)


@dataclass
class Gate:
    """A STOP point: automated checks, and optionally a human's approval.

    ``at``: "plan" (after the dry run, before any change), "stage" (after each stage of a
    staged step), or "done" (after the step is applied and verified).
    ``on_fail``: "stop" leaves the step applied for inspection; "rollback" undoes it first.
    """

    name: str
    checks: Sequence[Check] = ()
    approval: bool = False
    at: GateAt = "done"
    on_fail: Literal["stop", "rollback"] = "stop"
    instructions: str = ""

    def __post_init__(self) -> None:
        if self.at not in ("plan", "stage", "done"):
            raise RunbookError(
                f"gate {self.name!r}: at must be plan, stage or done, not {self.at!r}"
            )
        if self.on_fail not in ("stop", "rollback"):
            raise RunbookError(f"gate {self.name!r}: on_fail must be stop or rollback")
        names = [c.name for c in self.checks]
        if len(names) != len(set(names)):
            raise RunbookError(f"gate {self.name!r}: two checks share a name: {names}")

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "at": self.at,
            "approval": self.approval,
            "on_fail": self.on_fail,
            "checks": [{"name": c.name, "what": c.describe()} for c in self.checks],
            "instructions": self.instructions,
        }


@dataclass(frozen=True)
class Stages:
    """Sizes of successive stages; ``None`` as the last size means "the rest".

    ``Stages(100, 1000, None)``: 100 items, gate, 1000 items, gate, the rest, gate.
    """

    sizes: tuple[int | None, ...]

    def __init__(self, *sizes: int | None) -> None:
        if not sizes:
            sizes = (None,)
        for i, s in enumerate(sizes):
            if s is None and i != len(sizes) - 1:
                raise RunbookError("only the last stage can be None (the rest)")
            if s is not None and s <= 0:
                raise RunbookError(f"stage sizes must be positive, got {s}")
        object.__setattr__(self, "sizes", tuple(sizes))

    def split(self, n: int) -> list[tuple[int, int]]:
        """[start, end) ranges of items for each stage that has any."""
        out: list[tuple[int, int]] = []
        start = 0
        for size in self.sizes:
            if start >= n:
                break
            end = n if size is None else min(n, start + size)
            out.append((start, end))
            start = end
        if start < n:  # sizes did not end with None: the rest is one more stage
            out.append((start, n))
        return out

    def describe(self) -> list[int | str]:
        return ["rest" if s is None else s for s in self.sizes]


class Step(ABC):
    """One unit of change, with its plan, apply, verify and exact rollback.

    Subclasses set ``writes`` (resources changed) and ``reads``. Item-based steps return
    their work list from :meth:`items`; the executor splits it into stages and batches
    and records each batch, and :meth:`apply_batch` applies one. A step without items is
    applied as one batch with no items.
    """

    #: deletes data it cannot put back (quarantine steps are not: they move, not delete)
    deletes_irreversibly: ClassVar[bool] = False
    #: apply_batch of this step is exactly-once through a ledger in the target database;
    #: otherwise it must be idempotent (re-applying a committed batch changes nothing)
    exactly_once: ClassVar[bool] = False

    def __init__(
        self,
        name: str,
        *,
        writes: Sequence[Resource] = (),
        reads: Sequence[Resource] = (),
        gates: Sequence[Gate] = (),
        stages: Stages | Sequence[int | None] | None = None,
        batch_size: int = 500,
        blast: BlastRadius | None = None,
        tier: Tier | str | None = None,
        description: str = "",
    ) -> None:
        if not name or "/" in name or ":" in name or "#" in name:
            raise RunbookError(f"step name {name!r} must be non-empty without '/', ':' or '#'")
        if batch_size <= 0:
            raise RunbookError(f"step {name!r}: batch_size must be positive")
        self.name = name
        self.writes = tuple(writes)
        self.reads = tuple(reads)
        self.gates = list(gates)
        if stages is None or isinstance(stages, Stages):
            self.stages = stages
        else:
            self.stages = Stages(*stages)
        self.batch_size = batch_size
        self.blast = blast or BlastRadius(changes=self.default_changes())
        self.description = description
        requested = Tier.parse(tier) if isinstance(tier, str) else tier
        derived = self.derived_tier()
        if requested is not None and requested < derived:
            raise RunbookError(
                f"step {name!r}: tier {requested.label} is lower than its derived tier "
                f"{derived.label}; a tier can be raised, never lowered"
            )
        self.tier = requested if requested is not None else derived

    # -- derived facts ----------------------------------------------------------------
    def reversible(self) -> bool:
        """Whether :meth:`rollback` is an exact inverse."""
        return type(self).rollback is not Step.rollback

    def derived_tier(self) -> Tier:
        if not self.writes:
            return Tier.READ_ONLY
        if self.deletes_irreversibly or not self.reversible():
            return Tier.DESTRUCTIVE
        if any(r.external for r in self.writes):
            return Tier.EXTERNAL
        return Tier.REVERSIBLE

    def gates_at(self, at: GateAt) -> list[Gate]:
        return [g for g in self.gates if g.at == at]

    def default_changes(self) -> str:
        names = ", ".join(r.name for r in self.writes) or "nothing"
        return f"writes {names}"

    # -- explanations for people (the runbook document and blast-radius table ask) ---------
    # Each returns one sentence whose `backtick-quoted` parts are shown as code (quote
    # names with handrail.inline.code); everything else is shown literally. Steps override
    # them beside their own code, so the documents know no step type.
    def explain_changes(self) -> str:
        """What this step changes. The runbook author's own ``blast`` words, when given,
        are shown instead. Default: the resources it writes, or that it only reads."""
        if not self.writes:
            return "nothing: it only reads"
        return self.default_changes()

    def explain_worst_case(self) -> str:
        """What a failure halfway leaves behind. The author's ``blast`` words, when
        given, are shown instead. Default: from what it writes and how it commits."""
        if not self.writes:
            return "none: it changes nothing"
        if self.exactly_once:
            return "it fails: its one transaction rolls back whole, nothing is half-applied"
        return "see the rollback"

    def explain_rollback(self) -> str:
        """How :meth:`rollback` undoes this step. Documents ask only a step that writes
        and has an inverse, and only when this method is defined at or below the class
        that defines :meth:`rollback` (a subclass with its own rollback and no word on it
        gets this default). Default: the first line of the rollback's docstring."""
        if self.tier is Tier.READ_ONLY:
            return "nothing to undo: it changes nothing"
        if not self.reversible():
            return (
                "no inverse: restore the run's verified backups with `handrail backups restore RUN`"
            )
        rollback = type(self).rollback
        lines = (rollback.__doc__ or "").strip().splitlines()
        first = lines[0].rstrip(".") if lines else ""
        owner = rollback.__qualname__.split(".")[0]
        return first or f"its own inverse (`{owner}.rollback`)"

    def explain_sql(self) -> tuple[list[str], list[str] | None] | None:
        """The statements a SQL step runs and those that undo it (None: no inverse),
        listed in the runbook document; None for a step not written as SQL."""
        return None

    def describe(self) -> dict[str, Any]:
        """Everything that defines this step, for the plan hash and the documents."""
        return {
            "name": self.name,
            "type": type(self).__name__,
            "tier": self.tier.label,
            "writes": [r.name for r in self.writes],
            "reads": [r.name for r in self.reads],
            "stages": self.stages.describe() if self.stages else None,
            "batch_size": self.batch_size,
            "gates": [g.describe() for g in self.gates],
            "blast": {
                "changes": self.blast.changes,
                "worst_case": self.blast.worst_case,
                "detection": self.blast.detection,
            },
            "description": self.description,
            "params": self.params(),
        }

    def params(self) -> dict[str, Any]:
        """The step's own parameters (SQL text, table, functions' source) for the hash."""
        return {}

    # -- lifecycle (called by the executor only) ----------------------------------------
    @abstractmethod
    def plan(self, ctx: StepContext) -> Plan:
        """What would change, with counts and samples; writes nothing."""

    def items(self, ctx: StepContext) -> list[Any] | None:
        """The work list (JSON-serialisable keys) or None for a single-shot step."""
        return None

    @abstractmethod
    def apply_batch(self, ctx: StepContext, batch: int, items: list[Any]) -> int:
        """Apply one batch and return how many items it changed."""

    def validate(self, ctx: StepContext) -> None:
        """Raise :class:`~handrail.errors.BadInput` when the step cannot run on the state
        ``ctx`` shows: tables, columns and keys that do not exist, SQL that does not
        compile. Called before the first change, where no earlier step changes what this
        one touches (a forward run on clones covers the rest); writes nothing."""
        return None

    def committed_batches(self, ctx: StepContext) -> set[int]:
        """Batches the target itself says committed (exactly-once steps), else empty."""
        return set()

    def verify(self, ctx: StepContext) -> list[CheckResult]:
        """The step's own postconditions, run after apply (gates come after)."""
        return []

    def rollback(self, ctx: StepContext) -> None:
        """Undo what this run's committed batches did, exactly. Not defined: irreversible.

        It may rewrite only values this run wrote and nobody changed since (those others
        changed are conflicts: reported with :class:`~handrail.errors.RollbackConflict`,
        rewritten only when ``ctx.state["_force"]``), and it never removes a row, column,
        table or file that holds anything not this run's: :meth:`rollback_blockers` is
        asked first, and the executor does not call this while it names anything.
        """
        raise NotImplementedError

    def record_owned(self, ctx: StepContext) -> None:
        """Called once every batch has committed: remember (with ``ctx.save_state``) what
        this step owns now, so :meth:`rollback_blockers` can tell later whether anyone
        changed it since. Steps that record ownership as they change (inside the change's
        own transaction) need nothing here."""
        return None

    def rollback_blockers(self, ctx: StepContext) -> list[str]:
        """What undoing this step would remove that is not this run's, one line each.

        The executor asks right before undoing the step, after every later step was
        undone: a column this run added must hold only values this run left there, a
        table it created only the rows it put there, unchanged; a file it wrote must be
        byte-identical to what it wrote. Anything named here stops the rollback before
        this step, and ``--force`` never overrides it (force rewrites conflicting values;
        it never deletes what others wrote)."""
        return []


@dataclass
class Runbook:
    """A named, ordered list of steps over a set of resources."""

    name: str
    steps: Sequence[Step]
    description: str = ""
    #: free text shown as prerequisites in the generated runbook document
    prerequisites: Sequence[str] = ()
    source: str | None = field(default=None, repr=False)  # the file text, set by the loader

    def __post_init__(self) -> None:
        if not self.name:
            raise RunbookError("a runbook needs a name")
        if not self.steps:
            raise RunbookError(f"runbook {self.name!r} has no steps")
        names = [s.name for s in self.steps]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise RunbookError(f"runbook {self.name!r}: step names must be unique: {dupes}")
        by_name: dict[str, Resource] = {}
        for step in self.steps:
            for r in (*step.writes, *step.reads):
                other = by_name.setdefault(r.name, r)
                if other is not r and other.location() != r.location():
                    raise RunbookError(
                        f"two different resources are both named {r.name!r}: "
                        f"{other.describe()} and {r.describe()}"
                    )

    @property
    def resources(self) -> list[Resource]:
        """Every resource any step touches, in first-use order."""
        seen: dict[str, Resource] = {}
        for step in self.steps:
            for r in (*step.writes, *step.reads):
                seen.setdefault(r.name, r)
        return list(seen.values())

    @property
    def snapshotted(self) -> list[Resource]:
        """Resources a changing step touches (writes or reads): each gets a verified
        snapshot before the first change (policy 1). Sources are included because a
        careful operator backs up what a migration reads as well as what it writes."""
        seen: dict[str, Resource] = {}
        for step in self.steps:
            if step.tier > Tier.READ_ONLY:
                for r in step.writes:
                    seen.setdefault(r.name, r)
                for r in step.reads:
                    if r.backup_when_read:
                        seen.setdefault(r.name, r)
        order = {r.name: i for i, r in enumerate(self.resources)}
        return sorted(seen.values(), key=lambda r: order[r.name])

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise RunbookError(
            f"runbook {self.name!r} has no step {name!r}; steps: {[s.name for s in self.steps]}"
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "resources": [
                {"name": r.name, "kind": r.kind, "at": r.location()} for r in self.resources
            ],
            "steps": [s.describe() for s in self.steps],
        }

    def plan_hash(self) -> str:
        """Approvals are bound to this: any edit to the definition or the file changes it."""
        h = hashlib.sha256(canonical_json(self.describe()).encode())
        if self.source is not None:
            h.update(b"\0source\0" + self.source.encode())
        return h.hexdigest()
