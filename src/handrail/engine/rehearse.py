"""Rehearsal: prove a runbook's rollback on scratch clones of everything it touches.

::

    clone every resource (production is only read)
    -> forward on the clones: every gate evaluated; gates that need a person are approved
       automatically and listed
    -> rollback, newest step first
    -> every clone's fingerprint must equal its fingerprint before the forward run, exactly
    -> forward again: every clone's fingerprint must equal the first forward run's result

The runs are ordinary runs of the :class:`~handrail.engine.executor.Executor` with every resource
bound to its clone and ``mode="rehearsal"``, journalled in the runbook's journal (so each
step's measured apply and rollback times and item counts are kept for the generated
documents) but invisible to ``status``, ``rollback`` and ``approve``, which look at
``mode="run"`` runs only. They take the runbook's lease like any run: a rehearsal does not
clone production while a run is changing it.

Where a rollback does not restore exactly, the result names the resource, the part (table,
file, top-level key) and, for SQLite tables, the primary keys of the rows that differ,
found by comparing the table after the rollback with the rehearsal's own verified backup of
the clone taken before the forward run.
"""

from __future__ import annotations

import secrets
import shutil
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import HandrailError, PolicyError
from ..model import RunStatus, Tier
from ..resources.base import Fingerprint, Resource
from ..resources.sqlite import SQLite, quote_ident
from ..runbook import Runbook
from .executor import Executor, Observer, RunOptions, RunResult
from .journal import Journal
from .restore import backup_objects

#: how many differing keys of one table a difference lists
KEY_LIMIT = 10


@dataclass(frozen=True)
class Difference:
    """Where a resource is not what it should be.

    ``part`` is the fingerprint part ("rows:items", "schema:table:items", "key:settings",
    "path:a/b.txt"), empty when the whole resource is absent on one side.
    """

    resource: str
    part: str
    what: str  # "changed", "added", "removed", or a sentence
    detail: str = ""
    keys: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        """The part as people say it: table, file or key."""
        kind, _, name = self.part.partition(":")
        if kind == "rows":
            return f"table {name}"
        if kind == "schema":
            obj, _, objname = name.partition(":")
            return f"{obj or 'schema'} {objname or name}"
        if kind == "key":
            return f"key {name}"
        if kind == "path":
            return f"file {name}"
        return self.part or "the resource"

    def __str__(self) -> str:
        text = f"{self.resource}: {self.where} {self.what}"
        return f"{text} ({self.detail})" if self.detail else text

    def to_json(self) -> dict[str, Any]:
        return {
            "resource": self.resource,
            "part": self.part,
            "where": self.where,
            "what": self.what,
            "detail": self.detail,
            "keys": list(self.keys),
        }


@dataclass(frozen=True)
class StepTiming:
    """What one step measured in the rehearsal."""

    name: str
    tier: str
    status: str
    items: int | None  # the step's work list (None: a single-shot step)
    planned: int | None  # items its dry run said it would change
    apply_seconds: float | None
    rollback_seconds: float | None
    reapply_seconds: float | None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ResourceCheck:
    """One resource's fingerprints through the rehearsal."""

    name: str
    kind: str
    before: str
    after_forward: str | None
    after_rollback: str | None
    after_reapply: str | None

    @property
    def restored(self) -> bool | None:
        return None if self.after_rollback is None else self.after_rollback == self.before

    @property
    def reproducible(self) -> bool | None:
        if self.after_reapply is None or self.after_forward is None:
            return None
        return self.after_reapply == self.after_forward

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__) | {"restored": self.restored, "reproducible": self.reproducible}


