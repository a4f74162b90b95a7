"""The preflight: prove every step can run before the first change.

Bad input must be found before anything changes, and some bad input can only be found by
running: step 3's SQL naming a column that step 1 adds, misspelt, is invisible to any
parser until step 1 has run. So before a new run changes anything, ``run``:

1. asks every step to validate its parameters against the real state
   (:meth:`Step.validate`: tables, columns and keys resolved; SQL compiled, not executed);
   a step that reads or writes what an earlier step changes is validated in 2 instead;
2. runs the whole runbook forward on scratch clones of every resource, with the
   rehearsal's machinery (an :class:`~handrail.engine.executor.Executor` bound to the clones,
   gates answered automatically, a throwaway journal). A resource larger than the limit
   (:data:`DEFAULT_LIMIT`, ``--preflight-limit``) is cloned as its schema only where it
   can be (SQLite), so the SQL still compiles against the real shape; where no clone can
   be made (a service without a sandbox, a large file), step 2 is skipped and says why.

A step that raises in either phase is bad input: :class:`PreflightFailed` (exit 2), with
the step and the reason, and nothing changed. A gate that fails on the clones is a note
(the gates exist to judge the data; the real run stops there too). What the preflight cost
is reported.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import HandrailError, PreflightFailed
from ..model import RunStatus, Tier
from ..resources.base import Resource
from .context import StepContext

if TYPE_CHECKING:
    from ..runbook import Runbook

#: resources up to this size (bytes, all together) are cloned whole for the preflight
DEFAULT_LIMIT = 256 * 1024 * 1024


@dataclass
class PreflightReport:
    """What the preflight did and what it cost."""

    validated: list[str] = field(default_factory=list)  # steps validated on the real state
    rehearsed: bool = False  # the whole runbook ran forward on clones
    schema_only: list[str] = field(default_factory=list)  # resources cloned as schema
    skipped: str = ""  # why the run on clones did not happen
    bytes_cloned: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # gates that failed on the clones

    def summary(self) -> str:
        parts = [f"{len(self.validated)} step(s) validated on the real state"]
        if self.rehearsed:
            what = f"forward run on clones ({_mb(self.bytes_cloned)}"
            if self.schema_only:
                what += f"; schema only: {', '.join(self.schema_only)}"
            parts.append(what + ")")
        elif self.skipped:
            parts.append(f"no forward run on clones: {self.skipped}")
        return f"preflight: {'; '.join(parts)} in {self.seconds:.2f} s"

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def validate_steps(
    runbook: Runbook, bindings: dict[str, Resource], work_dir: Path
) -> tuple[list[str], list[str]]:
    """Each step's :meth:`Step.validate` on the real state, where no earlier step changes
    what it touches. Returns (validated, deferred) step names; raises on bad input."""
    written: set[str] = set()
    validated: list[str] = []
    deferred: list[str] = []
    for step in runbook.steps:
        touched = {r.name for r in (*step.reads, *step.writes)}
        if touched & written:
            deferred.append(step.name)
        else:
            ctx = StepContext(
                run_id="preflight",
                step=step.name,
                journal=None,
                bindings=bindings,
                backups={},
                work_dir=work_dir,
                dry_run=True,
            )
            try:
                step.validate(ctx)
            except HandrailError as exc:
                raise PreflightFailed(
                    f"step {step.name!r}: {exc.message}",
                    hint=exc.hint or "fix the runbook or the data; nothing was changed",
                ) from exc
            except Exception as exc:
                raise PreflightFailed(
                    f"step {step.name!r} cannot run: {exc}",
                    hint="fix the runbook or the data; nothing was changed",
                ) from exc
            finally:
                ctx.close()
            validated.append(step.name)
        if step.tier > Tier.READ_ONLY:
            written |= {r.name for r in step.writes}
    return validated, deferred


#: runs the runbook forward on ``clones`` with a throwaway journal in a directory
Forward = Callable[[dict[str, Resource], Path, "str | None"], Any]


def preflight(
    runbook: Runbook,
    *,
    forward: Forward,
    bindings: dict[str, Resource],
    scratch_parent: Path,
    limit: int = DEFAULT_LIMIT,
    clock: str | None = None,
) -> PreflightReport:
    """Validate every step, then run the runbook forward on clones; see the module doc."""
    started = time.monotonic()
    report = PreflightReport()
    scratch_parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="preflight-", dir=scratch_parent))
    try:
        report.validated, _ = validate_steps(runbook, bindings, scratch / "work")
        clones = _clones(runbook, bindings, scratch / "clones", limit, report)
        if clones is not None:
            try:
                _forward(forward, clones, scratch / "journal", clock, report)
            finally:
                for c in clones.values():
                    try:
                        c.discard()
                    except HandrailError:
                        pass
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report.seconds = time.monotonic() - started
    return report


def _clones(
    runbook: Runbook,
    bindings: dict[str, Resource],
    scratch: Path,
    limit: int,
    report: PreflightReport,
) -> dict[str, Resource] | None:
    """A clone of every resource (whole while the total fits ``limit``, else schema only
    where possible), or None with ``report.skipped`` saying why not."""
    resources = [bindings.get(r.name, r) for r in runbook.resources]
    sizes: dict[str, int] = {}
    for r in resources:
        if r.external:
            report.skipped = f"{r.name} is another service, which a preflight never writes to"
            return None
        try:
            r.check_clone()
        except HandrailError as exc:
            report.skipped = f"{r.name} cannot be cloned ({exc.message})"
            return None
        size = r.size_bytes()
        if size is None:
            report.skipped = f"the size of {r.name} is unknown"
            return None
        sizes[r.name] = size
    budget = limit - sum(sizes.values())
    schema_only: set[str] = set()
    for r in sorted(resources, key=lambda r: -sizes[r.name]):
        if budget >= 0:
            break
        if not r.can_clone_schema:
            report.skipped = (
                f"{r.name} ({_mb(sizes[r.name])}) is over the preflight limit of {_mb(limit)} "
                "and cannot be cloned as its schema alone"
            )
            return None
        schema_only.add(r.name)
        budget += sizes[r.name]
    clones: dict[str, Resource] = {}
    try:
        for r in resources:
            target = scratch / r.name
            if r.name in schema_only:
                clones[r.name] = r.clone_schema(target)
            else:
                clones[r.name] = r.clone(target)
                report.bytes_cloned += sizes[r.name]
    except BaseException:
        for c in clones.values():
            try:
                c.discard()
            except HandrailError:
                pass
        raise
    report.schema_only = sorted(schema_only)
    return clones


def _forward(
    forward: Forward,
    clones: dict[str, Resource],
    state: Path,
    clock: str | None,
    report: PreflightReport,
) -> None:
    with _test_crash_hooks_paused():
        result = forward(clones, state, clock)
    report.rehearsed = True
    if result.status is RunStatus.COMPLETED:
        return
    if result.error_type in ("CheckFailed", ""):
        report.notes.append(f"on the clones: {result.message}")
        return
    raise PreflightFailed(
        f"preflight on clones of the data: {result.message}",
        hint="fix the runbook or the data; nothing was changed (--no-preflight skips this proof)",
    )


@contextmanager
def _test_crash_hooks_paused() -> Iterator[None]:
    """The crash tests' kill switches count journal and database commits; the preflight's
    commits on clones are not the run's, so they must neither count nor die."""
    from ..resources.sqlite import CRASH_IN_COMMIT_ENV
    from .journal import CRASH_ENV

    saved = {k: os.environ.pop(k) for k in (CRASH_ENV, CRASH_IN_COMMIT_ENV) if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)
