"""Human review of low-confidence matches: export, decisions file, and a store across re-runs.

Pairs in the low-confidence band (distance 8..15 by default) are exported as JSON, CSV and a
self-contained HTML page (thumbnails embedded as data URIs). On the page a reviewer marks each
pair "duplicate" or "not duplicate" and saves a decisions file; :func:`import_decisions` reads it
back and refuses malformed input with an error naming the file and the record. A
:class:`DecisionStore` keeps confirmed decisions keyed by both paths *and* both hashes, so a
decision survives re-runs but not a change to either image.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal

from PIL import Image, ImageOps

from ..errors import BadInput
from .dhash import ImageHash
from .pairs import LOW_CONFIDENCE, Pairs

__all__ = [
    "DECISIONS_FORMAT",
    "Decision",
    "DecisionStore",
    "ReviewDecision",
    "ReviewFileError",
    "ReviewImage",
    "ReviewPair",
    "export_csv",
    "export_html",
    "export_json",
    "import_decisions",
    "review_pairs",
]

Decision = Literal["duplicate", "not_duplicate"]
DECISIONS: Final = ("duplicate", "not_duplicate")
REVIEW_FORMAT: Final = "handrail.images.review"
DECISIONS_FORMAT: Final = "handrail.images.review-decisions"
STORE_FORMAT: Final = "handrail.images.decision-store"
VERSION: Final = 1

PairKey = tuple[str, str, str, str]  # (path a, dhash a, path b, dhash b), a before b by path


class ReviewFileError(BadInput):
    """A review or decisions file cannot be read or does not have the expected shape."""


@dataclass(frozen=True, slots=True)
class ReviewImage:
    """One side of a pair: what a reviewer needs to judge it."""

    path: str
    dhash: str
    width: int
    height: int
    bytes: int | None  # file size, None when the file is gone

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "dhash": self.dhash,
            "width": self.width,
            "height": self.height,
            "bytes": self.bytes,
        }


@dataclass(frozen=True, slots=True)
class ReviewPair:
    """Two images and their Hamming distance; ``a`` sorts before ``b`` by path."""

    a: ReviewImage
    b: ReviewImage
    distance: int

    @property
    def key(self) -> PairKey:
        return (self.a.path, self.a.dhash, self.b.path, self.b.dhash)

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a.to_json(), "b": self.b.to_json(), "distance": self.distance}


@dataclass(frozen=True, slots=True)
class ReviewDecision:
    """A reviewer's verdict on a pair of images, each named by path and hash."""

    a: str
    a_dhash: str
    b: str
    b_dhash: str
    decision: Decision
    decided_at: str | None = None  # ISO 8601, when known

    @property
    def key(self) -> PairKey:
        return (self.a, self.a_dhash, self.b, self.b_dhash)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "a": self.a,
            "a_dhash": self.a_dhash,
            "b": self.b,
            "b_dhash": self.b_dhash,
            "decision": self.decision,
        }
        if self.decided_at is not None:
            out["decided_at"] = self.decided_at
        return out


def _file_size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def _image(item: ImageHash) -> ReviewImage:
    return ReviewImage(item.path, item.dhash, item.width, item.height, _file_size(item.path))


def review_pairs(
    results: Sequence[ImageHash],
    pairs: Pairs,
    band: tuple[int, int] = LOW_CONFIDENCE,
) -> list[ReviewPair]:
    """The pairs within ``band`` (inclusive), from ``find_pairs`` over ``results``' hashes.

    Sorted by distance, then paths, so the page and the files list them the same way every run.
    """
    low, high = band
    out = []
    for i, j, d in pairs.within(low, high):
        a, b = _image(results[i]), _image(results[j])
        if b.path < a.path:
            a, b = b, a
        out.append(ReviewPair(a, b, d))
    out.sort(key=lambda p: (p.distance, p.a.path, p.b.path))
    return out


