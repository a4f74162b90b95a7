"""Domain categorization of RECON documents: the rules of passes 1 and 2 as typed functions.

Each document ``hash`` has its concepts in ``concepts/<hash>/window_NNNN.json``: a JSON list
of concept objects whose ``domain`` is a string or a list of strings. Only the 18 names of
:data:`DOMAINS` count; anything else is a legacy name and is ignored.

    count_domains(dir)          -> ConceptScan   read one document's windows; never raises
    decide_pass1(scan)          -> Outcome       needs_reprocess | assigned | tied_pass_1
    ChannelIndex(...).view(h)   -> ChannelView   the channel's other videos, counted once
    decide_pass2(scan, view)    -> Outcome       assigned | tied_pass_2 | tied_manual
    pass1(...), pass2(...)      -> compute functions for :class:`handrail.Backfill`

A document whose window files cannot all be read is *undecided*: its outcome has no status,
the compute functions leave its row alone and record why in ``undecided``, so one corrupt
file neither aborts a batch nor sends a document to the destructive reprocess step.

Example::

    scan = count_domains(Path("data/concepts") / doc_hash)
    outcome = decide_pass1(scan)  # Outcome(status=Status.ASSIGNED, domain="Medical", ...)
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from ...errors import ResourceError

__all__ = [
    "CATEGORY_OF",
    "COLUMNS",
    "DOMAINS",
    "DOMAIN_OF",
    "MEGA_CHANNEL_VIDEOS",
    "PUSHABLE",
    "Catalogue",
    "ChannelIndex",
    "ChannelView",
    "ConceptProblem",
    "ConceptScan",
    "Outcome",
    "Pass1Compute",
    "Pass2Compute",
    "Status",
    "Video",
    "break_tie",
    "count_domains",
    "decide_pass1",
    "decide_pass2",
    "pass1",
    "pass2",
    "short_to_uuid",
    "uuid_of",
    "uuid_to_short",
]

#: the 18 domains, in the order of their PeerTube category ids 100..117
DOMAINS: Final[tuple[str, ...]] = (
    "Agriculture & Livestock",
    "Civil Organization",
    "Communications",
    "Food Systems",
    "Foundational Skills",
    "Logistics",
    "Medical",
    "Navigation",
    "Operations",
    "Power Systems",
    "Preservation & Storage",
    "Security",
    "Shelter & Construction",
    "Technology",
    "Tools & Equipment",
    "Vehicles",
    "Water Systems",
    "Wilderness Skills",
)
#: domain -> PeerTube category id
CATEGORY_OF: Final[Mapping[str, int]] = {d: 100 + i for i, d in enumerate(DOMAINS)}
#: PeerTube category id -> domain
DOMAIN_OF: Final[Mapping[int, str]] = {i: d for d, i in CATEGORY_OF.items()}
_RANK: Final[Mapping[str, int]] = {d: i for i, d in enumerate(DOMAINS)}

#: a channel with more videos than this in the catalogue is a "mega channel": its other
#: videos cover everything, so they cannot break a tie
MEGA_CHANNEL_VIDEOS: Final = 500

#: the columns the two passes write
COLUMNS: Final[tuple[str, str, str]] = (
    "recon_domain",
    "recon_domain_status",
    "recon_domain_assigned_at",
)

WINDOW_RE: Final = re.compile(r"window_\d+\.json")


class Status(StrEnum):
    """``recon_domain_status`` values, in the order a document can reach them."""

    #: no concepts, or only legacy domains: the document must be enriched again
    NEEDS_REPROCESS = "needs_reprocess"
    #: one domain has strictly the most concepts
    ASSIGNED = "assigned"
    #: two or more domains share the top count; pass 2 looks at the channel
    TIED_PASS_1 = "tied_pass_1"
    #: the channel's other videos favour exactly one of the tied domains
    TIED_PASS_2 = "tied_pass_2"
    #: still tied (mega channel, no channel, or the channel is tied too): a human decides;
    #: ``recon_domain`` holds a deterministic fallback for display only
    TIED_MANUAL = "tied_manual"
    #: a human picked the domain on the review queue
    MANUAL_ASSIGNED = "manual_assigned"


#: statuses whose ``recon_domain`` is a decision, i.e. what the push sends to PeerTube
PUSHABLE: Final = frozenset({Status.ASSIGNED, Status.TIED_PASS_2, Status.MANUAL_ASSIGNED})


# -- reading concepts ---------------------------------------------------------------------


@dataclass(frozen=True)
class ConceptProblem:
    """A window file (or concept directory) that could not be read as a list of concepts."""

    path: Path
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


@dataclass(frozen=True)
class ConceptScan:
    """The domain counts of one document, and everything odd met while reading them."""

    path: Path
    #: whether the concept directory exists
    exists: bool = False
    #: window files parsed as lists
    windows: int = 0
    #: concept objects (and other list items) seen in them
    concepts: int = 0
    #: one of the 18 domains -> concepts naming it (a concept counts once per domain)
    counts: Counter[str] = field(default_factory=Counter)
    #: names that are not among the 18 -> concepts naming them (ignored)
    legacy: Counter[str] = field(default_factory=Counter)
    #: list items that are not objects, or whose ``domain`` is not a string or a list
    skipped: int = 0
    #: files that could not be read; any makes the document undecided
    problems: tuple[ConceptProblem, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def top(self) -> tuple[str, ...]:
        """The domains sharing the highest count, in :data:`DOMAINS` order (empty: none)."""
        best = max(self.counts.values(), default=0)
        if best <= 0:
            return ()
        return tuple(
            sorted((d for d, n in self.counts.items() if n == best), key=_RANK.__getitem__)
        )


def _domain_names(value: Any) -> list[str] | None:
    """The names a concept's ``domain`` holds (None: not a string, list of strings or null)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def count_domains(concept_dir: Path) -> ConceptScan:
    """Count the domains over every ``window_NNNN.json`` of one document's directory.

    Never raises for bad data: a missing directory gives ``exists=False`` and no counts; an
    unreadable file, invalid JSON or UTF-8, or a file that is not a JSON list is reported in
    ``problems`` and the other files are still counted. Names are compared after stripping
    surrounding whitespace; a name repeated inside one concept's list counts once.
    """
    concept_dir = Path(concept_dir)
    try:
        with os.scandir(concept_dir) as it:
            names = sorted(e.name for e in it if WINDOW_RE.fullmatch(e.name))
    except FileNotFoundError:
        return ConceptScan(concept_dir)
    except NotADirectoryError:
        return ConceptScan(
            concept_dir, True, problems=(ConceptProblem(concept_dir, "not a directory"),)
        )
    except OSError as e:
        problem = ConceptProblem(concept_dir, f"cannot list: {e.strerror or e}")
        return ConceptScan(concept_dir, True, problems=(problem,))

    counts: Counter[str] = Counter()
    legacy: Counter[str] = Counter()
    problems: list[ConceptProblem] = []
    windows = concepts = skipped = 0
    for name in names:
        path = concept_dir / name
        try:
            raw = path.read_bytes()
        except OSError as e:
            problems.append(ConceptProblem(path, f"unreadable: {e.strerror or e}"))
            continue
        try:
            data = json.loads(raw)
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
            problems.append(ConceptProblem(path, f"not valid JSON: {e}"))
            continue
        if not isinstance(data, list):
            kind = type(data).__name__
            problems.append(ConceptProblem(path, f"a JSON {kind}, not a list of concepts"))
            continue
        windows += 1
        for item in data:
            concepts += 1
            found = _domain_names(item.get("domain")) if isinstance(item, dict) else None
            if found is None:
                skipped += 1
                continue
            for d in dict.fromkeys(n.strip() for n in found):
                if d in _RANK:
                    counts[d] += 1
                elif d:
                    legacy[d] += 1
    return ConceptScan(
        concept_dir, True, windows, concepts, counts, legacy, skipped, tuple(problems)
    )


