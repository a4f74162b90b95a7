"""QuarantineDelete: a delete that moves what it deletes into the run's quarantine, so a
rollback can move it back; and :func:`purge_quarantine`, which empties old quarantines.

Layout, under the state directory::

    quarantine/RUN/STEP/items/REL        what the step removed from TARGET/REL (a rename)
    quarantine/RUN/STEP/manifests/batch-000007.json
                                         per batch: each item's entries (path, type, mode,
                                         size, sha256), written and fsynced before its renames
    quarantine/RUN/STEP/displaced/REL    what a forced rollback found in an item's place

The quarantine must be on the target's filesystem, so a delete is one ``rename(2)``:
atomic, instant, no second copy. Otherwise the step refuses before moving anything,
unless ``cross_device="copy"`` allows copy, fsync, then delete.

Crash safety. The work list is frozen in the journal before the first batch, and an
item's place in quarantine follows from its path, so the intent of every move is on disk
before it happens. On resume an item already in quarantine is not moved again, an item
still in place is moved, and the batch's manifest is rewritten first for those (their
content is read again, since it may have changed while the run was stopped). Each move is
journalled as an event (``quarantined``), which is also the audit list of what was
deleted. Rollback is idempotent the same way: what is back in place is not moved again.

``on_deleted=RowUpdate(db, table=..., key=..., values={...})`` sets columns on each
item's row (re-queues the document) in the same batch, after its moves, with the undo
log and ledger of :class:`~handrail.steps.backfill.Backfill` committed in one SQLite
transaction: on resume a batch whose rows committed is not applied again, and one whose
rows did not is completed (its moves are idempotent). Rollback puts the rows back first,
then the files.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from ..engine.context import StepContext
from ..engine.journal import Journal
from ..errors import (
    LeaseHeld,
    PolicyError,
    ResourceError,
    RollbackConflict,
    RunbookError,
    StepFailed,
)
from ..hashing import sha256_file
from ..inline import code
from ..model import CheckResult, Outcome, Plan, RunStatus, Tier
from ..resources._files import atomic_write_bytes, fsync_dir
from ..resources.directory import Directory
from ..resources.sqlite import SQLite
from ..runbook import Step, describe_callable
from .backfill import Backfill

QUARANTINE = "quarantine"
#: runs whose quarantine may be purged without --force
FINISHED = (RunStatus.COMPLETED, RunStatus.ROLLED_BACK)
#: Directory fingerprints skip names with this suffix: a half-copied item never counts
_TMP = ".handrail-tmp"

Select = Callable[[StepContext], Iterable[str]] | Sequence[str]


@dataclass(frozen=True)
class RowUpdate:
    """Set ``values`` on the row of each deleted item, in the same batch, with an undo log.

    ``key_of(item)`` maps an item (its path relative to the target) to the row's ``key``
    value; by default the item itself (a concept directory named by the document hash).
    """

    db: SQLite
    table: str
    key: str
    values: Mapping[str, Any]
    key_of: Callable[[str], Any] | None = None


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def describe_tree(path: Path) -> dict[str, str]:
    """Manifest of a file or directory: relative path -> "type mode size sha256" ("." is
    the item itself), in the format of :meth:`Directory.manifest`."""
    st = path.lstat()
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode):
        return {".": f"l {mode:o} {os.readlink(path)}"}
    if stat.S_ISREG(st.st_mode):
        digest, size = sha256_file(path)
        return {".": f"f {mode:o} {size} {digest}"}
    if stat.S_ISDIR(st.st_mode):
        return {".": f"d {mode:o}"} | Directory("item", path).manifest()
    return {".": f"o {mode:o}"}


def tree_size(path: Path) -> tuple[int, int]:
    """(files, bytes) under ``path`` without reading contents (lstat only)."""
    if not os.path.lexists(path):
        return 0, 0
    if not path.is_dir() or path.is_symlink():
        return 1, path.lstat().st_size
    files = size = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            files += 1
            size += os.lstat(os.path.join(root, name)).st_size
    return files, size


def _manifest_totals(entries: Mapping[str, str]) -> tuple[int, int]:
    files = size = 0
    for value in entries.values():
        parts = value.split(" ")
        if parts[0] == "f":
            files += 1
            size += int(parts[2])
        elif parts[0] == "l":
            files += 1
    return files, size


def _writable_tree(path: Path) -> None:
    """Give the owner rwx on every directory under ``path`` so it can be removed."""
    if path.is_symlink() or not path.is_dir():
        return
    for root, dirs, _files in os.walk(path):
        os.chmod(root, stat.S_IMODE(os.lstat(root).st_mode) | stat.S_IRWXU)
        for d in dirs:
            full = os.path.join(root, d)
            if not os.path.islink(full):
                os.chmod(full, stat.S_IMODE(os.lstat(full).st_mode) | stat.S_IRWXU)


def remove_tree(path: Path) -> None:
    """Remove a file or a tree, read-only directories included."""
    if not os.path.lexists(path):
        return
    if path.is_dir() and not path.is_symlink():
        _writable_tree(path)
        shutil.rmtree(path)
    else:
        path.unlink()


def _fsync_tree(path: Path) -> None:
    if path.is_symlink():
        return
    if path.is_file():
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        return
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            if not os.path.islink(full):
                with open(full, "rb") as f:
                    os.fsync(f.fileno())
        fsync_dir(Path(root))


def _copy_owners(src: Path, dst: Path) -> None:
    """Give every entry of the copy ``dst`` the owner and group of its original in
    ``src`` (a copy belongs to the runner; a rename would have kept them)."""
    pairs = [(src, dst)]
    if dst.is_dir() and not dst.is_symlink():
        for root, dirs, files in os.walk(dst):
            for name in dirs + files:
                copy = Path(root) / name
                pairs.append((src / copy.relative_to(dst), copy))
    for original, copy in pairs:
        st, now = os.lstat(original), os.lstat(copy)
        if (st.st_uid, st.st_gid) == (now.st_uid, now.st_gid):
            continue
        try:
            os.chown(copy, st.st_uid, st.st_gid, follow_symlinks=False)
        except PermissionError as exc:
            raise StepFailed(
                f"cannot copy {original} keeping its owner {st.st_uid}:{st.st_gid} "
                f"(handrail runs as uid {os.geteuid()}); it was not deleted",
                hint="run as root, or put the state directory on the target's filesystem",
            ) from exc
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(copy, stat.S_IMODE(st.st_mode))  # chown clears setuid/setgid


def _copy_item(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` durably: into a temp name beside dst, fsync, rename."""
    tmp = dst.with_name(f".{dst.name}{_TMP}")
    remove_tree(tmp)
    if src.is_symlink():
        os.symlink(os.readlink(src), tmp)
    elif src.is_dir():
        shutil.copytree(src, tmp, symlinks=True)
    else:
        shutil.copy2(src, tmp)
    _copy_owners(src, tmp)
    _fsync_tree(tmp)
    os.rename(tmp, dst)
    fsync_dir(dst.parent)