def _atomic_write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def export_json(
    pairs: Sequence[ReviewPair],
    path: str | os.PathLike[str],
    band: tuple[int, int] = LOW_CONFIDENCE,
) -> Path:
    """Write the review queue as JSON: format, version, band, totalMatches, pairs."""
    doc = {
        "format": REVIEW_FORMAT,
        "version": VERSION,
        "band": list(band),
        "totalMatches": len(pairs),
        "pairs": [p.to_json() for p in pairs],
    }
    return _atomic_write(Path(path), json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


CSV_COLUMNS: Final = (
    "distance",
    "a_path",
    "a_dhash",
    "a_width",
    "a_height",
    "a_bytes",
    "b_path",
    "b_dhash",
    "b_width",
    "b_height",
    "b_bytes",
)


def export_csv(pairs: Sequence[ReviewPair], path: str | os.PathLike[str]) -> Path:
    """Write the review queue as CSV, one pair per row, columns :data:`CSV_COLUMNS`."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for p in pairs:
        row: list[object] = [p.distance]
        for side in (p.a, p.b):
            row += [side.path, side.dhash, side.width, side.height, side.bytes]
        writer.writerow(["" if v is None else v for v in row])
    return _atomic_write(Path(path), buf.getvalue())


def _thumbnail(path: str, size: int) -> str | None:
    """A JPEG data URI of the upright image fitted in ``size`` px, or None if unreadable."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (size, size))
            upright = ImageOps.exif_transpose(im)
            assert upright is not None
            upright.thumbnail((size, size))
            buf = io.BytesIO()
            upright.convert("RGB").save(buf, "JPEG", quality=80)
    except Exception:  # a thumbnail is a convenience; the page says "unavailable" instead
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def export_html(
    pairs: Sequence[ReviewPair],
    path: str | os.PathLike[str],
    *,
    thumb_size: int = 320,
    title: str = "Near-duplicate review",
) -> Path:
    """Write a self-contained review page: both images per pair, two buttons, a save button.

    The page needs no server and loads nothing from the network; "Save decisions" downloads a
    decisions file for :func:`import_decisions`.
    """
    import jinja2  # the review extra; imported here so hashing works without it

    thumbs: dict[str, str | None] = {}
    for p in pairs:
        for side in (p.a, p.b):
            if side.path not in thumbs:
                thumbs[side.path] = _thumbnail(side.path, thumb_size)
    template_text = (
        resources.files("handrail.images").joinpath("templates/review.html").read_text("utf-8")
    )
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    page = env.from_string(template_text).render(
        title=title,
        pairs=pairs,
        thumbs=thumbs,
        keys=[
            {"a": p.a.path, "a_dhash": p.a.dhash, "b": p.b.path, "b_dhash": p.b.dhash}
            for p in pairs
        ],
        decisions_format=DECISIONS_FORMAT,
        version=VERSION,
    )
    return _atomic_write(Path(path), page)


def _fail(source: str, message: str) -> ReviewFileError:
    return ReviewFileError(f"{source}: {message}")


def _is_hash(value: object) -> bool:
    if not isinstance(value, str) or len(value) != 16:
        return False
    try:
        int(value, 16)
    except ValueError:
        return False
    return True


def _parse_record(source: str, n: int, record: object) -> ReviewDecision:
    where = f"record #{n}"
    if not isinstance(record, dict):
        raise _fail(source, f"{where} is not an object")
    missing = [k for k in ("a", "a_dhash", "b", "b_dhash", "decision") if k not in record]
    if missing:
        raise _fail(source, f"{where} lacks {', '.join(missing)}")
    a, b = record["a"], record["b"]
    if not isinstance(a, str) or not a or not isinstance(b, str) or not b:
        raise _fail(source, f"{where}: 'a' and 'b' must be non-empty paths")
    if a == b:
        raise _fail(source, f"{where}: an image cannot be paired with itself ({a})")
    for k in ("a_dhash", "b_dhash"):
        if not _is_hash(record[k]):
            raise _fail(source, f"{where}: {k} {record[k]!r} is not 16 hex digits")
    decision = record["decision"]
    if decision not in DECISIONS:
        raise _fail(source, f"{where}: decision {decision!r} is not one of {', '.join(DECISIONS)}")
    decided_at = record.get("decided_at")
    if decided_at is not None and not isinstance(decided_at, str):
        raise _fail(source, f"{where}: decided_at must be a string")
    a_hash, b_hash = record["a_dhash"].lower(), record["b_dhash"].lower()
    if b < a:
        a, b, a_hash, b_hash = b, a, b_hash, a_hash
    return ReviewDecision(a, a_hash, b, b_hash, decision, decided_at)


def _parse_decisions(source: str, doc: object, expected_format: str) -> list[ReviewDecision]:
    if not isinstance(doc, dict):
        raise _fail(source, "expected a JSON object at the top level")
    if doc.get("format") != expected_format:
        raise _fail(source, f"format is {doc.get('format')!r}, expected {expected_format!r}")
    if doc.get("version") != VERSION:
        raise _fail(source, f"version {doc.get('version')!r} is not supported (only {VERSION})")
    records = doc.get("decisions")
    if not isinstance(records, list):
        raise _fail(source, "'decisions' must be a list")
    seen: dict[PairKey, tuple[int, Decision]] = {}
    out: list[ReviewDecision] = []
    for n, record in enumerate(records, start=1):
        decision = _parse_record(source, n, record)
        earlier = seen.get(decision.key)
        if earlier is not None:
            if earlier[1] != decision.decision:
                raise _fail(source, f"record #{n} contradicts record #{earlier[0]}")
            continue
        seen[decision.key] = (n, decision.decision)
        out.append(decision)
    return out


def _read_json(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReviewFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReviewFileError(f"{path}: cannot read: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReviewFileError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from exc


def import_decisions(path: str | os.PathLike[str]) -> list[ReviewDecision]:
    """Read a decisions file saved from the review page; :class:`ReviewFileError` if malformed.

    Pairs are normalised so ``a`` sorts before ``b``; a pair listed twice with the same verdict
    counts once, with opposite verdicts is an error.
    """
    source = Path(path)
    return _parse_decisions(str(source), _read_json(source), DECISIONS_FORMAT)


class DecisionStore:
    """Confirmed decisions in a JSON file, kept across re-runs.

    Keyed by ``(path a, hash a, path b, hash b)``: when either image changes, its hash changes
    and the old verdict no longer applies, so the pair comes back for review.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._decisions: dict[PairKey, ReviewDecision] = {}
        if self.path.exists():
            for d in _parse_decisions(str(self.path), _read_json(self.path), STORE_FORMAT):
                self._decisions[d.key] = d

    def __len__(self) -> int:
        return len(self._decisions)

    def get(self, pair: ReviewPair) -> Decision | None:
        found = self._decisions.get(pair.key)
        return None if found is None else found.decision

    def record(self, decisions: Iterable[ReviewDecision]) -> int:
        """Add or overwrite decisions (the latest verdict wins); returns how many changed."""
        changed = 0
        now = datetime.now(UTC).isoformat(timespec="seconds")
        for d in decisions:
            if d.decided_at is None:
                d = ReviewDecision(d.a, d.a_dhash, d.b, d.b_dhash, d.decision, now)
            before = self._decisions.get(d.key)
            if before is None or before.decision != d.decision:
                changed += 1
            self._decisions[d.key] = d
        return changed

    def pending(self, pairs: Iterable[ReviewPair]) -> list[ReviewPair]:
        """The pairs nobody has decided yet (for their current hashes)."""
        return [p for p in pairs if p.key not in self._decisions]

    def edges(
        self, current: Mapping[str, str]
    ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """``(duplicates, not_duplicates)`` path pairs whose stored hashes match ``current``.

        ``current`` maps path to its dHash now; feed the result to ``find_clusters``.
        """
        dup: list[tuple[str, str]] = []
        not_dup: list[tuple[str, str]] = []
        for (a, a_hash, b, b_hash), d in sorted(self._decisions.items()):
            if current.get(a) != a_hash or current.get(b) != b_hash:
                continue
            (dup if d.decision == "duplicate" else not_dup).append((a, b))
        return dup, not_dup

    def save(self) -> Path:
        """Write the store atomically (a crash leaves the previous file intact)."""
        doc = {
            "format": STORE_FORMAT,
            "version": VERSION,
            "decisions": [self._decisions[k].to_json() for k in sorted(self._decisions)],
        }
        return _atomic_write(self.path, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