# -- decisions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What a pass decides for one document."""

    #: None: undecided (unreadable window files); leave the row as it is
    status: Status | None
    #: the domain (for ``tied_manual`` the display fallback), None when there is none
    domain: str | None = None
    #: the domains sharing the top count, in :data:`DOMAINS` order, when there was a tie
    tied: tuple[str, ...] = ()
    #: why, in words
    reason: str = ""

    def columns(self, assigned_at: str) -> dict[str, Any]:
        """The row values for :data:`COLUMNS` (raises on an undecided outcome)."""
        if self.status is None:
            raise ValueError("an undecided outcome has no column values")
        return {
            "recon_domain": self.domain,
            "recon_domain_status": self.status.value,
            "recon_domain_assigned_at": assigned_at,
        }


def _undecided(scan: ConceptScan) -> Outcome:
    return Outcome(None, reason=f"{len(scan.problems)} unreadable window file(s)")


def decide_pass1(scan: ConceptScan) -> Outcome:
    """Pass 1: no valid domain -> needs_reprocess; one top domain -> assigned; else tied."""
    if scan.problems:
        return _undecided(scan)
    top = scan.top()
    if not top:
        if not scan.exists:
            why = "no concept directory"
        elif scan.legacy:
            why = "only legacy domains"
        else:
            why = "no concepts with a domain"
        return Outcome(Status.NEEDS_REPROCESS, reason=why)
    if len(top) == 1:
        return Outcome(Status.ASSIGNED, top[0], reason=f"{scan.counts[top[0]]} concept(s)")
    n = scan.counts[top[0]]
    return Outcome(Status.TIED_PASS_1, tied=top, reason=f"{len(top)} domains tied at {n}")


