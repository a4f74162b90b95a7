"""A read-only step that exists for its gates: checks spanning several steps, or a STOP."""

from __future__ import annotations

from typing import Any

from ..engine.context import StepContext
from ..model import Plan
from ..runbook import Step


class Checkpoint(Step):
    """Changes nothing; evaluates its gates (use ``at="done"``) when the run reaches it."""

    def __init__(self, name: str, **kw: Any) -> None:
        kw.setdefault("writes", ())
        super().__init__(name, **kw)

    def plan(self, ctx: StepContext) -> Plan:
        n = sum(len(g.checks) for g in self.gates)
        return Plan(summary=f"check only: {n} check(s)", items=0)

    def apply_batch(self, ctx: StepContext, batch: int, items: list[Any]) -> int:
        return 0

    def rollback(self, ctx: StepContext) -> None:
        """Nothing to undo."""

    def explain_rollback(self) -> str:
        return "nothing to undo: it changes nothing"
