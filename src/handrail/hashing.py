"""Small hashing helpers shared by resources, checks and the journal."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def sha256_file(path: Path) -> tuple[str, int]:
    """Return (sha256 hex, size in bytes) of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def canonical_json(obj: Any) -> str:
    """One text per JSON value: sorted keys, no spaces, real unicode, no NaN."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def digest_parts(kind: str, parts: dict[str, str]) -> str:
    """The digest of a whole resource from its named parts' digests, in name order."""
    h = hashlib.sha256(kind.encode())
    for name in sorted(parts):
        h.update(b"\0" + name.encode("utf-8") + b"\0" + parts[name].encode())
    return h.hexdigest()
