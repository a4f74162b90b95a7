"""JSON state files: byte copies as backups, canonical JSON as the fingerprint."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

from ..errors import ResourceError
from ..hashing import canonical_json, digest_parts, sha256_file, sha256_text
from ._files import atomic_copy
from .base import ABSENT, Backup, Fingerprint, Resource


def load_json(path: Path, *, what: str = "JSON file") -> Any:
    """Parse a JSON file, turning every failure into an error that names file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ResourceError(f"{what} not found: {path}") from exc
    except UnicodeDecodeError as exc:
        raise ResourceError(
            f"{what} {path} is not UTF-8 text (byte {exc.start})",
            hint="fix the file's encoding or restore it from a backup",
        ) from exc
    except OSError as exc:
        raise ResourceError(f"cannot read {what} {path}: {exc.strerror}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResourceError(
            f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})",
            hint="fix the file (or restore it) and run again; nothing was changed",
        ) from exc


class JSONFile(Resource):
    """One JSON file. The fingerprint is the sha256 of its canonical form, so formatting
    and key order do not count as a change, and every top-level key is a named part."""

    kind: ClassVar[str] = "json"

    def __init__(
        self,
        name: str,
        path: str | os.PathLike[str],
        *,
        create: bool = False,
        backup_when_read: bool = True,
    ) -> None:
        super().__init__(name, backup_when_read=backup_when_read)
        self.path = Path(path)
        self.must_exist = not create

    def location(self) -> str:
        return str(self.path)

    def exists(self) -> bool:
        return self.path.exists()

    def read(self) -> Any:
        return load_json(self.path, what=f"{self.name} ({self.kind})")

    def validate(self) -> None:
        if self.path.exists():
            self.read()
        elif self.must_exist:
            raise ResourceError(
                f"{self.name}: JSON file {self.path} does not exist",
                hint="check the path; pass create=True if the runbook creates it",
            )

    def size_bytes(self) -> int | None:
        return self.path.stat().st_size if self.path.is_file() else 0

    def fingerprint(self) -> Fingerprint:
        if not self.path.exists():
            return ABSENT
        return fingerprint_value(self.read())

    def snapshot(self, dest: Path) -> Backup:
        if not self.path.exists():
            return Backup(self.name, self.kind, None, "", 0, ABSENT, {"absent": True})
        fp = self.fingerprint()  # parses it: a corrupt file fails here, before any change
        target = dest / f"{self.name}.json"
        atomic_copy(self.path, target)
        digest, size = sha256_file(target)
        source_digest, _ = sha256_file(self.path)
        if source_digest != digest:
            raise ResourceError(f"{self.path} changed while it was being copied; run again")
        return Backup(self.name, self.kind, target, digest, size, fp, {"source": str(self.path)})

    def restore(self, backup: Backup) -> None:
        if backup.path is None:
            self.path.unlink(missing_ok=True)
            return
        backup.check_artefact()
        atomic_copy(backup.path, self.path)

    def clone(self, scratch: Path) -> JSONFile:
        copy = self.clone_empty(scratch)
        if self.path.exists():
            atomic_copy(self.path, copy.path)
        return copy

    def restored_matches(self, copy: Resource, backup: Backup) -> bool:
        return isinstance(copy, JSONFile) and sha256_file(copy.path)[0] == backup.sha256

    def clone_empty(self, scratch: Path) -> JSONFile:
        scratch.mkdir(parents=True, exist_ok=True)
        return JSONFile(self.name, scratch / self.path.name, create=True)

    def check_writable(self) -> None:
        """An atomic write creates a temp file beside the file and renames it over: the
        directory must accept new files, and the file must not be immutable or on a
        read-only mount. Really tried, since root bypasses mode bits but not those."""
        import errno

        from .base import probe_directory, writable_error

        what = f"{self.name} (JSON {self.path})"
        replaced = f"{what} is replaced through a temp file in its directory"
        probe_directory(replaced, self.path.parent)
        if not self.path.is_file():
            return
        try:
            os.close(os.open(self.path, os.O_WRONLY))  # no O_TRUNC: nothing changes
        except OSError as exc:
            if exc.errno != errno.EACCES:  # a rename in a writable directory still works
                raise writable_error(what, self.path, exc) from exc


def fingerprint_value(value: Any) -> Fingerprint:
    """Fingerprint of a JSON value: one part per top-level key (or one for the whole)."""
    if isinstance(value, dict):
        parts = {f"key:{k}": sha256_text(canonical_json(v)) for k, v in value.items()}
    else:
        parts = {"value": sha256_text(canonical_json(value))}
    return Fingerprint(digest_parts("json", parts), parts)
