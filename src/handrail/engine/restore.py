"""`handrail backups restore`: put resources back from a run's verified backups, safely.

A restore overwrites whatever changed since the backup, by anyone, so it is where a
stopped rollback sends people and must not become the next way to lose data:

1. :func:`plan_restore` says what it would overwrite, per resource: the tables, files or
   keys that differ from the backup (the fingerprints' ``diff``), which runs' steps of
   this journal wrote the resource since the backup, and which differences no run of this
   journal made (someone else's work). It refuses a backup taken on another host: the
   paths and DSNs in it may name other data here.
2. :func:`restore_backups` first snapshots the current state of every resource it will
   overwrite, verified, into the state directory as a journalled *restore* run (mode
   ``restore``); then restores and verifies each resource against its backup. Restoring
   that restore run's backups (``handrail backups restore RESTORE_ID``) undoes the restore.

External services (HTTP) cannot be restored from a backup; they are left alone and named
in the warnings (their changes are undone by ``handrail rollback``).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BackupError, HandrailError, PolicyError
from ..model import RunStatus, StepStatus
from ..resources.base import Backup, Fingerprint, Resource, verify_backup
from ..runbook import Runbook
from .diskfull import disk_full, is_disk_full
from .fencing import holding
from .journal import Heartbeat, Journal

#: the journal's mode for the run that holds a restore's pre-restore snapshot
RESTORE_MODE = "restore"


@dataclass
class Overwrite:
    """What restoring one resource would overwrite."""

    resource: str
    kind: str
    differs: list[str]  # the parts that differ from the backup ("items: changed")
    writers: list[str]  # runs' steps of this journal that wrote it since the backup
    outside: list[str]  # differences no run of this journal made
    restorable: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "resource": self.resource,
            "kind": self.kind,
            "differs": self.differs,
            "writers": self.writers,
            "outside": self.outside,
            "restorable": self.restorable,
        }


@dataclass
class RestorePlan:
    """What a restore of ``run_id``'s backups would do; writes nothing to compute."""

    run_id: str
    resources: list[Overwrite] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def changes(self) -> list[Overwrite]:
        """The restorable resources that differ from their backup."""
        return [o for o in self.resources if o.restorable and o.differs]

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "resources": [o.to_json() for o in self.resources],
            "warnings": self.warnings,
        }


@dataclass
class RestoreResult:
    """A finished restore: what was restored, and the run that undoes it."""

    run_id: str
    undo_run: str
    restored: list[str]
    unchanged: list[str]
    warnings: list[str]


def backup_objects(journal: Journal, run_id: str) -> dict[str, Backup]:
    """The run's journalled backups as :class:`Backup` objects, by resource name."""
    out = {}
    for b in journal.backups(run_id):
        out[b["resource"]] = Backup(
            resource=b["resource"],
            kind=b["kind"],
            path=Path(b["path"]) if b["path"] else None,
            sha256=b["sha256"],
            size=b["size"],
            fingerprint=Fingerprint.from_json(b["fingerprint"]),
            meta=b["meta"],
        )
    return out


def check_host(journal: Journal, run_id: str) -> list[str]:
    """Refuse backups taken on another host; warn about rows from before hosts were kept."""
    here = socket.gethostname()
    warnings = []
    for b in journal.backups(run_id):
        host = b.get("host")
        if host is None:
            warnings.append(
                f"{b['resource']}: the backup predates host records; assuming it was "
                f"taken on this host ({here})"
            )
        elif host != here:
            raise PolicyError(
                f"the backup of {b['resource']!r} in run {run_id} was taken on host "
                f"{host!r}, and this is {here!r}: its paths and addresses may name other "
                "data here",
                hint=f"run `handrail backups restore {run_id}` on {host}, where the backup "
                "was taken",
            )
    return warnings


def plan_restore(
    journal: Journal,
    runbook: Runbook,
    run_id: str,
    resource: Callable[[Resource], Resource] = lambda r: r,
) -> RestorePlan:
    """What restoring ``run_id``'s backups would overwrite. Reads only."""
    if journal.run(run_id) is None:
        raise PolicyError(f"no run {run_id} in {journal.path}")
    backups = backup_objects(journal, run_id)
    if not backups:
        raise PolicyError(f"run {run_id} has no backups", hint="`handrail backups list`")
    plan = RestorePlan(run_id, warnings=check_host(journal, run_id))
    known = {r.name for r in runbook.snapshotted}
    for name in backups:
        if name not in known:
            plan.warnings.append(f"{name}: backed up but no longer in the runbook; not restored")
    for original in runbook.snapshotted:
        b = backups.get(original.name)
        if b is None:
            continue
        res = resource(original)
        if res.external:
            plan.resources.append(Overwrite(res.name, res.kind, [], [], [], restorable=False))
            plan.warnings.append(
                f"{res.name}: an external service is not restored from a backup; undo its "
                f"changes with `handrail rollback {run_id}`"
            )
            continue
        now = res.fingerprint()
        differs = b.fingerprint.diff(now)
        writers, first_pre = _writers(journal, runbook, run_id, res.name)
        if not differs:
            outside: list[str] = []
        elif first_pre is None:
            outside = list(differs)  # no run of this journal wrote it since the backup
        else:
            # Changed between the backup and the first step that wrote it since.
            outside = b.fingerprint.diff(first_pre)
        plan.resources.append(Overwrite(res.name, res.kind, differs, writers, outside))
    return plan