def break_tie(tied: Sequence[str], others: Mapping[str, int]) -> tuple[str | None, str]:
    """``(winner, fallback)`` for a tie, given the domain counts of the channel's other videos.

    The winner is the one tied domain whose channel count is strictly the highest (None if
    there is no such domain). The fallback, for display while a human decides, is the
    alphabetically first of the tied domains sharing the highest channel count.
    """
    if not tied:
        raise ValueError("break_tie needs at least one tied domain")
    best = max(others.get(d, 0) for d in tied)
    leaders = [d for d in tied if others.get(d, 0) == best]
    winner = leaders[0] if len(leaders) == 1 and best > 0 else None
    return winner, min(leaders)


@dataclass(frozen=True)
class ChannelView:
    """A document's channel as pass 2 sees it."""

    #: None: the document is not a catalogued video, or its video has no channel
    channel: str | None
    #: videos of the channel in the catalogue (0 without a channel)
    videos: int = 0
    #: more than :data:`MEGA_CHANNEL_VIDEOS` videos
    mega: bool = False
    #: domain counts over the channel's *other* videos (empty for a mega channel)
    others: Mapping[str, int] = field(default_factory=dict)


def decide_pass2(scan: ConceptScan, view: ChannelView) -> Outcome:
    """Pass 2 for a ``tied_pass_1`` document: recount, then let the channel break the tie."""
    if scan.problems:
        return _undecided(scan)
    first = decide_pass1(scan)
    if first.status is not Status.TIED_PASS_1:
        return first  # the concepts changed since pass 1: needs_reprocess or assigned now
    tied = first.tied
    if view.channel is None:
        return Outcome(Status.TIED_MANUAL, min(tied), tied, "not a catalogued video with a channel")
    if view.mega:
        why = f"mega channel {view.channel!r} ({view.videos} videos)"
        return Outcome(Status.TIED_MANUAL, min(tied), tied, why)
    winner, fallback = break_tie(tied, view.others)
    shown = ", ".join(f"{d}={view.others.get(d, 0)}" for d in tied)
    if winner is not None:
        return Outcome(Status.TIED_PASS_2, winner, tied, f"channel {view.channel!r}: {shown}")
    return Outcome(Status.TIED_MANUAL, fallback, tied, f"channel {view.channel!r} tied: {shown}")


