"""Durable file writes: temp file in the same directory, fsync, atomic rename, fsync dir.

A rename puts a *new* inode in the file's place, owned by whoever runs handrail. An app
that runs as another user would lose its own config, so every replacement here carries
the owner, group and mode of the file it replaces (or those it is told to keep) over to
the temp file before the rename, and refuses, leaving the old file alone, when they
cannot be kept.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ResourceError


@dataclass(frozen=True)
class Owner:
    """Owner, group and permission bits of a file: what a replacement must keep."""

    uid: int
    gid: int
    mode: int

    @classmethod
    def of(cls, path: Path) -> Owner | None:
        """The owner of ``path`` (of what a symlink points to: that is the file whose
        content is read and replaced), or None if absent."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return cls(st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))

    def to_json(self) -> dict[str, int]:
        return {"uid": self.uid, "gid": self.gid, "mode": self.mode}

    @classmethod
    def from_json(cls, data: Any) -> Owner | None:
        if not isinstance(data, dict) or not {"uid", "gid", "mode"} <= set(data):
            return None  # a backup taken before owners were recorded
        return cls(int(data["uid"]), int(data["gid"]), int(data["mode"]))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def can_keep_owner(owner: Owner) -> bool:
    """Whether this process can give a new file ``owner``'s uid and gid (root can; anyone
    else only their own uid and a group they belong to)."""
    euid = os.geteuid()
    if euid == 0:
        return True
    return owner.uid == euid and (owner.gid == os.getegid() or owner.gid in os.getgroups())


def check_replaceable(path: Path) -> None:
    """Raise :class:`ResourceError` if ``path`` cannot be replaced keeping its owner,
    group and mode, or its directory does not let us rename into it. For plans: the same
    refusal as :func:`apply_owner`, but before anything is written."""
    owner = Owner.of(path)
    if owner is not None and not can_keep_owner(owner):
        raise _owner_error(path, owner)
    parent = path.parent
    if parent.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise ResourceError(
            f"cannot replace {path}: its directory {parent} is not writable by uid {os.geteuid()}",
            hint="run handrail as the user that owns the directory (or as root)",
        )


def _owner_error(path: Path, owner: Owner) -> ResourceError:
    return ResourceError(
        f"cannot replace {path} keeping its owner {owner.uid}:{owner.gid}: handrail runs "
        f"as uid {os.geteuid()}; nothing was written",
        hint="run handrail as the file's owner or as root, so the application that owns "
        "the file can still read it afterwards",
    )


def apply_owner(tmp: Path, owner: Owner, final: Path) -> None:
    """Give ``tmp`` (about to be renamed onto ``final``) the owner, group and mode."""
    st = os.lstat(tmp)
    if (st.st_uid, st.st_gid) != (owner.uid, owner.gid):
        try:
            os.chown(tmp, owner.uid, owner.gid, follow_symlinks=False)
        except PermissionError as exc:
            raise _owner_error(final, owner) from exc
    # chmod after chown: chown clears setuid/setgid bits.
    os.chmod(tmp, owner.mode)


def atomic_write_bytes(
    path: Path, data: bytes, *, mode: int | None = None, owner: Owner | None = None
) -> None:
    """Replace ``path`` with ``data`` so a reader sees the old or the new file, never half.

    The new file keeps ``owner`` if given, else the owner, group and mode of the file it
    replaces; ``mode`` overrides the permission bits. A new file gets the defaults."""
    path.parent.mkdir(parents=True, exist_ok=True)
    keep = owner or Owner.of(path)
    tmp = path.with_name(f".{path.name}.handrail-tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if keep is not None:
            apply_owner(tmp, keep, path)
        if mode is not None:
            os.chmod(tmp, mode)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_copy(src: Path, dst: Path, *, owner: Owner | None = None) -> None:
    """Copy a file durably (content, mode and times) through a temp file and rename.

    With ``owner`` the copy gets that owner, group and mode (a restore puts back what the
    backup recorded); without, it belongs to whoever runs handrail (a backup copy)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.handrail-tmp")
    try:
        shutil.copy2(src, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if owner is not None:
            apply_owner(tmp, owner, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, dst)
    fsync_dir(dst.parent)
