"""JSON state files: byte copies as backups, canonical JSON as the fingerprint."""

from __future__ import annotations

import json
import os
import re
from json.decoder import scanstring  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any, ClassVar

from ..errors import ResourceError
from ..hashing import canonical_json, digest_parts, sha256_file, sha256_text
from ._files import Owner, atomic_copy
from .base import ABSENT, Backup, Fingerprint, Resource

_NAN_TOKENS = ("NaN", "Infinity", "-Infinity")
_SCALAR = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null")


def _skip(s: str, i: int) -> int:
    while i < len(s) and s[i] in " \t\n\r":
        i += 1
    return i


class _Refused(Exception):
    """A JSON document parses, but holds something handrail will not read silently."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of two equal keys; the first value would vanish unseen.
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _Refused
    return out


def _no_constant(token: str) -> float:
    raise _Refused


def parse_json_text(text: str, source: str, *, allow_nan: bool = False) -> Any:
    """Parse JSON text, refusing duplicate keys (and NaN/Infinity unless ``allow_nan``)
    with a :class:`ResourceError` naming ``source``, line, column and the key's path."""
    try:
        if allow_nan:
            return json.loads(text, object_pairs_hook=_pairs)
        return json.loads(text, object_pairs_hook=_pairs, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise ResourceError(
            f"{source}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})",
            hint="fix the file (or restore it) and run again; nothing was changed",
        ) from exc
    except _Refused:
        raise _located(text, source, allow_nan) from None


def _located(text: str, source: str, allow_nan: bool) -> ResourceError:
    """The error for the first duplicate key or NaN/Infinity in ``text``, with its place."""
    try:
        _walk(text, _skip(text, 0), "$", allow_nan)
    except _Found as found:
        line = text.count("\n", 0, found.pos) + 1
        col = found.pos - (text.rfind("\n", 0, found.pos) + 1) + 1
        where = f"{source}:{line}:{col}"
        if found.kind == "duplicate":
            return ResourceError(
                f"{where}: duplicate key {found.key!r} in {found.path}: a JSON reader keeps "
                "only the last value and the first would be lost unseen",
                hint="remove or rename one of the two, then run again; nothing was changed",
            )
        return ResourceError(
            f"{where}: {found.key} at {found.path} is not a JSON number",
            hint="replace it (with null, say), or declare the resource with allow_nan=True "
            "if the application really writes it; nothing was changed",
        )
    return ResourceError(f"{source}: JSON refused (duplicate key or NaN)")  # pragma: no cover


class _Found(Exception):
    def __init__(self, kind: str, pos: int, path: str, key: str) -> None:
        super().__init__(kind)
        self.kind, self.pos, self.path, self.key = kind, pos, path, key


def _walk(s: str, i: int, path: str, allow_nan: bool) -> int:
    """Walk one JSON value at ``i`` (valid JSON: json.loads accepted it), raising
    :class:`_Found` at the first duplicate key or NaN token; return where the value ends."""
    c = s[i]
    if c == "{":
        return _walk_object(s, i, path, allow_nan)
    if c == "[":
        i = _skip(s, i + 1)
        n = 0
        while s[i] != "]":
            i = _walk(s, i, f"{path}[{n}]", allow_nan)
            i = _skip(s, i)
            if s[i] == ",":
                i = _skip(s, i + 1)
            n += 1
        return i + 1
    if c == '"':
        return int(scanstring(s, i + 1)[1])
    for token in _NAN_TOKENS:
        if s.startswith(token, i):
            if not allow_nan:
                raise _Found("nan", i, path, token)
            return i + len(token)
    m = _SCALAR.match(s, i)
    assert m is not None, f"not JSON at {i}"
    return m.end()


def _walk_object(s: str, i: int, path: str, allow_nan: bool) -> int:
    seen: set[str] = set()
    i = _skip(s, i + 1)
    while s[i] != "}":
        key, end = scanstring(s, i + 1)
        if key in seen:
            raise _Found("duplicate", i, path, key)
        seen.add(key)
        i = _skip(s, end)
        i = _skip(s, i + 1)  # past the colon
        i = _walk(s, i, f"{path}.{key}" if key.isidentifier() else f"{path}[{key!r}]", allow_nan)
        i = _skip(s, i)
        if s[i] == ",":
            i = _skip(s, i + 1)
    return i + 1


def load_json(path: Path, *, what: str = "JSON file", allow_nan: bool = False) -> Any:
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
    except IsADirectoryError as exc:
        raise ResourceError(
            f"{what} {path} is a directory, not a JSON file",
            hint="check the path in the runbook",
        ) from exc
    except OSError as exc:
        raise ResourceError(f"cannot read {what} {path}: {exc.strerror}") from exc
    return parse_json_text(text, str(path), allow_nan=allow_nan)


class JSONFile(Resource):
    """One JSON file. The fingerprint is the sha256 of its canonical form, so formatting
    and key order do not count as a change, and every top-level key is a named part.

    A file with a duplicate key, or NaN/Infinity (not JSON, though Python writes them), is
    refused at validation; ``allow_nan=True`` accepts NaN and ±Infinity for an
    application that really writes them."""

    kind: ClassVar[str] = "json"

    def __init__(
        self,
        name: str,
        path: str | os.PathLike[str],
        *,
        create: bool = False,
        backup_when_read: bool = True,
        allow_nan: bool = False,
    ) -> None:
        super().__init__(name, backup_when_read=backup_when_read)
        self.path = Path(path)
        self.must_exist = not create
        self.allow_nan = allow_nan

    def location(self) -> str:
        return str(self.path)

    def exists(self) -> bool:
        return self.path.exists()

    def read(self) -> Any:
        return load_json(self.path, what=f"{self.name} ({self.kind})", allow_nan=self.allow_nan)

    def validate(self) -> None:
        if os.path.lexists(self.path) or self.path.exists():
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
        return fingerprint_value(self.read(), allow_nan=self.allow_nan)

    def snapshot(self, dest: Path) -> Backup:
        if not self.path.exists():
            return Backup(self.name, self.kind, None, "", 0, ABSENT, {"absent": True})
        fp = self.fingerprint()  # parses it: a corrupt file fails here, before any change
        owner = Owner.of(self.path)
        target = dest / f"{self.name}.json"
        atomic_copy(self.path, target)
        digest, size = sha256_file(target)
        source_digest, _ = sha256_file(self.path)
        if source_digest != digest:
            raise ResourceError(f"{self.path} changed while it was being copied; run again")
        meta: dict[str, Any] = {"source": str(self.path)}
        if owner is not None:
            meta["owner"] = owner.to_json()  # restore gives the file back to its owner
        return Backup(self.name, self.kind, target, digest, size, fp, meta)

    def restore(self, backup: Backup) -> None:
        """Put the backed-up bytes back with the owner, group and mode recorded at backup
        time (an older backup without them: those of the file it replaces)."""
        self._restore(backup, Owner.from_json(backup.meta.get("owner")) or Owner.of(self.path))

    def _restore(self, backup: Backup, owner: Owner | None) -> None:
        if backup.path is None:
            self.path.unlink(missing_ok=True)
            return
        backup.check_artefact()
        atomic_copy(backup.path, self.path, owner=owner)

    def restore_into(self, backup: Backup, scratch: Path) -> Resource:
        # A scratch copy proves the bytes; it stays the runner's (a non-root runner
        # could not give it away, and nobody else reads it).
        copy = self.clone_empty(scratch)
        copy._restore(backup, None)
        return copy

    def clone(self, scratch: Path) -> JSONFile:
        copy = self.clone_empty(scratch)
        if self.path.exists():
            atomic_copy(self.path, copy.path)
        return copy

    def restored_matches(self, copy: Resource, backup: Backup) -> bool:
        return isinstance(copy, JSONFile) and sha256_file(copy.path)[0] == backup.sha256

    def clone_empty(self, scratch: Path) -> JSONFile:
        scratch.mkdir(parents=True, exist_ok=True)
        return JSONFile(self.name, scratch / self.path.name, create=True, allow_nan=self.allow_nan)

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


def _canonical(value: Any, allow_nan: bool) -> str:
    if not allow_nan:
        return canonical_json(value)
    # NaN and ±Infinity come out as the bare tokens, which no JSON value can equal.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint_value(value: Any, *, allow_nan: bool = False) -> Fingerprint:
    """Fingerprint of a JSON value: one part per top-level key (or one for the whole)."""
    if isinstance(value, dict):
        parts = {f"key:{k}": sha256_text(_canonical(v, allow_nan)) for k, v in value.items()}
    else:
        parts = {"value": sha256_text(_canonical(value, allow_nan))}
    return Fingerprint(digest_parts("json", parts), parts)
