"""Plain data shared by the runbook, the executor, the journal and the reports."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Tier(enum.IntEnum):
    """Risk tier of a step; derived from what it touches, raised (never lowered) by authors."""

    READ_ONLY = 0  # reads only
    REVERSIBLE = 1  # local state with a known, exact undo
    EXTERNAL = 2  # writes other people see (another service, an API)
    DESTRUCTIVE = 3  # deletes, or changes with no inverse

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")

    @classmethod
    def parse(cls, text: str) -> Tier:
        try:
            return cls[text.upper().replace("-", "_")]
        except KeyError:
            raise ValueError(
                f"unknown tier {text!r}; use one of {[t.label for t in cls]}"
            ) from None


class Outcome(enum.StrEnum):
    """What a check saw."""

    PASS = "pass"
    FAIL = "fail"  # stops the run (and may roll the step back)
    INCONCLUSIVE = "inconclusive"  # pauses the run for a human


class RunStatus(enum.StrEnum):
    """States of a run in the journal."""

    SNAPSHOTTING = "snapshotting"  # taking and verifying backups; nothing changed yet
    RUNNING = "running"  # applying steps (or crashed while doing so: see the lease)
    PAUSED = "paused"  # waiting at a gate for approve/reject
    INTERRUPTED = "interrupted"  # stopped by Ctrl-C between two safe points
    FAILED = "failed"  # a check or a step failed; `run` resumes, `rollback` undoes
    REJECTED = "rejected"  # a human rejected a gate; `rollback` undoes
    COMPLETED = "completed"  # every step done and verified
    ROLLING_BACK = "rolling_back"  # undoing (or crashed while undoing: `rollback` resumes)
    ROLLED_BACK = "rolled_back"  # every applied step undone and verified
    ROLLED_BACK_TO = "rolled_back_to"  # undone down to a step (`rollback --to`); `run` redoes


RESUMABLE = {
    RunStatus.SNAPSHOTTING,
    RunStatus.RUNNING,
    RunStatus.PAUSED,
    RunStatus.INTERRUPTED,
    RunStatus.FAILED,
    RunStatus.ROLLED_BACK_TO,
}


class StepStatus(enum.StrEnum):
    """States of a step within a run."""

    PENDING = "pending"
    APPLYING = "applying"  # some batches may have committed
    APPLIED = "applied"  # every batch committed; verify and gates next
    DONE = "done"  # verified and past its gates
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


@dataclass(frozen=True)
class BlastRadius:
    """What a step can break, for the people running it."""

    changes: str
    worst_case: str = "see rollback"
    detection: str = "the step's checks fail"


@dataclass
class CheckResult:
    """A check's verdict with the numbers it saw."""

    name: str
    outcome: Outcome
    evidence: dict[str, Any] = field(default_factory=dict)
    message: str = ""

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASS

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "outcome": self.outcome.value,
            "message": self.message,
            "evidence": self.evidence,
        }


@dataclass
class Plan:
    """What a step would do, computed without writing anything."""

    summary: str
    items: int | None = None  # how many items it would change (None: not item-based)
    counts: dict[str, int] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "summary": self.summary,
            "items": self.items,
            "counts": self.counts,
            "samples": self.samples,
            "details": self.details,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        return cls(
            summary=data["summary"],
            items=data.get("items"),
            counts=dict(data.get("counts", {})),
            samples=list(data.get("samples", [])),
            details=dict(data.get("details", {})),
        )


@dataclass(frozen=True)
class Reject:
    """A record the step could not take, with where it came from and why."""

    source: str  # file (and line) or table
    key: str
    reason: str