@dataclass
class RehearsalResult:
    """How a rehearsal went; ``exit_code`` is 0 only when every check held."""

    runbook: str
    scratch: str = ""  # where the clones were made (kept with ``keep``)
    run_id: str | None = None  # the forward + rollback run
    reapply_run_id: str | None = None
    forward: str = ""  # the forward run's status
    forward_message: str = ""
    rollback_error: str = ""  # the rollback itself raised
    reapply: str = ""  # the second forward run's status ("" when not run)
    rollback_method: str = "steps"  # "steps", or "backups" when a step has no inverse
    rollback_seconds: float | None = None
    steps: list[StepTiming] = field(default_factory=list)
    resources: list[ResourceCheck] = field(default_factory=list)
    approved: list[str] = field(default_factory=list)  # gate keys approved automatically
    differences: list[Difference] = field(default_factory=list)  # rollback not exact
    reapply_differences: list[Difference] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.forward == RunStatus.COMPLETED.value
            and not self.rollback_error
            and not self.differences
            and self.reapply == RunStatus.COMPLETED.value
            and not self.reapply_differences
        )

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    @property
    def first_difference(self) -> Difference | None:
        found = self.differences or self.reapply_differences
        return found[0] if found else None

    @property
    def message(self) -> str:
        if self.ok:
            return (
                "the rollback restored every resource exactly, and applying again gave the "
                "same result as the first forward run"
            )
        if self.forward != RunStatus.COMPLETED.value:
            return f"the forward run {self.forward}: {self.forward_message}"
        if self.rollback_error:
            return f"the rollback failed: {self.rollback_error}"
        if self.differences:
            return f"the rollback did not restore {self.differences[0]}"
        if self.reapply_differences:
            return (
                "applying again after the rollback gave a different result: "
                f"{self.reapply_differences[0]} (something the rollback left behind, or a "
                "step whose result depends on when it ran)"
            )
        return f"the second forward run {self.reapply or 'did not run'}"

    def to_json(self) -> dict[str, Any]:
        return {
            "runbook": self.runbook,
            "scratch": self.scratch,
            "ok": self.ok,
            "message": self.message,
            "run_id": self.run_id,
            "reapply_run_id": self.reapply_run_id,
            "forward": self.forward,
            "rollback_error": self.rollback_error,
            "reapply": self.reapply,
            "rollback_method": self.rollback_method,
            "rollback_seconds": self.rollback_seconds,
            "steps": [s.to_json() for s in self.steps],
            "resources": [r.to_json() for r in self.resources],
            "approved": self.approved,
            "differences": [d.to_json() for d in self.differences],
            "reapply_differences": [d.to_json() for d in self.reapply_differences],
            "notes": self.notes,
        }


@dataclass
class RehearsalOptions:
    """Where the clones go and what to keep."""

    #: a directory in which the rehearsal makes (and then removes) its own subdirectory;
    #: default STATE_DIR/rehearsals/. Nothing else in it is ever touched.
    scratch: Path | None = None
    keep: bool = False  # keep the clones, and the rehearsal runs' backups and work files
    observer: Observer = field(default_factory=Observer)
    lease_ttl: float = 60.0


def check_clonable(runbook: Runbook) -> None:
    """Raise :class:`PolicyError` if any resource cannot be cloned; nothing is touched."""
    for r in runbook.resources:
        try:
            r.check_clone()
        except HandrailError as exc:
            raise PolicyError(
                f"cannot rehearse {runbook.name!r}: {r.describe()} cannot be cloned: {exc.message}",
                hint=exc.hint or "a rehearsal never runs against production",
            ) from exc


def rehearse(
    runbook: Runbook,
    journal: Journal,
    *,
    runbook_key: str,
    options: RehearsalOptions | None = None,
) -> RehearsalResult:
    """Forward, rollback and forward again on clones; see the module docstring.

    Raises :class:`PolicyError` (nothing touched) when a resource cannot be cloned, and
    the executor's errors for what it refuses (an external step without stages, a
    resource that is corrupt). A rehearsal that ran returns its result, passed or not.
    """
    opts = options or RehearsalOptions()
    obs = opts.observer
    check_clonable(runbook)
    for r in runbook.resources:
        if not r.external:  # an external service is only ever reached at its sandbox
            r.validate()  # a corrupt production file is named as such, not as its clone
    base = opts.scratch or journal.state_dir / "rehearsals"
    scratch = base / f"rehearsal-{secrets.token_hex(4)}"  # ours alone: removed after
    result = RehearsalResult(runbook.name, scratch=str(scratch))
    clones: dict[str, Resource] = {}
    extra: list[Resource] = []  # pristine copies made to locate differences
    try:
        for r in runbook.resources:
            obs.event("rehearsal", f"cloning {r.describe()}")
            try:
                clones[r.name] = r.clone(scratch / "clones" / r.name)
            except HandrailError as exc:
                raise PolicyError(
                    f"cannot rehearse {runbook.name!r}: cloning {r.name} failed: {exc.message}",
                    hint=exc.hint,
                ) from exc
            except OSError as exc:
                raise PolicyError(
                    f"cannot rehearse {runbook.name!r}: cloning {r.name} into {scratch} "
                    f"failed: {exc}",
                    hint="free some space, or give another --scratch directory",
                ) from exc
            except Exception as exc:  # a backend's own error (sqlite3, psycopg, httpx)
                raise PolicyError(
                    f"cannot rehearse {runbook.name!r}: cloning {r.describe()} failed: {exc!r}"
                ) from exc
        _run_phases(runbook, journal, runbook_key, opts, clones, scratch, result, extra)
    finally:
        for copy in [*clones.values(), *extra]:
            try:
                copy.discard()
            except HandrailError as exc:
                result.notes.append(f"could not remove the clone of {copy.name}: {exc.message}")
        if not opts.keep:
            shutil.rmtree(scratch, ignore_errors=True)
            if opts.scratch is None:
                try:
                    base.rmdir()  # only if empty: another rehearsal may be using it
                except OSError:
                    pass
            for run_id in (result.run_id, result.reapply_run_id):
                if run_id is not None:
                    shutil.rmtree(journal.backups_dir / run_id, ignore_errors=True)
                    shutil.rmtree(journal.run_dir(run_id), ignore_errors=True)
    return result


