"""What a step sees while the executor runs it."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..model import Plan, Reject
from ..resources.base import Backup, Resource

if TYPE_CHECKING:
    from .journal import Journal

R = TypeVar("R", bound=Resource)


class StepContext:
    """The run, the step, the resources to act on, and where to keep state.

    Steps act on ``ctx.use(resource)``, never on the resource object directly: in a
    rehearsal the executor binds every resource to a scratch clone, and production is
    never touched.
    """

    def __init__(
        self,
        *,
        run_id: str,
        step: str,
        journal: Journal | None,
        bindings: dict[str, Resource],
        backups: dict[str, Backup],
        work_dir: Path,
        dry_run: bool = False,
        state: dict[str, Any] | None = None,
        plan: Plan | None = None,
        clock: str = "",
    ) -> None:
        self.run_id = run_id
        self.step = step
        self.journal = journal
        self.bindings = bindings
        self.backups = backups
        self.work_dir = work_dir
        self.dry_run = dry_run
        self.state: dict[str, Any] = dict(state or {})
        self.plan = plan
        #: the run's logical time (ISO 8601): stamp values with this, not the wall clock, so
        #: a resumed run and a rehearsal's second forward run write the same values
        self.clock = clock
        self.stage: int | None = None
        self.rejects: list[Reject] = []
        self._connections: dict[str, sqlite3.Connection] = {}

    @contextmanager
    def connection(self, db: Resource) -> Iterator[sqlite3.Connection]:
        """A SQLite connection kept open across batches of this step execution.

        Opening and closing one per batch costs a WAL checkpoint each time the last
        connection closes; the executor closes these when the step's work is done.
        """
        from ..resources.sqlite import SQLite, connect

        bound = self.use(db)
        assert isinstance(bound, SQLite)
        key = str(bound.path)
        conn = self._connections.get(key)
        if conn is None:
            bound.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connections[key] = connect(bound.path)
        yield conn

    def close(self) -> None:
        """Close the connections :meth:`connection` opened."""
        for conn in self._connections.values():
            conn.close()
        self._connections.clear()

    def use(self, resource: R) -> R:
        """The resource to act on: the real one, or its clone in a rehearsal."""
        bound = self.bindings.get(resource.name, resource)
        if not isinstance(bound, type(resource)):
            raise TypeError(f"binding for {resource.name!r} is a {type(bound).__name__}")
        return bound

    def backup_of(self, resource: Resource) -> Backup | None:
        """This run's verified backup of ``resource`` (None in a plan)."""
        return self.backups.get(resource.name)

    def save_state(self, **values: Any) -> None:
        """Persist values in the journal before acting on them (survives a crash)."""
        self.state.update(values)
        if self.journal is not None and not self.dry_run:
            self.journal.update_step(self.run_id, self.step, state=self.state)

    def reject(self, source: str, key: str, reason: str) -> None:
        """Report a record the step could not take; it is journalled, never dropped."""
        self.rejects.append(Reject(source, key, reason))

    def flush_rejects(self) -> list[Reject]:
        out, self.rejects = self.rejects, []
        if self.journal is not None and not self.dry_run and out:
            self.journal.add_rejects(self.run_id, self.step, out)
        return out

    def step_dir(self) -> Path:
        path = self.work_dir / self.step
        path.mkdir(parents=True, exist_ok=True)
        return path