# -- the catalogue and channels ---------------------------------------------------------------

_FULL_UUID: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
#: PeerTube's short UUIDs: the npm package short-uuid with the Flickr base-58 alphabet,
#: left-padded with its first character to 22 characters
_B58: Final = "123456789abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ"
_B58_INDEX: Final[Mapping[str, int]] = {c: i for i, c in enumerate(_B58)}
_SHORT_UUID: Final = re.compile(f"[{_B58}]{{22}}")


def short_to_uuid(short: str) -> str | None:
    """The canonical UUID of a PeerTube short UUID (None if it is not one)."""
    if not _SHORT_UUID.fullmatch(short):
        return None
    n = 0
    for c in short:
        n = n * 58 + _B58_INDEX[c]
    if n >= 1 << 128:
        return None
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid_to_short(uuid: str) -> str:
    """PeerTube's short form of a canonical UUID (what ``/w/<id>`` links show)."""
    if not _FULL_UUID.fullmatch(uuid):
        raise ValueError(f"not a UUID: {uuid!r}")
    n = int(uuid.replace("-", ""), 16)
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58[r])
    return "".join(reversed(out)).rjust(22, _B58[0])


def uuid_of(path: str | None) -> str | None:
    """The canonical (lower-case, dashed) UUID of a video path ending in ``/w/<uuid>``.

    PeerTube links show either the canonical UUID or its 22-character short form; both are
    accepted, since PeerTube's ``video.uuid`` column holds the canonical one. A query string,
    fragment or trailing slash is ignored. None when the path does not name a video.
    """
    if not path or "/w/" not in path:
        return None
    tail = path.rsplit("/w/", 1)[1].split("?", 1)[0].split("#", 1)[0].rstrip("/")
    if _FULL_UUID.fullmatch(tail):
        return tail.lower()
    return short_to_uuid(tail)


@dataclass(frozen=True)
class Video:
    """One row of RECON's ``catalogue`` table."""

    hash: str
    path: str
    channel: str | None
    source: str | None = None

    @property
    def uuid(self) -> str | None:
        return uuid_of(self.path)


class Catalogue:
    """Documents that are videos, by hash and by channel.

    ``Catalogue(videos)`` holds them in memory; :meth:`sqlite` reads a ``catalogue`` table
    on first use (so a runbook can build the compute function before the database exists).
    A hash listed twice keeps its first row; an empty channel name counts as no channel.
    """

    def __init__(self, videos: Iterable[Video] = ()) -> None:
        self._source: Path | None = None
        self._loader: Callable[[], Iterable[Video]] | None = None
        self._by_hash: dict[str, Video] = {}
        self._by_channel: dict[str, list[str]] = {}
        self._add(videos)

    @classmethod
    def sqlite(cls, db_path: Path, *, table: str = "catalogue") -> Catalogue:
        """A catalogue read from ``table`` (hash, path, channel, source) when first used."""
        cat = cls()
        cat._source = Path(db_path)
        cat._loader = lambda: _read_catalogue(Path(db_path), table)
        return cat

    def _add(self, videos: Iterable[Video]) -> None:
        for v in videos:
            if v.hash in self._by_hash:
                continue
            if not v.channel:
                v = Video(v.hash, v.path, None, v.source)
            self._by_hash[v.hash] = v
            if v.channel is not None:
                self._by_channel.setdefault(v.channel, []).append(v.hash)

    def _ready(self) -> None:
        if self._loader is not None:
            loader, self._loader = self._loader, None
            self._add(loader())

    def get(self, doc_hash: str) -> Video | None:
        self._ready()
        return self._by_hash.get(doc_hash)

    def channel_hashes(self, channel: str) -> tuple[str, ...]:
        """The hashes of a channel's videos, in catalogue order."""
        self._ready()
        return tuple(self._by_channel.get(channel, ()))

    def channels(self) -> dict[str, int]:
        """Channel -> number of videos."""
        self._ready()
        return {c: len(h) for c, h in self._by_channel.items()}

    def __len__(self) -> int:
        self._ready()
        return len(self._by_hash)

    def __iter__(self) -> Iterator[Video]:
        self._ready()
        return iter(list(self._by_hash.values()))

    def __repr__(self) -> str:
        if self._source is not None:
            return f"Catalogue.sqlite({str(self._source)!r})"
        return f"Catalogue(<{len(self._by_hash)} videos>)"


