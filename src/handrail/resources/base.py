"""The resource contract: a named handle on state that can be snapshotted, restored,
fingerprinted and cloned.

A backend is one module with one subclass of :class:`Resource`. The executor only speaks
this interface, so PostgreSQL and HTTP services plug in without changing it. Backend
quirks are class attributes (``transactional``, ``restore_testable``), not ``if``s in
the executor.
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..errors import BackupError
from ..hashing import sha256_file

ABSENT_DIGEST = "absent"


@dataclass(frozen=True)
class Fingerprint:
    """A logical digest of a resource's content, equal exactly when the content is equal.

    ``parts`` names the pieces (tables, files, top-level keys) with their own digests,
    so two fingerprints can say *where* they differ, not only that they do.
    """

    digest: str
    parts: dict[str, str] = field(default_factory=dict)

    @property
    def absent(self) -> bool:
        return self.digest == ABSENT_DIGEST

    def diff(self, other: Fingerprint) -> list[str]:
        """Human-readable differences from ``self`` (before) to ``other`` (after)."""
        if self.digest == other.digest:
            return []
        if self.absent or other.absent:
            return ["resource absent before" if self.absent else "resource absent after"]
        out: list[str] = []
        for name in sorted(set(self.parts) | set(other.parts)):
            a, b = self.parts.get(name), other.parts.get(name)
            if a == b:
                continue
            if a is None:
                out.append(f"{name}: added")
            elif b is None:
                out.append(f"{name}: removed")
            else:
                out.append(f"{name}: changed")
        return out or ["content differs"]

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "parts": self.parts}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fingerprint:
        return cls(digest=str(data["digest"]), parts=dict(data.get("parts", {})))


ABSENT = Fingerprint(ABSENT_DIGEST)


@dataclass(frozen=True)
class Backup:
    """A checksummed backup artefact of one resource, taken in one run."""

    resource: str
    kind: str
    path: Path | None  # None when the resource did not exist (restore means: remove it)
    sha256: str
    size: int
    fingerprint: Fingerprint
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def absent(self) -> bool:
        return self.path is None

    def check_artefact(self) -> None:
        """Re-read the artefact and compare its checksum with the recorded one."""
        if self.path is None:
            return
        if not self.path.exists():
            raise BackupError(f"backup of {self.resource!r} is missing: {self.path}")
        digest, size = sha256_file(self.path)
        if digest != self.sha256 or size != self.size:
            raise BackupError(
                f"backup of {self.resource!r} at {self.path} does not match its checksum "
                f"(recorded sha256 {self.sha256[:12]}…, {self.size} bytes; "
                f"found {digest[:12]}…, {size} bytes)",
                hint="the backup file was changed or damaged; take a new one",
            )


class Resource(ABC):
    """A named handle on state. Subclasses implement one backend each."""

    #: short backend name shown to people ("sqlite", "json", "directory", ...)
    kind: ClassVar[str] = "resource"
    #: a batch of changes and its ledger record can commit in one transaction
    transactional: ClassVar[bool] = False
    #: a backup can be restored into a scratch copy to prove it (policy 1)
    restore_testable: ClassVar[bool] = True
    #: changes to it are seen by other people (raises the tier of steps that write it)
    external: ClassVar[bool] = False

    def __init__(self, name: str, *, backup_when_read: bool = True) -> None:
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"resource name must be a simple identifier, got {name!r}")
        self.name = name
        #: snapshot it when a changing step only reads it (False for large read-only
        #: inputs, e.g. a photo library a step hashes); anything written is always backed up
        self.backup_when_read = backup_when_read

    # -- identity ---------------------------------------------------------------------
    @abstractmethod
    def location(self) -> str:
        """Where the state lives, safe to show and journal (no secrets)."""

    def describe(self) -> str:
        return f"{self.kind} {self.name} ({self.location()})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.location()!r})"

    # -- state ------------------------------------------------------------------------
    @abstractmethod
    def exists(self) -> bool:
        """Whether the state is there at all."""

    @abstractmethod
    def validate(self) -> None:
        """Raise :class:`ResourceError` when the state is unreadable or corrupt."""

    @abstractmethod
    def fingerprint(self) -> Fingerprint:
        """The logical digest of the content (:data:`ABSENT` when it does not exist)."""

    # -- backups ----------------------------------------------------------------------
    @abstractmethod
    def snapshot(self, dest: Path) -> Backup:
        """Write a consistent backup artefact into directory ``dest`` and describe it."""

    @abstractmethod
    def restore(self, backup: Backup) -> None:
        """Put the state back exactly as in ``backup`` (remove it if it was absent)."""

    @abstractmethod
    def clone(self, scratch: Path) -> Resource:
        """A scratch copy with the same name and content, living under ``scratch``."""

    def check_clone(self) -> None:  # noqa: B027 - optional hook: most resources can clone
        """Raise :class:`ResourceError` saying why :meth:`clone` is impossible (e.g. an HTTP
        service with no sandbox address). A rehearsal asks every resource before it copies
        or changes anything, so it refuses instead of acting on production."""

    def restore_into(self, backup: Backup, scratch: Path) -> Resource:
        """Restore ``backup`` into a scratch copy (used to prove a backup restores)."""
        copy = self.clone_empty(scratch)
        copy.restore(backup)
        return copy

    @abstractmethod
    def clone_empty(self, scratch: Path) -> Resource:
        """A resource of the same kind and name at a fresh scratch location, not yet created."""

    def restored_matches(self, copy: Resource, backup: Backup) -> bool:
        """A cheap proof that ``copy`` (restored from ``backup``) equals it, e.g. equal
        bytes. False means "not proven this way": the fingerprints are compared instead."""
        return False

    def discard(self) -> None:  # noqa: B027 - optional hook, a no-op for file resources
        """Remove a clone made by :meth:`clone` (files go with their scratch directory)."""

    # -- preflight --------------------------------------------------------------------
    #: :meth:`clone_schema` makes a copy with the structure and none of the data
    can_clone_schema: ClassVar[bool] = False

    def size_bytes(self) -> int | None:
        """About how many bytes a :meth:`clone` copies (None: unknown, not cloned)."""
        return None

    def clone_schema(self, scratch: Path) -> Resource:
        """A scratch copy with the structure but no data (for a preflight of data too
        large to copy: the runbook's statements still meet the real schema)."""
        raise NotImplementedError(f"{self.kind} cannot be cloned as its schema alone")


def verify_backup(resource: Resource, backup: Backup, scratch: Path) -> dict[str, Any]:
    """Prove a backup: its checksum re-reads equal, and it restores to the same fingerprint.

    Returns the evidence recorded in the journal. Raises :class:`BackupError` otherwise.
    """
    backup.check_artefact()
    evidence: dict[str, Any] = {"sha256": backup.sha256, "size": backup.size}
    if backup.absent:
        evidence["restore_test"] = "resource absent; restore removes it"
        return evidence
    if not resource.restore_testable:
        evidence["restore_test"] = "not possible for this resource kind"
        return evidence
    scratch.mkdir(parents=True, exist_ok=True)
    copy = resource.restore_into(backup, scratch)
    try:
        if resource.restored_matches(copy, backup):
            evidence["restore_test"] = "restored into scratch copy; identical to the backup"
            evidence["fingerprint"] = backup.fingerprint.digest
            return evidence
        got = copy.fingerprint()
    finally:
        copy.discard()
        shutil.rmtree(scratch, ignore_errors=True)
    if got.digest != backup.fingerprint.digest:
        raise BackupError(
            f"backup of {resource.name!r} restored into a scratch copy does not equal the "
            f"original: {', '.join(backup.fingerprint.diff(got))}",
            hint="the resource may have changed while it was copied; run again",
        )
    evidence["restore_test"] = "restored into scratch copy; fingerprint equal"
    evidence["fingerprint"] = got.digest
    return evidence