class QuarantineDelete(Step):
    """Delete files or directories under ``target`` by moving them into the run's quarantine.

    ``select`` is a list of paths relative to the target, or a function of the context
    returning them (e.g. the concept directories of documents that need reprocessing). A
    path that does not exist is recorded as absent (nothing to move) and still gets its
    ``on_deleted`` row update. The step is tier ``destructive`` (policy 4: it runs only
    with ``--allow-destructive``) and yet exactly reversible while the quarantine is kept.
    """

    def __init__(
        self,
        name: str,
        target: Directory,
        *,
        select: Select,
        on_deleted: RowUpdate | None = None,
        cross_device: Literal["refuse", "copy"] = "refuse",
        **kw: Any,
    ) -> None:
        if cross_device not in ("refuse", "copy"):
            raise RunbookError(f"step {name!r}: cross_device must be 'refuse' or 'copy'")
        self.target, self.select = target, select
        self.on_deleted, self.cross_device = on_deleted, cross_device
        writes: list[Any] = [target]
        self._rows: Backfill | None = None
        if on_deleted is not None:
            values = dict(on_deleted.values)
            self._rows = Backfill(
                name,
                on_deleted.db,
                table=on_deleted.table,
                key=on_deleted.key,
                columns=list(values),
                compute=lambda _row: dict(values),
            )
            writes.append(on_deleted.db)
        kw.setdefault("writes", tuple(writes))
        kw.setdefault("batch_size", 100)
        super().__init__(name, **kw)
        if not callable(select):
            # A fixed list is checked now, so a bad path stops `plan` and `run` when the
            # runbook loads; where its paths lead is checked when the target is validated,
            # which `run` does before its first change.
            target.guard(f"step {name!r}", self._checked(list(select), target))

    def derived_tier(self) -> Tier:
        # A delete is destructive by policy even though the quarantine makes it reversible.
        return Tier.DESTRUCTIVE

    def default_changes(self) -> str:
        out = f"moves selected paths under {self.target.path} into the run's quarantine"
        if self.on_deleted is not None:
            cols = ", ".join(self.on_deleted.values)
            out += f"; sets {cols} on their rows of {self.on_deleted.table}"
        return out

    # explain_changes: default_changes above says it (and is what the author may replace)
    def explain_rollback(self) -> str:
        return (
            f"moves what it quarantined back into {code(self.target.name)} and undoes its "
            "row updates, while the quarantine is kept (`handrail purge` empties it)"
        )

    def params(self) -> dict[str, Any]:
        rows = self.on_deleted
        return {
            "target": self.target.name,
            "select": describe_callable(self.select)
            if callable(self.select)
            else list(self.select),
            "cross_device": self.cross_device,
            "on_deleted": None
            if rows is None
            else {
                "db": rows.db.name,
                "table": rows.table,
                "key": rows.key,
                "values": dict(rows.values),
                "key_of": describe_callable(rows.key_of) if rows.key_of else None,
            },
        }

    # -- paths ----------------------------------------------------------------------------
    def _clean(self, rel: Any, target: Directory) -> str:
        if not isinstance(rel, str) or not rel.strip():
            raise RunbookError(f"step {self.name!r}: select gave {rel!r}, not a relative path")
        p = PurePosixPath(rel)
        if p.is_absolute() or ".." in p.parts or str(p) in (".", ""):
            raise RunbookError(
                f"step {self.name!r}: {rel!r} must be a path inside {target.path} "
                "(relative, without '..')",
                hint=f"select paths relative to the directory, e.g. 'sub/file' for "
                f"{target.path / 'sub' / 'file'}; nothing was changed",
            )
        if target._excluded(str(p)):
            raise RunbookError(
                f"step {self.name!r}: {rel!r} is excluded from {target.name} (another "
                "resource owns it)"
            )
        return str(p)

    def _checked(self, raw: Iterable[Any], target: Directory) -> list[str]:
        """Clean relative paths, each once, none inside another."""
        out = list(dict.fromkeys(self._clean(r, target) for r in raw))
        chosen = set(out)
        for rel in out:
            for parent in PurePosixPath(rel).parents:
                if str(parent) in chosen:
                    raise RunbookError(
                        f"step {self.name!r}: {str(parent)!r} contains {rel!r}; select one"
                    )
        return out

    def _selected(self, ctx: StepContext) -> list[str]:
        """The selection, every path checked to stay inside the target (symlinks are
        resolved): a path leading out is refused before anything moves."""
        target = ctx.use(self.target)
        raw = self.select(ctx) if callable(self.select) else self.select
        out = self._checked(raw, target)
        self._check_inside(target, out)
        return out

    def _check_inside(self, target: Directory, items: Iterable[str]) -> None:
        if not target.path.exists():
            return  # nothing to move; validate() reports a missing target
        for rel in items:
            target.check_inside(rel, by=f"step {self.name!r}")

    @staticmethod
    def state_dir(ctx: StepContext) -> Path:
        if ctx.journal is not None:
            return ctx.journal.state_dir
        return ctx.work_dir.parent.parent  # STATE/runs/RUN

    def quarantine_dir(self, ctx: StepContext) -> Path:
        """``STATE/quarantine/RUN/STEP``: where this step's deletions go."""
        return self.state_dir(ctx) / QUARANTINE / ctx.run_id / self.name

    def _copying(self, ctx: StepContext) -> bool:
        """Whether moves must copy (another filesystem); refuses unless allowed."""
        target = ctx.use(self.target)
        root = self.state_dir(ctx) / QUARANTINE
        root.mkdir(parents=True, exist_ok=True)
        here, there = os.stat(target.path).st_dev, os.stat(root).st_dev
        if here == there:
            return False
        if self.cross_device == "copy":
            return True
        raise PolicyError(
            f"step {self.name!r}: the quarantine {root} is on another filesystem than "
            f"{target.path}; deleting into it would be a copy, not a rename",
            hint="put the state directory on the target's filesystem (--state-dir or "
            "HANDRAIL_STATE_DIR), or give the step cross_device='copy' to copy, fsync, "
            "then delete",
        )

    def _key(self, rel: str) -> Any:
        assert self.on_deleted is not None
        return self.on_deleted.key_of(rel) if self.on_deleted.key_of else rel

    # -- lifecycle ----------------------------------------------------------------------
    def validate(self, ctx: StepContext) -> None:
        """On the real state, before the run's first change: every selected path stays
        inside the target (so a refusal names the user's paths, not a clone's)."""
        self._selected(ctx)

    def plan(self, ctx: StepContext) -> Plan:
        items = self._selected(ctx)
        target = ctx.use(self.target)
        files = size = present = 0
        samples: list[dict[str, Any]] = []
        for rel in items:
            n, b = tree_size(target.path / rel)
            exists = os.path.lexists(target.path / rel)
            present += exists
            files += n
            size += b
            if len(samples) < 20:
                samples.append(
                    {"path": rel, "files": n, "bytes": b} if exists else {"path": rel, "absent": 1}
                )
        details: dict[str, Any] = {"target": str(target.path)}
        if ctx.journal is not None:  # a real run: the quarantine's place is known
            self._copying(ctx)  # refuse now, before anything moves
            details["quarantine"] = str(self.quarantine_dir(ctx))
        summary = (
            f"move {present} of {len(items)} path(s) under {target.path} "
            f"({files} files, {human_bytes(size)}) into the run's quarantine"
        )
        if self.on_deleted is not None:
            summary += (
                f"; set {', '.join(f'{k}={v!r}' for k, v in self.on_deleted.values.items())} "
                f"on their rows of {self.on_deleted.table}"
            )
        return Plan(
            summary=summary,
            items=len(items),
            counts={
                "items": len(items),
                "present": present,
                "absent": len(items) - present,
                "files": files,
                "bytes": size,
            },
            samples=samples,
            details=details,
        )

    def items(self, ctx: StepContext) -> list[Any] | None:
        items = self._selected(ctx)
        self._copying(ctx)
        return items

    def committed_batches(self, ctx: StepContext) -> set[int]:
        return self._rows.committed_batches(ctx) if self._rows is not None else set()

    def _manifest_path(self, qdir: Path, batch: int) -> Path:
        return qdir / "manifests" / f"batch-{batch:06d}.json"

    def apply_batch(self, ctx: StepContext, batch: int, items: list[Any]) -> int:
        target = ctx.use(self.target)
        copying = self._copying(ctx)
        qdir = self.quarantine_dir(ctx)
        if ctx.state.get("quarantine") != str(qdir):
            ctx.save_state(quarantine=str(qdir))
        mpath = self._manifest_path(qdir, batch)
        recorded: dict[str, Any] = json.loads(mpath.read_text())["items"] if mpath.exists() else {}
        # 0. Again, right before moving: a symlink may have appeared since the plan.
        self._check_inside(target, (rel for rel in items if os.path.lexists(target.path / rel)))
        # 1. The manifest of everything about to move, durable before the first rename.
        for rel in items:
            src, dst = target.path / rel, qdir / "items" / rel
            if os.path.lexists(dst) and rel in recorded:
                continue  # moved before a crash: keep what was recorded then
            if os.path.lexists(src):
                recorded[rel] = {"entries": describe_tree(src)}
            else:
                recorded.setdefault(rel, {"absent": True})
        atomic_write_bytes(
            mpath, json.dumps({"batch": batch, "items": recorded}, sort_keys=True).encode()
        )
        # 2. The moves.
        moved = 0
        for rel in items:
            src, dst = target.path / rel, qdir / "items" / rel
            entry = recorded[rel]
            if os.path.lexists(dst):
                if os.path.lexists(src) and not (copying and self._remnant(src, entry)):
                    ctx.reject(str(target.path), rel, "recreated after it was quarantined")
                    continue
                if os.path.lexists(src):  # a copy that was not fully deleted
                    remove_tree(src)
                    fsync_dir(src.parent)
                continue
            if not os.path.lexists(src):
                if not entry.get("absent"):
                    ctx.reject(str(target.path), rel, "disappeared before it was quarantined")
                continue
            self._move(src, dst, copying)
            moved += 1
            files, size = _manifest_totals(entry["entries"])
            if ctx.journal is not None:
                ctx.journal.event(
                    ctx.run_id,
                    "quarantined",
                    f"moved {rel} into quarantine ({files} files, {human_bytes(size)})",
                    step=self.name,
                    data={"path": rel, "files": files, "bytes": size, "batch": batch},
                )
        # 3. The rows, with their undo log and the batch's ledger row, in one transaction.
        if self._rows is not None:
            self._rows.apply_batch(ctx, batch, [self._key(rel) for rel in items])
        return moved

    def _remnant(self, src: Path, entry: Mapping[str, Any]) -> bool:
        """Whether ``src`` holds only what a copy-then-delete had not yet deleted."""
        if entry.get("absent"):
            return False
        want = entry["entries"]
        try:
            got = describe_tree(src)
        except OSError:
            return False
        return all(want.get(k) == v or (k == "." and v.startswith("d ")) for k, v in got.items())

    def _move(self, src: Path, dst: Path, copying: bool) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if copying:
            _copy_item(src, dst)
            remove_tree(src)
            fsync_dir(src.parent)
            return
        try:
            os.rename(src, dst)
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                raise PolicyError(
                    f"step {self.name!r}: {src} is on another filesystem than the quarantine",
                    hint="give the step cross_device='copy' to copy, fsync, then delete",
                ) from exc
            raise
        fsync_dir(dst.parent)
        fsync_dir(src.parent)

    def verify(self, ctx: StepContext) -> list[CheckResult]:
        target = ctx.use(self.target)
        qdir = self.quarantine_dir(ctx)
        counts = {"quarantined": 0, "absent": 0, "recreated": 0, "lost": 0}
        lost: list[str] = []
        for mpath in sorted((qdir / "manifests").glob("batch-*.json")):
            for rel, entry in json.loads(mpath.read_text())["items"].items():
                here = os.path.lexists(target.path / rel)
                there = os.path.lexists(qdir / "items" / rel)
                if entry.get("absent"):
                    counts["absent"] += 1
                elif there:
                    counts["recreated" if here else "quarantined"] += 1
                elif not here:
                    counts["lost"] += 1
                    lost.append(rel)
        return [
            CheckResult(
                f"{self.name}: every deleted path is in quarantine",
                Outcome.FAIL if lost else Outcome.PASS,
                {"counts": counts, "quarantine": str(qdir), "lost": lost[:20]},
                f"{len(lost)} path(s) are neither in place nor in quarantine" if lost else "",
            )
        ]

    def rollback(self, ctx: StepContext) -> None:
        force = bool(ctx.state.get("_force"))
        target = ctx.use(self.target)
        qdir = self.quarantine_dir(ctx)
        manifests = sorted((qdir / "manifests").glob("batch-*.json"), reverse=True)
        if not manifests:
            self._refuse_if_purged(ctx)  # before anything is put back
        conflicts: list[str] = []
        if self._rows is not None:
            try:
                self._rows.rollback(ctx)
            except RollbackConflict as exc:
                conflicts += exc.items
        copying = bool(manifests) and self._copying(ctx)
        for mpath in manifests:
            recorded = json.loads(mpath.read_text())["items"]
            for rel in sorted(recorded, reverse=True):
                problem = self._restore(ctx, target, qdir, rel, recorded[rel], force, copying)
                if problem:
                    conflicts.append(f"{target.path / rel}: {problem}")
        if conflicts:
            raise RollbackConflict(
                f"{len(conflicts)} item(s) were left alone: {'; '.join(conflicts[:3])}",
                hint="inspect them; `handrail rollback RUN --force` restores them anyway "
                f"(anything found in their place is moved to {qdir / 'displaced'})",
                items=conflicts,
            )
        # Everything is back: the quarantine of this step keeps only what was displaced.
        for sub in ("items", "manifests"):
            remove_tree(qdir / sub)
        for d in (qdir, qdir.parent):
            try:
                d.rmdir()
            except OSError:
                break

    def _restore(
        self,
        ctx: StepContext,
        target: Directory,
        qdir: Path,
        rel: str,
        entry: Mapping[str, Any],
        force: bool,
        copying: bool,
    ) -> str | None:
        """Move one item back; a reason when it is left alone, else None."""
        if entry.get("absent"):
            return None
        src, dst = target.path / rel, qdir / "items" / rel
        if not os.path.lexists(dst):
            if os.path.lexists(src):
                return None  # back already, or never moved
            return "neither in place nor in quarantine (purged or removed by hand?)"
        parent = str(PurePosixPath(rel).parent)
        try:  # its place may lead elsewhere now (a parent replaced by a symlink)
            if parent != ".":
                target.check_inside(parent, by=f"step {self.name!r}")
        except ResourceError as exc:
            return exc.message
        got = describe_tree(dst)
        if got != entry["entries"] and not force:
            diff = sorted(
                k for k in set(got) | set(entry["entries"]) if got.get(k) != entry["entries"].get(k)
            )
            return f"the quarantined copy differs from its manifest ({', '.join(diff[:5])})"
        if os.path.lexists(src):
            if copying and self._remnant(src, entry):
                remove_tree(src)  # a copy-then-delete stopped part way; the copy is whole
            elif not force:
                return "something new is in its place; left alone"
            else:
                aside = qdir / "displaced" / rel
                remove_tree(aside)
                self._move(src, aside, copying)
        self._move(dst, src, copying)
        if ctx.journal is not None:
            ctx.journal.event(
                ctx.run_id,
                "unquarantined",
                f"moved {rel} back from quarantine",
                step=self.name,
                data={"path": rel},
            )
        return None

    def _refuse_if_purged(self, ctx: StepContext) -> None:
        if ctx.journal is None:
            return
        purged = [e for e in ctx.journal.events(ctx.run_id) if e["kind"] == "quarantine-purged"]
        if purged:
            raise PolicyError(
                f"step {self.name!r} cannot be rolled back: the quarantine of run {ctx.run_id} "
                f"was purged at {purged[-1]['at']}",
                hint=f"restore the run's backups instead: `handrail backups restore {ctx.run_id}`",
            )


