"""Directories of files: a tar archive plus manifest as the backup, the manifest as the
fingerprint (path, type, mode, size, sha256 of each entry, sorted).

A restore puts every entry back exactly, owner and group included (numeric ids, as the
archive recorded them), and extracts the same way on every Python the package supports:
``tarfile``'s extraction filters only exist from 3.11.4 (and their ``tar`` filter would
drop group-write and setgid bits), so each member is checked here instead: no absolute
name, no ``..``, nothing written through a symlink, hard links only to earlier members.
A symlink itself is restored as it was, wherever it points: it is the directory's data.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import ClassVar

from ..errors import ResourceError
from ..hashing import digest_parts, sha256_file
from ._files import Owner, apply_owner, can_keep_owner, fsync_dir
from .base import ABSENT, Backup, Fingerprint, Resource


class Directory(Resource):
    """A directory tree. ``exclude`` takes glob patterns (matched against the relative
    path and the file name) for entries another resource owns, such as a database file
    living inside the directory."""

    kind: ClassVar[str] = "directory"

    def __init__(
        self,
        name: str,
        path: str | os.PathLike[str],
        *,
        exclude: Sequence[str] = (),
        create: bool = False,
        backup_when_read: bool = True,
    ) -> None:
        super().__init__(name, backup_when_read=backup_when_read)
        self.path = Path(path)
        self.exclude = tuple(exclude)
        self.must_exist = not create
        #: paths that steps will move away, by step: validate() refuses any that resolves
        #: outside the directory, so `run` stops before its first change
        self.guarded: dict[str, tuple[str, ...]] = {}

    def location(self) -> str:
        return str(self.path)

    def exists(self) -> bool:
        return self.path.exists()

    def validate(self) -> None:
        self._check_readable()
        # Only here, before a run starts: a fingerprint taken during a rollback must not
        # fail because a moved path's surroundings changed since.
        for step, paths in self.guarded.items():
            for rel in paths:
                self.check_inside(rel, by=step)

    def _check_readable(self) -> None:
        if not self.path.exists() and self.must_exist:
            raise ResourceError(
                f"{self.name}: directory {self.path} does not exist",
                hint="check the path; pass create=True if the runbook creates it",
            )
        if self.path.exists() and not self.path.is_dir():
            raise ResourceError(
                f"{self.name}: {self.path} is not a directory",
                hint="check the path in the runbook; nothing was changed",
            )
        if self.path.exists() and not os.access(self.path, os.R_OK | os.X_OK):
            raise ResourceError(
                f"{self.name}: directory {self.path} is not readable by uid {os.geteuid()}",
                hint="run handrail as a user that can read the whole tree (its owner, or root)",
            )

    def guard(self, step: str, paths: Sequence[str]) -> None:
        """Have :meth:`validate` check that ``paths`` (which ``step`` will move) resolve
        inside the directory: ``run`` validates every resource before its first change."""
        self.guarded[step] = tuple(paths)

    def check_inside(self, rel: str, *, by: str) -> Path:
        """The real path of ``rel``, refusing one that leads out of the directory.

        Every directory on the way is resolved (a symlinked directory leads wherever it
        points); the last component is not followed when it is a symlink, since the link
        itself is what moves, but a link pointing outside is refused as well: whoever
        selected it most likely meant what it points to, which is not ours to move."""
        root = Path(os.path.realpath(self.path))
        full = self.path / rel
        parent = Path(os.path.realpath(full.parent))
        where: Path | None = None
        if not parent.is_relative_to(root):
            where = parent / full.name
        elif full.is_symlink():
            target = Path(os.path.realpath(full))
            if not target.is_relative_to(root):
                where = target
        if where is not None:
            raise ResourceError(
                f"{by}: {rel!r} in {self.name} ({self.path}) leads to {where}, outside the "
                "directory; it is not in the directory's backup, so handrail will not move it",
                hint="remove it from the selection (or replace the symlink); nothing was changed",
            )
        real = parent / full.name
        inner = real.relative_to(root).as_posix()
        if inner != "." and self._excluded(inner):
            raise ResourceError(
                f"{by}: {rel!r} in {self.name} is {inner!r}, which is excluded (another "
                "resource owns it)",
                hint="remove it from the selection; nothing was changed",
            )
        return real

    def _excluded(self, rel: str) -> bool:
        base = rel.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(base, p) for p in self.exclude)

    def entries(self) -> Iterator[tuple[str, Path]]:
        """(relative path, absolute path) of every entry, sorted, exclusions applied."""
        for root, dirs, files in os.walk(self.path):
            dirs.sort()
            rel_root = os.path.relpath(root, self.path)
            for name in sorted(dirs + files):
                rel = name if rel_root == "." else f"{rel_root}/{name}"
                if self._excluded(rel):
                    if name in dirs:
                        dirs.remove(name)
                    continue
                if name.endswith(".handrail-tmp"):
                    continue
                yield rel, Path(root) / name

    def manifest(self) -> dict[str, str]:
        """relative path -> "type mode size sha256" (symlinks: their target)."""
        out: dict[str, str] = {}
        for rel, full in self.entries():
            st = full.lstat()
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = f"l {mode:o} {os.readlink(full)}"
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = f"d {mode:o}"
            elif stat.S_ISREG(st.st_mode):
                try:
                    digest, size = sha256_file(full)
                except OSError as exc:
                    raise ResourceError(f"{self.name}: cannot read {full}: {exc.strerror}") from exc
                out[rel] = f"f {mode:o} {size} {digest}"
            else:
                out[rel] = f"o {mode:o}"
        return out

    def size_bytes(self) -> int | None:
        if not self.path.is_dir():
            return 0
        return sum(p.lstat().st_size for p in self.path.rglob("*") if p.is_file())

    def fingerprint(self) -> Fingerprint:
        if not self.path.exists():
            return ABSENT
        self._check_readable()
        parts = {
            f"path:{rel}": hashlib.sha256(entry.encode()).hexdigest()
            for rel, entry in self.manifest().items()
        }
        return Fingerprint(digest_parts("directory", parts), parts)

    def snapshot(self, dest: Path) -> Backup:
        if not self.path.exists():
            return Backup(self.name, self.kind, None, "", 0, ABSENT, {"absent": True})
        fp = self.fingerprint()
        root = Owner.of(self.path)
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / f"{self.name}.tar"
        tmp = target.with_suffix(".partial")
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for rel, full in self.entries():
                tar.add(full, arcname=rel, recursive=False)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        tmp.replace(target)
        digest, size = sha256_file(target)
        return Backup(
            self.name,
            self.kind,
            target,
            digest,
            size,
            fp,
            {
                "source": str(self.path),
                "entries": len(fp.parts),
                "root": root.to_json() if root else None,
            },
        )

    def restore(self, backup: Backup) -> None:
        """Replace the tree's (non-excluded) content with the archive's, atomically per
        directory: extract beside it, move excluded entries across, then swap. Every
        entry gets back its owner, group and mode, the directory itself those recorded
        at backup time (an older backup without them: those it has now)."""
        self._restore(backup, keep_owners=True)

    def restore_into(self, backup: Backup, scratch: Path) -> Resource:
        # A scratch copy proves the content; it stays the runner's (a non-root runner
        # could not give it away, and nobody else reads it).
        copy = self.clone_empty(scratch)
        copy._restore(backup, keep_owners=False)
        return copy

    def _restore(self, backup: Backup, *, keep_owners: bool) -> None:
        if backup.path is None:
            self._remove_owned()
            return
        backup.check_artefact()
        root = Owner.from_json(backup.meta.get("root")) or Owner.of(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = self.path.with_name(f".{self.path.name}.handrail-restore")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:  # everything that can fail, before the first entry of the tree moves
            with tarfile.open(backup.path, "r") as tar:
                safe_extract(tar, staging, keep_owners=keep_owners)
            if self.path.exists():
                shutil.copystat(self.path, staging)
            if root is not None and keep_owners:
                apply_owner(staging, root, self.path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if self.path.exists():
            # Entries that another resource owns (excluded) stay where they are.
            for rel, full in list(_walk_excluded(self)):
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(full, target)
            old = self.path.with_name(f".{self.path.name}.handrail-old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.path, old)
            os.replace(staging, self.path)
            shutil.rmtree(old)
        else:
            os.replace(staging, self.path)
        fsync_dir(self.path.parent)

    def _remove_owned(self) -> None:
        if not self.path.exists():
            return
        if self.exclude and any(True for _ in _walk_excluded(self)):
            # Keep what other resources own; remove only ours.
            for _rel, full in sorted(self.entries(), reverse=True):
                if full.is_dir() and not full.is_symlink():
                    if not any(full.iterdir()):
                        full.rmdir()
                else:
                    full.unlink()
            return
        shutil.rmtree(self.path)

    def clone(self, scratch: Path) -> Directory:
        copy = self.clone_empty(scratch)
        if self.path.exists():
            shutil.copytree(self.path, copy.path, symlinks=True)
        return copy

    def clone_empty(self, scratch: Path) -> Directory:
        scratch.mkdir(parents=True, exist_ok=True)
        return Directory(
            self.name, scratch / (self.path.name or self.name), exclude=self.exclude, create=True
        )

    def check_writable(self) -> None:
        """Files can be created and replaced in every directory of the tree and in its
        parent (a restore swaps the whole tree), and no file is immutable or on a read-only
        mount. Really tried: root bypasses mode bits, not chattr +i or a read-only mount."""
        import errno

        from .base import probe_directory, writable_error

        what = f"{self.name} (directory {self.path})"
        probe_directory(f"{what} is restored by a swap in its parent directory", self.path.parent)
        if not self.path.exists():
            return
        probe_directory(f"{what} replaces files through new files in each directory", self.path)
        for _rel, full in self.entries():
            if full.is_symlink():
                continue
            if full.is_dir():
                probe_directory(f"{what} replaces files through new files in each directory", full)
                continue
            try:
                os.close(os.open(full, os.O_WRONLY))  # no O_TRUNC: nothing changes
            except OSError as exc:
                # A file we may not write is still replaced by a rename in a writable
                # directory; an immutable one or a read-only mount is not.
                if exc.errno != errno.EACCES:
                    raise writable_error(what, full, exc) from exc


def _walk_excluded(d: Directory) -> Iterator[tuple[str, Path]]:
    """Top-most excluded entries of a directory (what another resource owns)."""
    for root, dirs, files in os.walk(d.path):
        rel_root = os.path.relpath(root, d.path)
        for name in sorted(dirs + files):
            rel = name if rel_root == "." else f"{rel_root}/{name}"
            if d._excluded(rel):
                if name in dirs:
                    dirs.remove(name)
                yield rel, Path(root) / name


#: tarfile's extraction filters (3.11.4+, 3.12+); before them extractall takes no filter
HAS_TAR_FILTER = hasattr(tarfile, "data_filter")


def check_members(members: Sequence[tarfile.TarInfo]) -> None:
    """Refuse an archive that would write outside its destination: an absolute name, a
    ``..`` component, a member under a symlink member, a hard link to anything but an
    earlier member, or a device. Symlinks themselves may point anywhere."""
    links: set[str] = set()
    seen: set[str] = set()
    for m in members:
        name = m.name.rstrip("/")
        parts = PurePosixPath(name).parts
        problem = ""
        if name.startswith("/") or os.path.isabs(name):
            problem = "an absolute path"
        elif ".." in parts or not parts:
            problem = "a path leaving the directory"
        elif any("/".join(parts[:i]) in links for i in range(1, len(parts))):
            problem = "written through a symlink"
        elif m.islnk() and m.linkname.rstrip("/") not in seen:
            problem = f"a hard link to {m.linkname!r}, not an earlier member"
        elif m.ischr() or m.isblk():
            problem = "a device"
        if problem:
            raise ResourceError(
                f"backup archive member {m.name!r} is {problem}; not extracting it",
                hint="the archive was not written by handrail or was tampered with",
            )
        if m.issym():
            links.add(name)
        seen.add(name)


def safe_extract(tar: tarfile.TarFile, dest: Path, *, keep_owners: bool = True) -> None:
    """Extract every member into ``dest`` exactly (modes, numeric owners, links), after
    :func:`check_members`, on any Python the package supports. With ``keep_owners``, an
    archive whose owners this process cannot give back is refused before extracting."""
    members = tar.getmembers()
    check_members(members)
    if keep_owners:
        for m in members:
            if not can_keep_owner(Owner(m.uid, m.gid, m.mode)):
                raise ResourceError(
                    f"cannot restore {m.name!r} with its owner {m.uid}:{m.gid}: handrail "
                    f"runs as uid {os.geteuid()}; nothing was changed",
                    hint="restore as root (or as the user owning every file in the backup)",
                )
    if HAS_TAR_FILTER:
        # Checked above; 'fully_trusted' keeps modes and owners exactly as recorded.
        tar.extractall(dest, members=members, numeric_owner=True, filter="fully_trusted")
    else:
        tar.extractall(dest, members=members, numeric_owner=True)