def _read_catalogue(db_path: Path, table: str) -> list[Video]:
    if not db_path.is_file():
        raise ResourceError(f"no catalogue database at {db_path}")
    uri = db_path.resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    try:
        ident = '"' + table.replace('"', '""') + '"'
        rows = conn.execute(
            f"SELECT hash, path, channel, source FROM {ident} ORDER BY rowid"
        ).fetchall()
    except sqlite3.Error as e:
        raise ResourceError(f"cannot read table {table!r} of {db_path}: {e}") from e
    finally:
        conn.close()
    return [Video(str(h), str(p or ""), c, s) for h, p, c, s in rows]


class ChannelIndex:
    """Channel views for pass 2, reading each channel's concepts at most once.

    The first document of a channel sums the counts of all the channel's videos; each
    document then subtracts its own counts. Mega channels are never read. Problems met in
    other videos' windows do not block a decision (their readable windows still count) and
    are kept in ``problems``. ``known`` holds scans already made (e.g. by the caller's own
    pass over every document); other documents are read from disk. The cache lives as long
    as the index: build a new one after the concepts change.
    """

    def __init__(
        self,
        concepts_root: Path,
        catalogue: Catalogue,
        *,
        mega_over: int = MEGA_CHANNEL_VIDEOS,
        known: Mapping[str, ConceptScan] | None = None,
    ) -> None:
        self.concepts_root = Path(concepts_root)
        self.catalogue = catalogue
        self.mega_over = mega_over
        self._known = known or {}
        self._totals: dict[str, tuple[Counter[str], dict[str, Counter[str]]]] = {}
        #: hash -> problems met while reading a channel's videos
        self.problems: dict[str, tuple[ConceptProblem, ...]] = {}

    def _channel(self, channel: str) -> tuple[Counter[str], dict[str, Counter[str]]]:
        if channel not in self._totals:
            total: Counter[str] = Counter()
            own: dict[str, Counter[str]] = {}
            for h in self.catalogue.channel_hashes(channel):
                scan = self._known.get(h) or count_domains(self.concepts_root / h)
                if scan.problems:
                    self.problems[h] = scan.problems
                own[h] = scan.counts
                total.update(scan.counts)
            self._totals[channel] = (total, own)
        return self._totals[channel]

    def view(self, doc_hash: str) -> ChannelView:
        video = self.catalogue.get(doc_hash)
        if video is None or video.channel is None:
            return ChannelView(None)
        size = len(self.catalogue.channel_hashes(video.channel))
        if size > self.mega_over:
            return ChannelView(video.channel, size, mega=True)
        total, own = self._channel(video.channel)
        others = total - own.get(doc_hash, Counter())
        return ChannelView(video.channel, size, others=dict(others))


# -- Backfill compute functions ---------------------------------------------------------------