def _fingerprints(clones: dict[str, Resource]) -> dict[str, Fingerprint]:
    return {name: c.fingerprint() for name, c in clones.items()}


def _run_phases(
    runbook: Runbook,
    journal: Journal,
    key: str,
    opts: RehearsalOptions,
    clones: dict[str, Resource],
    scratch: Path,
    result: RehearsalResult,
    extra: list[Resource],
) -> None:
    obs = opts.observer

    clock: list[str] = []  # the first forward run's clock, pinned for the second

    def executor() -> Executor:
        return Executor(
            runbook,
            journal,
            runbook_key=key,
            options=RunOptions(
                auto_approve=True,  # a rehearsal answers every gate that needs a person
                allow_destructive=True,  # on clones; the rollback phase still proves it
                new_run=True,
                lease_ttl=opts.lease_ttl,
                observer=obs,
                # Values a step stamps with the run's clock must not make the two forward
                # runs differ: the second runs at the first one's logical time.
                clock=clock[0] if clock else None,
            ),
            bindings=clones,
            mode="rehearsal",
        )

    before = _fingerprints(clones)

    # -- forward ----------------------------------------------------------------------
    obs.event("rehearsal", "forward run on the clones, every gate evaluated")
    ex = executor()
    forward = ex.run()
    result.run_id = forward.run_id
    first = journal.run(forward.run_id)
    if first is not None:
        clock.append(first.clock)
    result.forward = forward.status.value
    result.forward_message = forward.message
    result.approved = [
        a["gate"]
        for a in journal.approvals(forward.run_id)
        if a["automatic"] and a["decision"] == "approve"
    ]
    after_forward = _fingerprints(clones)

    # -- rollback ---------------------------------------------------------------------
    irreversible = [s.name for s in runbook.steps if s.tier > Tier.READ_ONLY and not s.reversible()]
    started = time.monotonic()
    undo: RunResult | None = None
    try:
        if irreversible:
            result.rollback_method = "backups"
            result.notes.append(
                f"{', '.join(irreversible)} has no inverse: the rollback rehearsed is the "
                "restore of the run's backups (`handrail backups restore RUN`)"
            )
            obs.event("rehearsal", "restoring the clones from the run's backups")
            ex.restore_backups(forward.run_id)
        else:
            obs.event("rehearsal", "rolling back, newest step first")
            undo = ex.rollback(forward.run_id)
            result.notes += [f"rollback: {c}" for c in undo.conflicts]
    except HandrailError as exc:
        result.rollback_error = exc.message
    result.rollback_seconds = time.monotonic() - started
    after_rollback = _fingerprints(clones)

    backups = backup_objects(journal, forward.run_id)
    for name, clone in clones.items():
        if after_rollback[name].digest == before[name].digest:
            continue
        pristine = None
        backup = backups.get(name)
        if backup is not None and not backup.absent:
            pristine = clone.restore_into(backup, scratch / "pristine" / name)
            extra.append(pristine)
        result.differences += locate(name, before[name], after_rollback[name], pristine, clone)
    if undo is not None and undo.conflicts and not result.differences:
        result.differences.append(
            Difference("", "", "rollback left conflicting items", "; ".join(undo.conflicts[:3]))
        )

    # -- forward again ----------------------------------------------------------------
    after_reapply: dict[str, Fingerprint] = {}
    again: RunResult | None = None
    if forward.status is RunStatus.COMPLETED and not (result.differences or result.rollback_error):
        obs.event("rehearsal", "forward again: the result must equal the first forward run's")
        again = executor().run()
        result.reapply_run_id = again.run_id
        result.reapply = again.status.value
        after_reapply = _fingerprints(clones)
        if again.status is not RunStatus.COMPLETED:
            result.notes.append(f"the second forward run {again.status.value}: {again.message}")
        for name in clones:
            if after_reapply[name].digest != after_forward[name].digest:
                result.reapply_differences += locate(
                    name, after_forward[name], after_reapply[name], None, None
                )
    elif forward.status is not RunStatus.COMPLETED:
        result.notes.append("not applied again: the first forward run did not complete")
    else:
        result.notes.append("not applied again: the rollback did not restore exactly")

    # -- what it measured ---------------------------------------------------------------
    again_rows = {s.name: s for s in journal.steps(again.run_id)} if again else {}
    for row in journal.steps(forward.run_id):
        second = again_rows.get(row.name)
        result.steps.append(
            StepTiming(
                name=row.name,
                tier=row.tier,
                status=row.status.value,
                items=row.items_total,
                planned=(row.plan or {}).get("items"),
                apply_seconds=row.apply_seconds,
                rollback_seconds=row.rollback_seconds,
                reapply_seconds=second.apply_seconds if second else None,
            )
        )
    for name, clone in clones.items():
        result.resources.append(
            ResourceCheck(
                name=name,
                kind=clone.kind,
                before=before[name].digest,
                after_forward=after_forward[name].digest,
                after_rollback=after_rollback[name].digest,
                after_reapply=after_reapply[name].digest if name in after_reapply else None,
            )
        )
    summary = result.to_json()
    journal.event(
        forward.run_id,
        "rehearsal",
        f"rehearsal {'passed' if result.ok else 'failed'}: {result.message}",
        data={
            k: summary[k]
            for k in (
                "ok",
                "reapply_run_id",
                "rollback_method",
                "rollback_seconds",
                "approved",
                "differences",
                "reapply_differences",
            )
        },
    )
    obs.event("rehearsal-done", result.message, {"ok": result.ok})