# -- purge ------------------------------------------------------------------------------------
@dataclass
class PurgeEntry:
    """One run's quarantine, and what purge did with it."""

    run_id: str
    status: str | None  # the run's status in the journal (None: the journal has no such run)
    finished_at: str | None
    age_days: float  # since the run finished, or since the quarantine last changed
    path: str
    files: int
    bytes: int
    action: Literal["removed", "would remove", "kept"]
    reason: str


@dataclass
class PurgeReport:
    """What :func:`purge_quarantine` found and did."""

    state_dir: str
    older_than_days: float
    dry_run: bool
    entries: list[PurgeEntry] = field(default_factory=list)

    @property
    def removed(self) -> list[PurgeEntry]:
        return [e for e in self.entries if e.action != "kept"]

    @property
    def bytes_freed(self) -> int:
        return sum(e.bytes for e in self.removed)

    def to_json(self) -> dict[str, Any]:
        return {
            "state_dir": self.state_dir,
            "older_than_days": self.older_than_days,
            "dry_run": self.dry_run,
            "entries": [asdict(e) for e in self.entries],
            "removed": len(self.removed),
            "bytes_freed": self.bytes_freed,
        }


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def purge_quarantine(
    state_dir: Path,
    *,
    older_than_days: float,
    dry_run: bool = False,
    force: bool = False,
    now: datetime | None = None,
) -> PurgeReport:
    """Remove the quarantine of every run that finished more than ``older_than_days`` ago.

    A run's age counts from its finish (completed or rolled back) in the journal, or from
    the last change of its quarantine directory when the journal does not know the run.
    The quarantine of a run that is not finished (or unknown to the journal) is kept
    unless ``force``: its rollback may still need it. Each purge takes the runbook's lease
    (a purge never races a rollback) and is journalled before the files go, so a later
    rollback says the quarantine was purged instead of finding it empty.
    """
    if older_than_days < 0:
        raise PolicyError("--older-than must be zero or more days")
    report = PurgeReport(str(state_dir), older_than_days, dry_run)
    root = state_dir / QUARANTINE
    if not root.is_dir():
        return report
    now = now or datetime.now(UTC)
    journal = Journal(state_dir) if (state_dir / "journal.sqlite").exists() else None
    try:
        for run_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            report.entries.append(
                _purge_one(journal, run_dir, older_than_days, dry_run, force, now)
            )
    finally:
        if journal is not None:
            journal.close()
    return report