def _writers(
    journal: Journal, runbook: Runbook, run_id: str, name: str
) -> tuple[list[str], Fingerprint | None]:
    """Steps of this runbook's runs (the backup's and later) that wrote resource ``name``,
    and the fingerprint recorded just before the first of them ran."""
    run = journal.run(run_id)
    assert run is not None
    writes = {s.name for s in runbook.steps if any(r.name == name for r in s.writes)}
    out: list[str] = []
    first_pre: Fingerprint | None = None
    for r in journal.runs(run.runbook_key, mode=None):
        if (r.started_at, r.id) < (run.started_at, run.id):
            continue
        if r.mode == RESTORE_MODE and r.id != run_id:
            restored = [e for e in journal.events(r.id) if e["kind"] == "restored"]
            if any(e["data"].get("resource") == name for e in restored):
                out.append(f"restore {r.id}")
            continue
        for s in journal.steps(r.id):
            if s.name not in writes or s.status in (StepStatus.PENDING, StepStatus.ROLLED_BACK):
                continue
            out.append(f"run {r.id} step {s.name!r} ({s.status.value})")
            pre = (s.pre_fingerprints or {}).get(name)
            if first_pre is None and pre is not None:
                first_pre = Fingerprint.from_json(pre)
    return out, first_pre


def restore_backups(
    journal: Journal,
    runbook: Runbook,
    run_id: str,
    *,
    runbook_key: str,
    take_over: bool = False,
    lease_ttl: float = 60.0,
    resource: Callable[[Resource], Resource] = lambda r: r,
    event: Callable[..., None] | None = None,
) -> RestoreResult:
    """Snapshot the current state (journalled, undoable), then restore ``run_id``'s backups.

    ``event(run_id, kind, message, **data)`` reports progress (the executor's journal-and-
    observer event); by default events only go to the journal."""
    plan = plan_restore(journal, runbook, run_id, resource)

    def emit(rid: str, kind: str, message: str, **data: Any) -> None:
        if event is not None:
            event(rid, kind, message, **data)
        else:
            journal.event(rid, kind, message, data=data)

    backups = backup_objects(journal, run_id)
    targets = [(o, resource(_by_name(runbook, o.resource))) for o in plan.resources]
    targets = [(o, r) for o, r in targets if o.restorable]
    lease = journal.acquire_lease(runbook_key, ttl=lease_ttl, take_over=take_over, run_id=run_id)
    try:
        fence = holding(journal.fence(lease))  # targets refuse a stale holder
        with Heartbeat(journal, lease, lease_ttl), fence:
            undo = _snapshot_before(journal, runbook, run_id, runbook_key, targets, emit)
            journal.lease_run(lease, undo)
            restored, unchanged = _restore_each(journal, run_id, undo, targets, backups, emit)
            journal.set_run_status(undo, RunStatus.COMPLETED)
            journal.set_run_status(run_id, RunStatus.ROLLED_BACK)
    finally:
        journal.release_lease(lease)
    return RestoreResult(run_id, undo, restored, unchanged, plan.warnings)


def _by_name(runbook: Runbook, name: str) -> Resource:
    return next(r for r in runbook.snapshotted if r.name == name)


def _snapshot_before(
    journal: Journal,
    runbook: Runbook,
    run_id: str,
    runbook_key: str,
    targets: list[tuple[Overwrite, Resource]],
    emit: Callable[..., None],
) -> str:
    """Take verified backups of what the restore overwrites, as a journalled run."""
    undo = journal.create_run(
        runbook_key,
        runbook.name,
        runbook.plan_hash(),
        {"steps": [], "restore_of": run_id},
        mode=RESTORE_MODE,
    )
    emit(undo, "start", f"restore of run {run_id}: snapshot of the current state first")
    dest = journal.backups_dir / undo
    for _, res in targets:
        try:
            backup = res.snapshot(dest)
            evidence = verify_backup(res, backup, dest / f".verify-{res.name}")
        except HandrailError:
            raise
        except Exception as exc:
            if is_disk_full(exc, dest):
                what = f"the snapshot of {res.name} (nothing was restored)"
                raise disk_full(dest, what, exc) from exc
            raise BackupError(
                f"snapshot of {res.describe()} before the restore failed: {exc!r}; "
                "nothing was restored"
            ) from exc
        journal.record_backup(undo, backup, evidence)
        emit(undo, "backup-verified", f"{res.name}: current state kept", resource=res.name)
    return undo


def _restore_each(
    journal: Journal,
    run_id: str,
    undo: str,
    targets: list[tuple[Overwrite, Resource]],
    backups: dict[str, Backup],
    emit: Callable[..., None],
) -> tuple[list[str], list[str]]:
    restored: list[str] = []
    unchanged: list[str] = []
    for o, res in targets:
        b = backups[res.name]
        if not o.differs and res.fingerprint().digest == b.fingerprint.digest:
            unchanged.append(res.name)
            continue
        try:
            res.restore(b)
        except HandrailError:
            raise
        except Exception as exc:
            where = getattr(res, "path", None)
            if isinstance(where, Path) and is_disk_full(exc, where):
                raise disk_full(where, f"the restore of {res.name}", exc) from exc
            raise BackupError(
                f"{res.name}: restore failed: {exc!r}",
                hint=f"undo what was restored so far: `handrail backups restore {undo}`",
            ) from exc
        got = res.fingerprint()
        if got.digest != b.fingerprint.digest:
            raise BackupError(
                f"{res.name}: restored content differs from the backup: "
                f"{', '.join(b.fingerprint.diff(got))}",
                hint=f"the state before the restore is kept: `handrail backups restore {undo}`",
            )
        restored.append(res.name)
        emit(undo, "restored", f"{res.name} restored from run {run_id}'s backup", resource=res.name)
        emit(run_id, "restored", f"{res.name} restored from backup", resource=res.name)
    return restored, unchanged
