"""Sample data for the domain-categorization recipe: a RECON data directory, made from a seed.

:func:`make_sample` writes, under ``root``::

    recon.db                          SQLite: documents (no recon_domain columns yet), catalogue
    concepts/<hash>/window_NNNN.json  a JSON list of {"name", "domain"} per window, 1..4 windows

and, with ``pg_dsn``, PeerTube's ``video`` and ``"videoChannel"`` tables in that PostgreSQL
database, one video per catalogue row with the same UUID.

The pass-1 shares come out at the operator's benchmarks: 94.8% ``assigned`` and 5.2% tied
among documents with concepts, 19.5% ``needs_reprocess`` among all (missing and empty
concept directories, windows with only legacy domains, windows with no domains). Videos
belong to channels: one mega channel (over 500 videos, when there are enough videos), one
of exactly 500 (not mega), and many small ones whose videos favour a few domains, so pass 2
breaks most ties by channel and leaves some ``tied_manual``. About 10% of catalogue paths
use PeerTube's 22-character short UUID, which :func:`~.logic.uuid_of` turns back into the
canonical one that ``video.uuid`` holds.

With ``problems=True`` a few window files are planted that cannot be read as a list of
concepts (truncated JSON, invalid UTF-8, an object, a directory); :class:`SampleInfo` lists
them. The expected outcomes in :class:`SampleInfo` come from applying :mod:`.logic` to the
files as written. The same arguments give byte-identical files.

Example::

    info = make_sample(tmp_path, documents=5000, seed=3)
    assert abs(info.assigned_share - 0.948) < 0.015
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import sqlite3
import uuid as uuidlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from .logic import (
    DOMAINS,
    MEGA_CHANNEL_VIDEOS,
    Catalogue,
    ChannelIndex,
    Status,
    count_domains,
    decide_pass1,
    decide_pass2,
    uuid_to_short,
)

__all__ = [
    "ASSIGNED_SHARE",
    "DB_FILE",
    "REPROCESS_SHARE",
    "TIED_SHARE",
    "PlantedProblem",
    "SampleInfo",
    "make_sample",
]

DB_FILE: Final = "recon.db"
CONCEPTS_DIR: Final = "concepts"
#: the operator's benchmarks (from the hand-written runbook): shares of documents with concepts ...
ASSIGNED_SHARE: Final = 0.948
TIED_SHARE: Final = 0.052
#: ... and of all documents
REPROCESS_SHARE: Final = 0.195

#: names of the pre-2025 taxonomy; pass 1 ignores them
LEGACY_DOMAINS: Final = (
    "Survival",
    "Homesteading",
    "Emergency Preparedness",
    "Health & Wellness",
    "Energy",
    "Agriculture",
    "General",
    "DIY",
)
HOSTS: Final = ("stream.example.net", "tube.example.org")

# The app's clock for the sample, so files never depend on when the sample was made.
_EPOCH = datetime(2025, 11, 1, tzinfo=UTC)

_TOPICS: Final[Mapping[str, tuple[str, ...]]] = {
    "Agriculture & Livestock": ("goat husbandry", "seed saving", "no-till beds", "chicken coop"),
    "Civil Organization": ("mutual aid", "town meetings", "neighbourhood watch", "barter rules"),
    "Communications": ("ham radio", "mesh networks", "antenna building", "signal mirrors"),
    "Food Systems": ("sourdough", "root cellars", "foraging", "community kitchens"),
    "Foundational Skills": ("knot tying", "basic math", "fire starting", "sewing"),
    "Logistics": ("supply caches", "inventory lists", "route planning", "load carrying"),
    "Medical": ("wound care", "splinting", "triage", "herbal remedies"),
    "Navigation": ("map and compass", "celestial navigation", "dead reckoning", "terrain"),
    "Operations": ("team drills", "checklists", "shift rotas", "incident command"),
    "Power Systems": ("solar panels", "battery banks", "wood gas", "micro hydro"),
    "Preservation & Storage": ("canning", "dehydrating", "smoking meat", "grain storage"),
    "Security": ("perimeter alarms", "locks", "night watch", "situational awareness"),
    "Shelter & Construction": ("timber framing", "cob walls", "roof repair", "insulation"),
    "Technology": ("raspberry pi", "offline wikis", "solar routers", "sensor networks"),
    "Tools & Equipment": ("axe sharpening", "hand saws", "forge work", "tool restoration"),
    "Vehicles": ("engine repair", "bicycle trailers", "tyre patching", "fuel storage"),
    "Water Systems": ("rainwater catchment", "well drilling", "filtration", "greywater"),
    "Wilderness Skills": ("tracking", "shelter building", "trapping", "bushcraft"),
}
_CHANNEL_WORDS: Final = (
    (
        *("Prairie", "Ridge", "Cedar", "Northwoods", "Hollow", "Stonefield", "Riverbend"),
        *("Granite", "Maple", "Copper", "Lantern", "Iron", "Willow", "Summit", "Harbor"),
    ),
    (
        *("Homestead", "Workshop", "Outpost", "Academy", "Garage", "Kitchen", "Radio", "Farm"),
        *("Collective", "Lab", "Trail", "Forge", "Cabin", "Co-op", "Guild", "Field Notes"),
    ),
)
#: PeerTube's own categories (1 Music .. 18 Food)
PEERTUBE_CATEGORIES: Final = tuple(range(1, 19))


@dataclass(frozen=True)
class PlantedProblem:
    """A window file planted so that it cannot be read; the document stays undecided."""

    hash: str
    path: Path
    problem: str  #: what is wrong with it, in words


@dataclass(frozen=True)
class SampleInfo:
    """What :func:`make_sample` wrote, and what passes 1 and 2 should make of it."""

    root: Path
    db_path: Path
    concepts_root: Path
    seed: int
    documents: int
    #: catalogue rows (documents that are videos)
    videos: int
    #: catalogue paths in PeerTube's short-UUID form
    short_uuid_paths: int
    #: distinct channels in the catalogue
    channels: int
    #: the channel with more than 500 videos (None when there are too few videos for one)
    mega_channel: str | None
    mega_videos: int
    #: a channel of exactly 500 videos, which is *not* a mega channel (None when too few)
    boundary_channel: str | None
    #: pass-1 status -> documents; undecided documents are not counted
    expected_pass1: Mapping[str, int]
    #: pass-2 status -> documents, over the ``tied_pass_1`` documents
    expected_pass2: Mapping[str, int]
    #: hash -> pass-1 status (None: undecided)
    statuses: Mapping[str, str | None] = field(repr=False)
    #: every planted unreadable window file, in hash order
    problems: tuple[PlantedProblem, ...] = ()
    pg_dsn: str | None = field(default=None, repr=False)
    #: rows written to PeerTube's ``video`` table (0 without ``pg_dsn``)
    pg_videos: int = 0

    @property
    def undecided(self) -> tuple[str, ...]:
        return tuple(sorted({p.hash for p in self.problems}))

    def _n(self, status: Status) -> int:
        return self.expected_pass1.get(status.value, 0)

    @property
    def with_concepts(self) -> int:
        """Documents with at least one valid domain (assigned or tied)."""
        return self._n(Status.ASSIGNED) + self._n(Status.TIED_PASS_1)

    @property
    def assigned_share(self) -> float:
        return self._n(Status.ASSIGNED) / max(self.with_concepts, 1)

    @property
    def tied_share(self) -> float:
        return self._n(Status.TIED_PASS_1) / max(self.with_concepts, 1)

    @property
    def reprocess_share(self) -> float:
        return self._n(Status.NEEDS_REPROCESS) / max(self.documents, 1)


def make_sample(
    root: Path,
    *,
    documents: int = 22_000,
    seed: int = 0,
    pg_dsn: str | None = None,
    reprocess_share: float = REPROCESS_SHARE,
    tied_share: float = TIED_SHARE,
    video_share: float = 0.92,
    short_uuid_share: float = 0.1,
    problems: bool = True,
) -> SampleInfo:
    """Write a RECON data directory under ``root`` (created if missing) and describe it.

    ``reprocess_share`` is a share of all documents, ``tied_share`` a share of those with
    concepts: change them to make a sample that fails the operator's 5-point gate.
    :class:`FileExistsError` is raised rather than overwrite ``recon.db`` or ``concepts/``,
    or PeerTube tables already in ``pg_dsn``'s database.
    """
    if documents < 0:
        raise ValueError(f"documents must be >= 0, got {documents}")
    for name, share in (
        ("reprocess_share", reprocess_share),
        ("tied_share", tied_share),
        ("video_share", video_share),
        ("short_uuid_share", short_uuid_share),
    ):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} must be within 0..1, got {share}")
    root = Path(root)
    db_path, concepts_root = root / DB_FILE, root / CONCEPTS_DIR
    clashes = [p.name for p in (db_path, concepts_root) if p.exists()]
    if clashes:
        raise FileExistsError(f"{root} already holds {', '.join(clashes)}; not overwriting")

    docs = _plan_documents(seed, documents, reprocess_share, tied_share)
    channels = _plan_channels(seed, docs, video_share, short_uuid_share)
    _plan_concepts(seed, docs, channels)
    planted = _plan_problems(seed, docs, concepts_root) if problems else []

    root.mkdir(parents=True, exist_ok=True)
    _write_db(db_path, seed, docs)
    _write_concepts(concepts_root, docs)
    pg_videos = _write_peertube(pg_dsn, seed, docs) if pg_dsn else 0

    # What the passes make of the files as written, not of the plan above.
    scans = {d.hash: count_domains(concepts_root / d.hash) for d in docs}
    outcomes = {h: decide_pass1(s) for h, s in scans.items()}
    catalogue = Catalogue.sqlite(db_path)
    index = ChannelIndex(concepts_root, catalogue, known=scans)
    pass2: Counter[str] = Counter()
    for h, o in outcomes.items():
        if o.status is Status.TIED_PASS_1:
            second = decide_pass2(scans[h], index.view(h)).status
            pass2[second.value if second else "undecided"] += 1
    pass1 = Counter(o.status.value for o in outcomes.values() if o.status is not None)
    sizes = catalogue.channels()
    mega = max(sizes, key=lambda c: sizes[c], default=None)
    if mega is not None and sizes[mega] <= MEGA_CHANNEL_VIDEOS:
        mega = None
    boundary = next((c for c, n in sizes.items() if n == MEGA_CHANNEL_VIDEOS), None)
    return SampleInfo(
        root=root,
        db_path=db_path,
        concepts_root=concepts_root,
        seed=seed,
        documents=len(docs),
        videos=len(catalogue),
        short_uuid_paths=sum(1 for d in docs if d.is_video and d.short_link),
        channels=len(sizes),
        mega_channel=mega,
        mega_videos=sizes[mega] if mega else 0,
        boundary_channel=boundary,
        expected_pass1=dict(sorted(pass1.items())),
        expected_pass2=dict(sorted(pass2.items())),
        statuses={h: (o.status.value if o.status else None) for h, o in outcomes.items()},
        problems=tuple(sorted(planted, key=lambda p: (p.hash, p.path))),
        pg_dsn=pg_dsn,
        pg_videos=pg_videos,
    )


# -- planning, all in memory ----------------------------------------------------------------


def _rng(seed: int, stream: str) -> random.Random:
    # One stream per concern; string seeds are hashed with SHA-512, independent of
    # PYTHONHASHSEED.
    return random.Random(f"handrail-domains:{seed}:{stream}")


@dataclass
class _Doc:
    index: int
    hash: str
    #: assigned | tied | missing | empty | legacy | blank
    kind: str
    title: str = ""
    is_video: bool = False
    channel: str | None = None
    uuid: str = ""
    host: str = HOSTS[0]
    short_link: bool = False
    #: window number -> JSON text (or bytes, for planted problems; None for a directory)
    windows: dict[int, str | bytes | None] = field(default_factory=dict)

    @property
    def path(self) -> str:
        link = uuid_to_short(self.uuid) if self.short_link else self.uuid
        return f"https://{self.host}/w/{link}"


def _split(total: int, shares: Sequence[float]) -> list[int]:
    """``total`` split by ``shares``; the rounding remainder goes to the first part."""
    parts = [round(total * s) for s in shares]
    parts[0] += total - sum(parts)
    return parts


def _plan_documents(seed: int, n: int, reprocess: float, tied: float) -> list[_Doc]:
    rng = _rng(seed, "kinds")
    n_reprocess = round(n * reprocess)
    n_tied = round((n - n_reprocess) * tied)
    missing, empty, legacy, blank = _split(n_reprocess, (0.45, 0.15, 0.30, 0.10))
    kinds = (
        ["assigned"] * (n - n_reprocess - n_tied)
        + ["tied"] * n_tied
        + ["missing"] * missing
        + ["empty"] * empty
        + ["legacy"] * legacy
        + ["blank"] * blank
    )
    rng.shuffle(kinds)
    prefix = f"handrail-domains:{seed}:".encode()
    return [_Doc(i, _sha256(prefix + str(i).encode()), kind) for i, kind in enumerate(kinds)]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class _Channel:
    name: str
    palette: list[str]
    weights: list[float]
    docs: list[_Doc] = field(default_factory=list)


def _plan_channels(
    seed: int, docs: list[_Doc], video_share: float, short_share: float
) -> dict[str, _Channel]:
    rng = _rng(seed, "channels")
    order = list(docs)
    rng.shuffle(order)
    videos = order[: round(len(docs) * video_share)]
    for d in videos:
        d.is_video = True
        d.uuid = str(uuidlib.UUID(int=rng.getrandbits(128), version=4))
        d.host = HOSTS[0] if rng.random() < 0.9 else HOSTS[1]
        d.short_link = rng.random() < short_share
    # A few catalogue rows lack a channel name (the crawler lost it).
    orphans = max(1, round(len(videos) * 0.003)) if len(videos) > 50 else 0
    rest = videos[orphans:]

    sizes: list[int] = []
    if len(rest) > 2 * MEGA_CHANNEL_VIDEOS:
        sizes.append(max(MEGA_CHANNEL_VIDEOS + 1, min(650 + rng.randrange(150), len(rest) // 2)))
    if len(rest) - sum(sizes) >= 4 * MEGA_CHANNEL_VIDEOS:
        sizes.append(MEGA_CHANNEL_VIDEOS)  # exactly at the threshold: not a mega channel
    left = len(rest) - sum(sizes)
    while left > 0:
        r = rng.random()
        if r < 0.55:
            s = rng.randint(1, 8)
        elif r < 0.9:
            s = rng.randint(9, 60)
        else:
            s = rng.randint(61, 400)
        s = min(s, left)
        sizes.append(s)
        left -= s

    channels: dict[str, _Channel] = {}
    first, second = _CHANNEL_WORDS
    start = 0
    for k, size in enumerate(sizes):
        name = f"{first[k % len(first)]} {second[(k // len(first)) % len(second)]}"
        if k >= len(first) * len(second):
            name += f" {k // (len(first) * len(second)) + 1}"
        if k == 0 and size > MEGA_CHANNEL_VIDEOS:
            palette = list(DOMAINS)  # the mega channel covers everything
            weights = [rng.uniform(0.5, 1.5) for _ in palette]
        else:
            palette = rng.sample(DOMAINS, rng.randint(2, 4))
            weights = [0.55, 0.25, 0.12, 0.08][: len(palette)]
        ch = _Channel(name, palette, weights, rest[start : start + size])
        for d in ch.docs:
            d.channel = name
        channels[name] = ch
        start += size
    return channels


def _plan_concepts(seed: int, docs: list[_Doc], channels: Mapping[str, _Channel]) -> None:
    rng = _rng(seed, "concepts")
    for d in docs:
        ch = channels.get(d.channel) if d.channel else None
        if ch is not None:
            palette, weights = ch.palette, ch.weights
        else:  # not a video, or no channel: a document of its own
            palette = rng.sample(DOMAINS, 3)
            weights = [0.6, 0.3, 0.1]
        theme = rng.choices(palette, weights)[0]
        d.title = f"{rng.choice(_TOPICS[theme]).capitalize()} {rng.choice(_TITLE_TAILS)}"
        if d.kind == "assigned":
            concepts = _concepts(rng, _assigned_counts(rng, theme, palette))
        elif d.kind == "tied":
            mode = "palette" if ch is not None and rng.random() < 0.7 else "off"
            concepts = _concepts(rng, _tied_counts(rng, palette, weights, mode))
        elif d.kind == "legacy":
            concepts = [
                {
                    "name": rng.choice(_TOPICS[theme]),
                    "domain": (
                        rng.choice(LEGACY_DOMAINS)
                        if rng.random() < 0.7
                        else rng.sample(LEGACY_DOMAINS, 2)
                    ),
                }
                for _ in range(rng.randint(1, 6))
            ]
        elif d.kind == "blank":
            concepts = [
                _blank_concept(rng, rng.choice(_TOPICS[theme])) for _ in range(rng.randint(0, 3))
            ]
        else:  # missing or empty: no windows
            continue
        if d.kind in ("assigned", "tied") and rng.random() < 0.004:
            # Odd items a reader must skip without failing: a bare string, a number domain.
            concepts.append(rng.choice(["untagged note", {"name": "misc", "domain": 7}]))
        for k, window in enumerate(_windows(rng, concepts), start=1):
            d.windows[k] = json.dumps(window, ensure_ascii=False)


_TITLE_TAILS: Final = (
    "for beginners",
    "in winter",
    "on a budget",
    "part 2",
    "field test",
    "Q&A",
    "deep dive",
    "mistakes to avoid",
)


def _assigned_counts(rng: random.Random, top: str, palette: list[str]) -> dict[str, int]:
    t = rng.choice((1, 2, 2, 3, 3, 3, 4, 4, 5, 6, 7, 8))
    counts = {top: t}
    if t > 1:
        for _ in range(rng.choice((0, 1, 1, 2, 2, 3))):
            d = rng.choice(palette) if rng.random() < 0.85 else rng.choice(DOMAINS)
            counts.setdefault(d, rng.randint(1, t - 1))
    return counts


def _tied_counts(
    rng: random.Random, palette: list[str], weights: list[float], mode: str
) -> dict[str, int]:
    k = 3 if rng.random() < 0.1 else 2
    off = [d for d in DOMAINS if d not in palette]
    if mode == "off" and len(off) >= k:
        tied = rng.sample(off, k)  # domains the channel's other videos hardly name
    else:
        tied = rng.sample(palette if len(palette) >= k else list(DOMAINS), k)
    t = rng.choice((1, 2, 2, 3, 3, 4, 5))
    counts = dict.fromkeys(tied, t)
    if t > 1:
        for _ in range(rng.choice((0, 1, 1, 2))):
            d = rng.choices(palette, weights)[0]
            counts.setdefault(d, rng.randint(1, t - 1))
    return counts


def _concepts(rng: random.Random, counts: Mapping[str, int]) -> list[Any]:
    """Concept objects naming each domain ``counts[domain]`` times, some as lists."""
    mentions = [d for d, n in counts.items() for _ in range(n)]
    rng.shuffle(mentions)
    out: list[Any] = []
    i = 0
    while i < len(mentions):
        d = mentions[i]
        r = rng.random()
        domain: str | list[str]
        if r < 0.2 and i + 1 < len(mentions) and mentions[i + 1] != d:
            domain = [d, mentions[i + 1]]
            i += 2
        elif r < 0.25:
            domain = [d]
            i += 1
        else:
            domain = d
            i += 1
        if isinstance(domain, list) and rng.random() < 0.1:
            domain.append(rng.choice(LEGACY_DOMAINS))  # a legacy name beside a valid one
        out.append({"name": rng.choice(_TOPICS[d]), "domain": domain})
    if rng.random() < 0.3:
        at = rng.randint(0, len(out))
        out.insert(at, {"name": "misc", "domain": rng.choice(LEGACY_DOMAINS)})
    if rng.random() < 0.05:
        out.insert(rng.randint(0, len(out)), _blank_concept(rng, "overview"))
    return out


def _blank_concept(rng: random.Random, name: str) -> dict[str, Any]:
    """A concept without a usable domain: null, empty, blank or no key at all."""
    kind = rng.randrange(4)
    if kind == 0:
        return {"name": name, "domain": None}
    if kind == 1:
        return {"name": name, "domain": ""}
    if kind == 2:
        return {"name": name, "domain": []}
    return {"name": name}


def _windows(rng: random.Random, concepts: list[Any]) -> list[list[Any]]:
    """Split the concepts into 1..4 consecutive windows (an empty list gives one window)."""
    if not concepts:
        return [[]]
    n = min(rng.choices((1, 2, 3, 4), (45, 30, 15, 10))[0], len(concepts))
    cuts = sorted(rng.sample(range(1, len(concepts)), n - 1)) if n > 1 else []
    bounds = [0, *cuts, len(concepts)]
    return [concepts[a:b] for a, b in itertools.pairwise(bounds)]


def _plan_problems(seed: int, docs: list[_Doc], concepts_root: Path) -> list[PlantedProblem]:
    rng = _rng(seed, "problems")
    pool = [d for d in docs if d.kind in ("assigned", "tied") and d.windows]
    kinds: list[tuple[str, str | bytes | None]] = [
        ("truncated JSON", '[{"name": "splinting", "domain": "Medi'),
        ("invalid UTF-8", b'[{"name": "caf\xe9 culture", "domain": "Food Systems"}]'),
        ("a JSON object, not a list", '{"concepts": [{"name": "canning"}]}'),
        ("a directory, not a file", None),
    ]
    out = []
    chosen = rng.sample(pool, min(len(pool), len(kinds)))
    for d, (problem, content) in zip(chosen, kinds[: len(chosen)], strict=True):
        k = max(d.windows) + 1
        d.windows[k] = content
        out.append(PlantedProblem(d.hash, concepts_root / d.hash / _window_name(k), problem))
    return out


def _window_name(k: int) -> str:
    return f"window_{k:04d}.json"


# -- writing -----------------------------------------------------------------------------


def _stamp(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S")  # SQLite's CURRENT_TIMESTAMP spelling


def _write_db(db_path: Path, seed: int, docs: list[_Doc]) -> None:
    rng = _rng(seed, "db")
    rows: list[tuple[Any, ...]] = []
    catalogue: list[tuple[Any, ...]] = []
    span = timedelta(days=540)
    for d in docs:
        discovered = _EPOCH - span + span * (d.index / max(len(docs), 1))
        discovered += timedelta(seconds=rng.randrange(3600))
        if d.kind == "missing":
            status = rng.choices(("complete", "failed", "catalogued"), (50, 30, 20))[0]
        elif d.kind == "empty":
            status = rng.choice(("complete", "failed"))
        else:
            status = "complete"
        processed = (
            None
            if status == "catalogued"
            else _stamp(discovered + timedelta(minutes=rng.randint(2, 600)))
        )
        error = "enrichment: upstream quota exceeded" if status == "failed" else None
        suffix = ".mp4" if d.is_video else ".pdf"
        slug = d.title.lower().replace("&", "and").replace(" ", "-")
        rows.append(
            (
                d.hash,
                status,
                slug + suffix,
                _stamp(discovered),
                d.host if d.is_video else "library",
                rng.randint(80_000, 900_000_000),
                processed,
                error,
            )
        )
        if d.is_video:
            catalogue.append((d.hash, d.path, d.channel, d.host, d.title))
    conn = sqlite3.connect(db_path)
    try:
        with conn:
            conn.execute(
                "CREATE TABLE documents (hash TEXT PRIMARY KEY, status TEXT NOT NULL, "
                "filename TEXT NOT NULL, discovered_at TEXT NOT NULL, source TEXT, "
                "size_bytes INTEGER, processed_at TEXT, error TEXT)"
            )
            conn.execute("CREATE INDEX idx_documents_status ON documents(status)")
            conn.execute(
                "CREATE TABLE catalogue (hash TEXT PRIMARY KEY REFERENCES documents(hash), "
                "path TEXT NOT NULL, channel TEXT, source TEXT, title TEXT)"
            )
            conn.executemany("INSERT INTO documents VALUES (?,?,?,?,?,?,?,?)", rows)
            conn.executemany("INSERT INTO catalogue VALUES (?,?,?,?,?)", catalogue)
    finally:
        conn.close()


def _write_concepts(concepts_root: Path, docs: list[_Doc]) -> None:
    concepts_root.mkdir()
    for d in docs:
        if d.kind == "missing":
            continue
        folder = concepts_root / d.hash
        folder.mkdir()
        for k, content in d.windows.items():
            path = folder / _window_name(k)
            if content is None:
                path.mkdir()
            elif isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_bytes(content.encode("utf-8"))


def _write_peertube(dsn: str, seed: int, docs: list[_Doc]) -> int:
    import psycopg

    rng = _rng(seed, "peertube")
    videos = [d for d in docs if d.is_video]
    names = list(dict.fromkeys(d.channel for d in videos if d.channel))
    channel_id = {name: i for i, name in enumerate(["Main root channel", *names], start=1)}
    with psycopg.connect(dsn) as conn:
        found = conn.execute(
            "SELECT to_regclass('video') IS NOT NULL OR to_regclass('\"videoChannel\"') IS NOT NULL"
        ).fetchone()
        if found and found[0]:
            raise FileExistsError("the PostgreSQL database already has PeerTube tables")
        conn.execute(
            'CREATE TABLE "videoChannel" (id serial PRIMARY KEY, name varchar(120) NOT NULL)'
        )
        conn.execute(
            "CREATE TABLE video (id serial PRIMARY KEY, uuid uuid NOT NULL UNIQUE, "
            "name varchar(255) NOT NULL, category integer, "
            '"channelId" integer NOT NULL REFERENCES "videoChannel"(id), '
            '"createdAt" timestamptz NOT NULL, "updatedAt" timestamptz NOT NULL)'
        )
        with conn.cursor().copy('COPY "videoChannel" (id, name) FROM STDIN') as copy:
            for name, i in channel_id.items():
                copy.write_row((i, name))
        conn.execute(
            "SELECT setval(pg_get_serial_sequence('\"videoChannel\"', 'id'), %s)",
            (len(channel_id),),
        )
        with conn.cursor().copy(
            'COPY video (uuid, name, category, "channelId", "createdAt", "updatedAt") FROM STDIN'
        ) as copy:
            for d in videos:
                created = _EPOCH - timedelta(days=600) + timedelta(minutes=7 * d.index)
                category = rng.choice(PEERTUBE_CATEGORIES) if rng.random() < 0.15 else None
                copy.write_row(
                    (
                        d.uuid,
                        d.title,
                        category,
                        channel_id[d.channel] if d.channel else 1,
                        created,
                        created + timedelta(hours=rng.randint(0, 48)),
                    )
                )
    return len(videos)