class Pass1Compute:
    """``compute(row)`` for pass 1 (see :func:`pass1`)."""

    #: statuses pass 1 may (re)decide; later passes' and humans' decisions are left alone
    acts_on: Final = frozenset({None, Status.NEEDS_REPROCESS, Status.ASSIGNED, Status.TIED_PASS_1})

    def __init__(self, concepts_root: Path, *, assigned_at: str) -> None:
        self.concepts_root = Path(concepts_root)
        self.assigned_at = assigned_at
        #: hash -> the problems that left that document undecided
        self.undecided: dict[str, tuple[ConceptProblem, ...]] = {}

    def outcome(self, doc_hash: str) -> Outcome:
        scan = count_domains(self.concepts_root / doc_hash)
        if scan.problems:
            self.undecided[doc_hash] = scan.problems
        else:
            self.undecided.pop(doc_hash, None)
        return decide_pass1(scan)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any] | None:
        if row.get("recon_domain_status") not in self.acts_on:
            return None
        out = self.outcome(str(row["hash"]))
        return _row_values(row, out, self.assigned_at)

    def __repr__(self) -> str:
        # Stable across processes: Backfill puts it into the plan hash.
        return f"pass1({str(self.concepts_root)!r}, assigned_at={self.assigned_at!r})"


class Pass2Compute:
    """``compute(row)`` for pass 2 (see :func:`pass2`)."""

    acts_on: Final = frozenset({Status.TIED_PASS_1})

    def __init__(
        self,
        concepts_root: Path,
        catalogue: Catalogue,
        *,
        assigned_at: str,
        mega_over: int = MEGA_CHANNEL_VIDEOS,
    ) -> None:
        self.concepts_root = Path(concepts_root)
        self.assigned_at = assigned_at
        self.channels = ChannelIndex(concepts_root, catalogue, mega_over=mega_over)
        self.undecided: dict[str, tuple[ConceptProblem, ...]] = {}

    def outcome(self, doc_hash: str) -> Outcome:
        scan = count_domains(self.concepts_root / doc_hash)
        if scan.problems:
            self.undecided[doc_hash] = scan.problems
            return _undecided(scan)
        self.undecided.pop(doc_hash, None)
        if len(scan.top()) < 2:
            return decide_pass1(scan)  # no need to read the channel
        return decide_pass2(scan, self.channels.view(doc_hash))

    def __call__(self, row: dict[str, Any]) -> dict[str, Any] | None:
        if row.get("recon_domain_status") not in self.acts_on:
            return None
        return _row_values(row, self.outcome(str(row["hash"])), self.assigned_at)

    def __repr__(self) -> str:
        return (
            f"pass2({str(self.concepts_root)!r}, {self.channels.catalogue!r}, "
            f"assigned_at={self.assigned_at!r}, mega_over={self.channels.mega_over})"
        )


def _row_values(row: Mapping[str, Any], out: Outcome, assigned_at: str) -> dict[str, Any] | None:
    if out.status is None:
        return None
    if row.get("recon_domain_status") == out.status.value and row.get("recon_domain") == out.domain:
        return None  # same decision as before: keep its original stamp
    return out.columns(assigned_at)


def pass1(concepts_root: Path, *, assigned_at: str) -> Pass1Compute:
    """The Backfill ``compute`` of pass 1 over ``concepts_root/<hash>/``.

    It returns the three :data:`COLUMNS` (``recon_domain_assigned_at`` = ``assigned_at``,
    a timestamp the runbook fixes, so plan and apply agree), or None to leave the row alone:
    the row was decided by pass 2 or a human, the decision is unchanged, or the document is
    undecided (recorded in ``.undecided``).
    """
    return Pass1Compute(concepts_root, assigned_at=assigned_at)


def pass2(
    concepts_root: Path,
    catalogue: Catalogue,
    *,
    assigned_at: str,
    mega_over: int = MEGA_CHANNEL_VIDEOS,
) -> Pass2Compute:
    """The Backfill ``compute`` of pass 2 (the tiebreaker) for ``tied_pass_1`` rows.

    Other rows are left alone. Channels come from ``catalogue`` (e.g.
    ``Catalogue.sqlite(db_path)``); each channel's concepts are read once per compute object.
    """
    return Pass2Compute(concepts_root, catalogue, assigned_at=assigned_at, mega_over=mega_over)
