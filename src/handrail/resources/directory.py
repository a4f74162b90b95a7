"""Directories of files: a tar archive plus manifest as the backup, the manifest as the
fingerprint (path, type, mode, size, sha256 of each entry, sorted)."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

from ..errors import ResourceError
from ..hashing import digest_parts, sha256_file
from ._files import fsync_dir
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

    def location(self) -> str:
        return str(self.path)

    def exists(self) -> bool:
        return self.path.exists()

    def validate(self) -> None:
        if not self.path.exists() and self.must_exist:
            raise ResourceError(
                f"{self.name}: directory {self.path} does not exist",
                hint="check the path; pass create=True if the runbook creates it",
            )
        if self.path.exists() and not self.path.is_dir():
            raise ResourceError(f"{self.name}: {self.path} is not a directory")
        if self.path.exists() and not os.access(self.path, os.R_OK | os.X_OK):
            raise ResourceError(f"{self.name}: {self.path} is not readable")

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
        self.validate()
        parts = {
            f"path:{rel}": hashlib.sha256(entry.encode()).hexdigest()
            for rel, entry in self.manifest().items()
        }
        return Fingerprint(digest_parts("directory", parts), parts)

    def snapshot(self, dest: Path) -> Backup:
        if not self.path.exists():
            return Backup(self.name, self.kind, None, "", 0, ABSENT, {"absent": True})
        self.validate()
        fp = self.fingerprint()
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
            {"source": str(self.path), "entries": len(fp.parts)},
        )

    def restore(self, backup: Backup) -> None:
        """Replace the tree's (non-excluded) content with the archive's, atomically per
        directory: extract beside it, move excluded entries across, then swap."""
        if backup.path is None:
            self._remove_owned()
            return
        backup.check_artefact()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = self.path.with_name(f".{self.path.name}.handrail-restore")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        with tarfile.open(backup.path, "r") as tar:
            tar.extractall(staging, filter="tar")
        if self.path.exists():
            # Entries that another resource owns (excluded) stay where they are.
            for rel, full in list(_walk_excluded(self)):
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(full, target)
            shutil.copystat(self.path, staging)
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