# -- locating a difference -------------------------------------------------------------------
def _part_order(part: str) -> tuple[int, str]:
    # Schema first: a column left behind explains the rows that differ with it.
    return (0 if part.startswith("schema:") else 1, part)


def locate(
    resource: str,
    expected: Fingerprint,
    got: Fingerprint,
    pristine: Resource | None,
    current: Resource | None,
) -> list[Difference]:
    """The differences between two fingerprints of one resource, part by part.

    With ``pristine`` (the expected state) and ``current`` both SQLite databases, each
    differing table also names the keys of its rows that differ.
    """
    out: list[Difference] = []
    parsed = []
    for line in expected.diff(got):
        part, sep, what = line.rpartition(": ")
        parsed.append((part, what) if sep else ("", line))
    for part, what in sorted(parsed, key=lambda p: _part_order(p[0])):
        detail, keys = "", tuple[str, ...]()
        if isinstance(pristine, SQLite) and isinstance(current, SQLite):
            kind, _, name = part.partition(":")
            if kind == "rows":
                table = table_diff(pristine.path, current.path, name)
                detail, keys = table.summary(), tuple(table.keys)
            elif kind == "schema" and name.startswith("table:"):
                detail = column_diff(pristine.path, current.path, name.split(":", 1)[1])
        out.append(Difference(resource, part, what, detail, keys))
    return out


_KINDS = (
    ("extra", "left behind"),  # there, but not expected
    ("missing", "missing"),  # expected, but not there
    ("changed", "with other values"),  # same key, other values
)


@dataclass
class TableDiff:
    """Rows of one table that differ between an expected and an actual SQLite file:
    how many of each kind, and the keys of the first few of each."""

    table: str
    key: list[str]
    counts: dict[str, int] = field(default_factory=lambda: {k: 0 for k, _ in _KINDS})
    samples: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k, _ in _KINDS})
    note: str = ""

    @property
    def keys(self) -> list[str]:
        """The keys shown, left-behind rows first."""
        return [k for kind, _ in _KINDS for k in self.samples[kind]]

    def summary(self) -> str:
        if self.note:
            return self.note
        parts = []
        for kind, words in _KINDS:
            n = self.counts[kind]
            if n:
                shown = ", ".join(self.samples[kind]) + (
                    ", …" if n > len(self.samples[kind]) else ""
                )
                parts.append(f"{n} row(s) {words}: {'/'.join(self.key)} {shown}")
        return "; ".join(parts) or "every row equal on the columns both sides have"


def _ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)