def _purge_one(
    journal: Journal | None,
    run_dir: Path,
    older_than: float,
    dry_run: bool,
    force: bool,
    now: datetime,
) -> PurgeEntry:
    run = journal.run(run_dir.name) if journal is not None else None
    if run is not None and run.finished_at and run.status in FINISHED:
        age = (now - _parse_time(run.finished_at)).total_seconds() / 86400
    else:
        mtime = max(
            (
                os.lstat(os.path.join(r, n)).st_mtime
                for r, ds, fs in os.walk(run_dir)
                for n in ds + fs
            ),
            default=run_dir.stat().st_mtime,
        )
        age = (now.timestamp() - mtime) / 86400
    files, size = tree_size(run_dir)
    entry = PurgeEntry(
        run_id=run_dir.name,
        status=run.status.value if run else None,
        finished_at=run.finished_at if run else None,
        age_days=round(age, 3),
        path=str(run_dir),
        files=files,
        bytes=size,
        action="kept",
        reason="",
    )
    if age < older_than:
        entry.reason = f"younger than {older_than:g} day(s)"
        return entry
    if (run is None or run.status not in FINISHED) and not force:
        what = f"run is {run.status.value}" if run else "the journal has no such run"
        entry.reason = f"{what}: its rollback may still need it (--force purges anyway)"
        return entry
    if dry_run:
        entry.action, entry.reason = "would remove", "dry run"
        return entry
    lease = None
    if journal is not None and run is not None:
        try:
            lease = journal.acquire_lease(run.runbook_key, run_id=run.id)
        except LeaseHeld as exc:
            entry.reason = f"not now: {exc.message}"
            return entry
    try:
        if journal is not None and run is not None:
            journal.event(
                run.id,
                "quarantine-purged",
                f"quarantine purged: {files} files, {human_bytes(size)}",
                data={"files": files, "bytes": size, "path": str(run_dir), "forced": force},
            )
        try:
            remove_tree(run_dir)
        except OSError as exc:
            raise StepFailed(f"cannot remove {run_dir}: {exc.strerror}") from exc
    finally:
        if lease is not None and journal is not None:
            journal.release_lease(lease)
    entry.action = "removed"
    entry.reason = f"finished {entry.age_days:g} day(s) ago" if run else "forced"
    return entry