def _table_columns(conn: sqlite3.Connection, table: str) -> list[tuple[str, int]]:
    """(column, position in the primary key or 0) of a table; empty if there is none."""
    return [(r[1], r[5]) for r in conn.execute(f"PRAGMA table_info({quote_ident(table)})")]


def column_diff(expected: Path, actual: Path, table: str) -> str:
    """Columns added to or missing from ``table`` (empty when the column lists agree)."""
    with closing(_ro(expected)) as a, closing(_ro(actual)) as b:
        ca = [c for c, _ in _table_columns(a, table)]
        cb = [c for c, _ in _table_columns(b, table)]
    if not ca or not cb:
        return "table added" if not ca else "table missing"
    added = [c for c in cb if c not in ca]
    missing = [c for c in ca if c not in cb]
    out = []
    if added:
        out.append(f"column(s) {', '.join(added)} still there")
    if missing:
        out.append(f"column(s) {', '.join(missing)} missing")
    return "; ".join(out) or "definition changed"


def _sort_key(row: Sequence[Any]) -> tuple[tuple[int, Any], ...]:
    """SQLite's order of values (NULL < numbers < text < blob) under BINARY collation."""
    out: list[tuple[int, Any]] = []
    for v in row:
        if v is None:
            out.append((0, 0))
        elif isinstance(v, int | float):
            out.append((1, v))
        elif isinstance(v, str):
            out.append((2, v))
        else:
            out.append((3, bytes(v)))
    return tuple(out)


def _exact(row: Sequence[Any]) -> tuple[tuple[str, Any], ...]:
    # 1, 1.0 and '1' are different values in a fingerprint; so they are here.
    return tuple((type(v).__name__, v) for v in row)


def table_diff(expected: Path, actual: Path, table: str, *, limit: int = KEY_LIMIT) -> TableDiff:
    """Which rows of ``table`` differ between two SQLite files, by primary key.

    Both sides are read in key order (BINARY collation) and merged, so memory stays flat
    however large the table. Only the columns both sides have are compared (a column left
    behind is reported by :func:`column_diff`). A table without a primary key is keyed by
    all its columns: a changed row shows as one missing and one left behind.
    """
    with closing(_ro(expected)) as a, closing(_ro(actual)) as b:
        ca, cb = _table_columns(a, table), _table_columns(b, table)
        if not ca or not cb:
            return TableDiff(table, [], note="table added" if not ca else "table missing")
        names_b = {c for c, _ in cb}
        common = [c for c, _ in ca if c in names_b]
        key = [c for c, pk in sorted(ca, key=lambda x: x[1]) if pk and c in names_b] or common
        rest = [c for c in common if c not in key]
        select = ", ".join(quote_ident(c) for c in [*key, *rest])
        order = ", ".join(f"{quote_ident(c)} COLLATE BINARY" for c in key)
        sql = f"SELECT {select} FROM {quote_ident(table)} ORDER BY {order}"
        diff = TableDiff(table, key)
        n = len(key)

        def label(row: Sequence[Any]) -> str:
            vals = [repr(v) if isinstance(v, str) else str(v) for v in row[:n]]
            if n == 1:
                return vals[0]
            return "(" + ", ".join(vals) + ")"

        def note(kind: str, row: Sequence[Any]) -> None:
            diff.counts[kind] += 1
            if len(diff.samples[kind]) < limit:
                diff.samples[kind].append(label(row))

        for x, y in _merge(a.execute(sql), b.execute(sql), n):
            if x is None and y is not None:
                note("extra", y)
            elif y is None and x is not None:
                note("missing", x)
            elif x is not None and y is not None and _exact(x) != _exact(y):
                note("changed", x)
    return diff


def _rows(cur: sqlite3.Cursor) -> Iterator[tuple[Any, ...]]:
    while batch := cur.fetchmany(4096):
        yield from batch


def _merge(
    a: sqlite3.Cursor, b: sqlite3.Cursor, n: int
) -> Iterator[tuple[tuple[Any, ...] | None, tuple[Any, ...] | None]]:
    """Pairs of rows with equal keys from two key-ordered cursors (None where one lacks it)."""
    ia, ib = _rows(a), _rows(b)
    x, y = next(ia, None), next(ib, None)
    while x is not None or y is not None:
        if y is None or (x is not None and _sort_key(x[:n]) < _sort_key(y[:n])):
            yield x, None
            x = next(ia, None)
        elif x is None or _sort_key(y[:n]) < _sort_key(x[:n]):
            yield None, y
            y = next(ib, None)
        else:
            yield x, y
            x, y = next(ia, None), next(ib, None)
