"""Sample data for the YTV2 merge: two diverged SQLite copies of the content database.

:func:`make_sample` writes, under ``root``::

    processing.db     the NAS copy: where videos are indexed and summaries (re)generated
    dashboard.db      the web UI copy: where videos are deleted, titles fixed, curation done
    last_sync.json    {"last_sync": "<ISO 8601 UTC>", ...}: when the copies were last equal

Both databases hold ``content`` (``video_id`` is the natural key but not unique) and
``content_summaries`` (``content_id`` is ``content.id``; several revisions per type for
some videos), with timestamps as text in three spellings (``...Z``, ``...+05:30``, naive
``YYYY-MM-DD HH:MM:SS``). Since the sync, these diverged, and :class:`SampleInfo` lists
each planted case:

* ``deleted_on_dashboard``: gone from the dashboard, indexed before the sync (about 2%;
  the dashboard kept the summaries of half of them, now orphans);
* ``new_on_processing``: only on processing, indexed after the sync (about 3%);
* ``curated``: exactly :data:`CURATED` videos with subcategory and subcategories_json set on
  the dashboard (and category changed for about half); processing has none for two thirds
  of them and stale values for the rest;
* ``duplicates``: two rows (two ``id``) for one video_id with different ``indexed_at``
  (about 1%): half in both copies since before the sync, half only on processing (a
  re-index after the sync, with a new summary); one pair's later row has the lexically
  smaller timestamp text, so only a parsed comparison picks it;
* ``malformed``: key_topics, analysis and (on curated rows) subcategories_json text that
  is not JSON (truncated, Python repr, trailing comma, NaN); ``plain_text``: analysis held
  as prose; both end up as ``{"raw_text": ...}``;
* edits since the sync: ``title_edited`` (fixed on the dashboard), ``summary_regenerated``
  (a new revision on processing) and ``audio_added`` (has_audio 0 -> 1 on processing).

A curated video is never a duplicate, and every malformed or prose cell is in the row the
merge takes the column from (see :mod:`.rules`), so each surfaces in the merged result.
The same arguments give byte-identical files.

Example::

    info = make_sample(tmp_path, videos=3000, seed=0)
    assert len(info.curated) == 67
    rows = expected_merge(info.processing, info.dashboard, info.last_sync)
"""

from __future__ import annotations

import copy
import json
import random
import sqlite3
import string
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Final

from .rules import SOURCE_COLUMNS, SUMMARY_SOURCE_COLUMNS

__all__ = [
    "CURATED",
    "DASHBOARD_DB",
    "FILES",
    "LAST_SYNC_FILE",
    "MIN_VIDEOS",
    "PROCESSING_DB",
    "SQLITE_SCHEMA",
    "SampleInfo",
    "make_sample",
]

PROCESSING_DB: Final = "processing.db"
DASHBOARD_DB: Final = "dashboard.db"
LAST_SYNC_FILE: Final = "last_sync.json"
#: every file :func:`make_sample` writes
FILES: Final = (PROCESSING_DB, DASHBOARD_DB, LAST_SYNC_FILE)

#: the curated records on the dashboard, whatever the number of videos
CURATED: Final = 67
MIN_VIDEOS: Final = 200
NEW_SHARE: Final = 0.03
DELETED_SHARE: Final = 0.02
DUPLICATE_SHARE: Final = 0.01
TITLE_EDIT_SHARE: Final = 0.02
SUMMARY_REGEN_SHARE: Final = 0.03
AUDIO_ADDED_SHARE: Final = 0.02
#: per column (key_topics, analysis), at least 4 each so every kind appears
MALFORMED_SHARE: Final = 0.005
MALFORMED_CURATED: Final = 5
PLAIN_TEXT_SHARE: Final = 0.03

#: the schema of both copies, as the YTV2 apps created it
SQLITE_SCHEMA: Final = """\
CREATE TABLE content (
    id TEXT PRIMARY KEY,
    video_id TEXT,
    title TEXT,
    canonical_url TEXT,
    thumbnail_url TEXT,
    published_at TEXT,
    indexed_at TEXT,
    duration_seconds INTEGER,
    has_audio INTEGER,
    channel_name TEXT,
    category TEXT,
    key_topics TEXT,
    subcategory TEXT,
    subcategories_json TEXT,
    summary TEXT,
    analysis TEXT
);
CREATE INDEX idx_content_video_id ON content (video_id);
CREATE TABLE content_summaries (
    id INTEGER PRIMARY KEY,
    content_id TEXT REFERENCES content (id),
    summary_text TEXT,
    summary_type TEXT DEFAULT 'comprehensive',
    created_at TEXT
);
CREATE INDEX idx_summaries_content_id ON content_summaries (content_id);
"""

# The sample's clock: every time lies within a year before the seed-chosen sync instant
# or a few days after it, so files never depend on when the sample was made.
_EPOCH = datetime(2025, 6, 1, tzinfo=UTC)
_AFTER_SYNC = timedelta(days=5)


@dataclass(frozen=True)
class SampleInfo:
    """What :func:`make_sample` wrote and planted, so tests can check a merge against it."""

    root: Path
    processing: Path  #: root / processing.db
    dashboard: Path  #: root / dashboard.db
    last_sync_file: Path  #: root / last_sync.json
    last_sync: datetime  #: aware, UTC, whole seconds
    #: "videos" (distinct video_ids in either copy), "processing.content",
    #: "processing.content_summaries", "dashboard.content", "dashboard.content_summaries",
    #: "dashboard.orphan_summaries", "merged.content" (videos minus deleted)
    counts: Mapping[str, int]
    deleted_on_dashboard: frozenset[str]
    new_on_processing: frozenset[str]
    curated: frozenset[str]  #: exactly :data:`CURATED`
    #: the curated videos whose processing row has stale subcategory values
    curated_stale: frozenset[str]
    #: every video with two rows in a copy: ``duplicates_both | duplicates_processing``
    duplicates: frozenset[str]
    duplicates_both: frozenset[str]  #: two rows in both copies (since before the sync)
    duplicates_processing: frozenset[str]  #: a second row on processing only (re-index)
    #: (video_id, column) of cells holding garbled JSON, sorted
    malformed: tuple[tuple[str, str], ...]
    #: (video_id, "analysis") of analysis held as prose, sorted
    plain_text: tuple[tuple[str, str], ...]
    title_edited: frozenset[str]
    summary_regenerated: frozenset[str]
    audio_added: frozenset[str]

    @property
    def raw_text_cells(self) -> frozenset[tuple[str, str]]:
        """Every (video_id, source column) the merge keeps as ``{"raw_text": ...}``."""
        return frozenset(self.malformed) | frozenset(self.plain_text)


def make_sample(root: Path, *, videos: int = 3000, seed: int = 0) -> SampleInfo:
    """Write the two diverged copies and ``last_sync.json`` into ``root`` and describe them.

    ``videos`` is the number of distinct video_ids across both copies (at least
    :data:`MIN_VIDEOS`). ``root`` is created if missing; :class:`FileExistsError` is raised
    rather than overwrite any of :data:`FILES` already there.
    """
    if videos < MIN_VIDEOS:
        raise ValueError(f"videos must be >= {MIN_VIDEOS}, got {videos}")
    root = Path(root)
    clashes = [n for n in FILES if (root / n).exists()]
    if clashes:
        raise FileExistsError(f"{root} already holds {', '.join(clashes)}; not overwriting")

    world = random.Random(_seed(seed, "world"))
    last_sync = _EPOCH + timedelta(days=world.randint(0, 120), seconds=world.randint(0, 86_399))
    plan = _Plan(_rng(seed, "plan"), _video_ids(_rng(seed, "ids"), videos))
    b = _Builder(_rng(seed, "rows"), last_sync, plan)
    b.build()

    root.mkdir(parents=True, exist_ok=True)
    processing, dashboard = root / PROCESSING_DB, root / DASHBOARD_DB
    _write_db(processing, b.processing, b.summaries)
    _write_db(dashboard, b.dashboard, [b.summaries[i] for i in sorted(b.dashboard_summaries)])
    sync_text = last_sync.strftime("%Y-%m-%dT%H:%M:%SZ")
    sync_doc = {"last_sync": sync_text, "source": PROCESSING_DB, "target": DASHBOARD_DB}
    (root / LAST_SYNC_FILE).write_text(json.dumps(sync_doc, indent=2) + "\n", encoding="utf-8")

    return SampleInfo(
        root=root,
        processing=processing,
        dashboard=dashboard,
        last_sync_file=root / LAST_SYNC_FILE,
        last_sync=last_sync,
        counts={
            "videos": videos,
            "processing.content": len(b.processing),
            "processing.content_summaries": len(b.summaries),
            "dashboard.content": len(b.dashboard),
            "dashboard.content_summaries": len(b.dashboard_summaries),
            "dashboard.orphan_summaries": b.orphans,
            "merged.content": videos - len(plan.deleted),
        },
        deleted_on_dashboard=frozenset(plan.deleted),
        new_on_processing=frozenset(plan.new),
        curated=frozenset(plan.curated),
        curated_stale=frozenset(plan.stale),
        duplicates=frozenset(plan.dup_both) | frozenset(plan.dup_proc),
        duplicates_both=frozenset(plan.dup_both),
        duplicates_processing=frozenset(plan.dup_proc),
        malformed=tuple(sorted(b.malformed)),
        plain_text=tuple(sorted((v, "analysis") for v in plan.plain)),
        title_edited=frozenset(plan.title_edit),
        summary_regenerated=frozenset(plan.regen),
        audio_added=frozenset(plan.audio),
    )


# -- which video gets which fate ---------------------------------------------------------


def _seed(seed: int, stream: str) -> str:
    # String seeds are hashed with SHA-512 by `random`, independent of PYTHONHASHSEED.
    return f"handrail-merge:{seed}:{stream}"


def _rng(seed: int, stream: str) -> random.Random:
    return random.Random(_seed(seed, stream))


_ID_ALPHABET = string.ascii_letters + string.digits + "-_"


def _video_ids(rng: random.Random, n: int) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        vid = "".join(rng.choices(_ID_ALPHABET, k=11))
        if vid not in seen:
            seen.add(vid)
            out.append(vid)
    return out


def _share(n: int, share: float, least: int = 1) -> int:
    return max(least, round(n * share))


class _Plan:
    """The planted sets, drawn from disjoint pools where overlap would blur a case."""

    def __init__(self, rng: random.Random, ids: list[str]) -> None:
        n = len(ids)
        self.ids = ids
        order = ids[:]
        rng.shuffle(order)
        n_new, n_del = _share(n, NEW_SHARE), _share(n, DELETED_SHARE)
        self.new = sorted(order[:n_new])
        self.deleted = sorted(order[n_new : n_new + n_del])
        common = sorted(order[n_new + n_del :])
        self.curated = sorted(rng.sample(common, CURATED))
        self.stale = sorted(rng.sample(self.curated, CURATED // 3))
        uncurated = sorted(set(common) - set(self.curated))
        dups = rng.sample(uncurated, _share(n, DUPLICATE_SHARE, least=2))
        self.dup_both = sorted(dups[: len(dups) // 2])
        self.dup_proc = sorted(dups[len(dups) // 2 :])
        single = sorted(set(common) - set(dups))
        self.title_edit = sorted(rng.sample(single, _share(n, TITLE_EDIT_SHARE)))
        self.regen = sorted(rng.sample(single, _share(n, SUMMARY_REGEN_SHARE)))
        self.audio = sorted(rng.sample(single, _share(n, AUDIO_ADDED_SHARE)))
        # cells the merge takes from processing: kept videos with one row there
        kept = sorted((set(common) | set(self.new)) - set(dups))
        n_bad = _share(n, MALFORMED_SHARE, least=4)
        self.bad_topics = sorted(rng.sample(kept, n_bad))
        rest = sorted(set(kept) - set(self.bad_topics))
        picked = rng.sample(rest, n_bad + _share(n, PLAIN_TEXT_SHARE))
        self.bad_analysis = sorted(picked[:n_bad])
        self.plain = sorted(picked[n_bad:])
        self.bad_subcats = sorted(rng.sample(self.curated, MALFORMED_CURATED))


# -- the rows ----------------------------------------------------------------------------

_CATEGORIES: dict[str, tuple[str, ...]] = {
    "Technology": ("AI Software Development", "Programming", "Hardware", "Cloud & DevOps"),
    "Education": ("Tutorials & Courses", "Language Learning", "Study Skills"),
    "Science & Nature": ("Physics", "Biology", "Astronomy", "Climate"),
    "Business": ("Startups", "Personal Finance", "Marketing"),
    "History": ("Ancient History", "Military History", "History of Science"),
    "Hobbies & Special Interests": ("Woodworking", "Cooking", "Gardening", "Photography"),
    "News & Politics": ("Analysis", "Interviews"),
    "Health & Wellness": ("Fitness", "Nutrition", "Sleep"),
}
_TOPICS: dict[str, tuple[str, ...]] = {
    "Technology": ("PostgreSQL", "Rust", "LLM agents", "Kubernetes", "SQLite", "RAG"),
    "Education": ("spaced repetition", "Japanese grammar", "note taking", "calculus"),
    "Science & Nature": ("black holes", "CRISPR", "tardigrades", "El Niño", "fusion"),
    "Business": ("index funds", "pricing", "bootstrapping", "SaaS metrics"),
    "History": ("the Bronze Age collapse", "Byzantium", "the Apollo program", "Rome"),
    "Hobbies & Special Interests": ("dovetail joints", "sourdough", "tomatoes", "film"),
    "News & Politics": ("elections", "trade policy", "housing"),
    "Health & Wellness": ("zone 2 training", "protein", "circadian rhythm"),
}
_CHANNELS = (
    "Byte Garden",
    "Café Científico",
    "The Workshop Hour",
    "東京 Tech Talks",
    "Numbers & Nonsense",
    "Long Now Lectures",
    "Backyard Botany",
    "Signal/Noise",
    "Zoë Builds",
    "Retro Silicon",
    "Deep Time",
    "Kitchen Chemistry",
)
_TITLES = (
    "{t}, Explained",
    "How {t} Actually Works",
    "I Tried {t} for 30 Days",
    "{t}: A Complete Guide",
    "Why Everyone Is Wrong About {t}",
    "The Surprising History of {t}",
    "{t} in 100 Seconds",
    "Building with {t} — Part {n}",
)
_TITLE_NOISE = (" (4K)", " | FULL VIDEO", " [OFFICIAL]", " 🔥🔥", " #shorts", "!!!")
_CONTENT_TYPES = ("Tutorial", "Explainer", "Review", "Interview", "Documentary", "Vlog")
_LEVELS = ("Beginner", "Intermediate", "Advanced")
_LANGUAGES = ("en", "en", "en", "en", "de", "fr", "ja", "es")
_VARIANTS = ("bullet-points", "key-insights")
_OFFSETS = (0, 2, -5, 5.5, -7, 9)


def _stamp(rng: random.Random, dt: datetime, style: str = "", hours: float | None = None) -> str:
    """``dt`` as text in one of the three spellings found in the copies (``style`` "z",
    "offset" or "naive", else drawn; ``hours`` the offset, else drawn)."""
    style = style or rng.choices(("z", "offset", "naive"), weights=(40, 35, 25))[0]
    if style == "z":
        return dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    if style == "naive":  # datetime.now().strftime(...) on a UTC host
        return dt.strftime("%Y-%m-%d %H:%M:%S")
    hours = rng.choice(_OFFSETS) if hours is None else hours
    return dt.astimezone(timezone(timedelta(hours=hours))).isoformat()


def _seconds(rng: random.Random, low: timedelta, high: timedelta) -> timedelta:
    """A whole number of seconds in [low, high], so every spelling round-trips exactly."""
    return timedelta(seconds=rng.randint(int(low.total_seconds()), int(high.total_seconds())))


class _Builder:
    """Builds the sync-time rows, copies them to the dashboard, then diverges both sides."""

    def __init__(self, rng: random.Random, last_sync: datetime, plan: _Plan) -> None:
        self.rng = rng
        self.sync = last_sync
        self.plan = plan
        self.processing: list[dict[str, Any]] = []
        self.dashboard: list[dict[str, Any]] = []
        #: every summary (processing holds all); dict with a ``when`` key for ordering
        self.summaries: list[dict[str, Any]] = []
        self.dashboard_summaries: set[int] = set()  # indexes into self.summaries
        self.orphans = 0
        self.malformed: list[tuple[str, str]] = []
        self._when: dict[str, datetime] = {}  # content id -> indexed_at
        self._clean_title: dict[str, str] = {}  # video_id -> title before the noise

    def build(self) -> None:
        p = self.plan
        rng = self.rng
        new = set(p.new)
        # 1. the state at the sync: every video but the new ones, with their summaries
        for vid in p.ids:
            if vid in new:
                continue
            indexed = self.sync - _seconds(rng, timedelta(days=1), timedelta(days=365))
            quick = vid in p.dup_both  # its own revisions end before the second row's
            self._video(vid, f"yt:{vid}", indexed, quick=quick)
            if vid in p.dup_both:
                self._second_row(vid, indexed, trap=vid == p.dup_both[0])
        self._sort()
        # 2. the sync: the dashboard becomes a copy of processing
        self.dashboard = copy.deepcopy(self.processing)
        self.dashboard_summaries = set(range(len(self.summaries)))
        # 3. processing since the sync
        for vid in p.new:
            after = self.sync + _seconds(rng, timedelta(minutes=1), _AFTER_SYNC)
            self._video(vid, f"yt:{vid}", after, quick=False)
        for vid in p.dup_proc:
            after = self.sync + _seconds(rng, timedelta(minutes=1), _AFTER_SYNC)
            self._reindex(vid, after)
        for vid in p.regen:
            self._regenerate(vid)
        for vid in p.audio:
            self._row(self.processing, vid)["has_audio"] = 1
        for vid in p.stale:
            row = self._row(self.processing, vid)
            cat, subs = self._subcategories(row["category"])
            row["subcategory"] = subs[0]
            row["subcategories_json"] = json.dumps([{"category": cat, "subcategories": subs}])
        # 4. the dashboard since the sync
        self._delete(p.deleted)
        for vid in p.curated:
            self._curate(self._row(self.dashboard, vid), vid in p.bad_subcats)
        for vid in p.title_edit:
            row = self._row(self.dashboard, vid)
            row["title"] = self._clean_title[vid]
        self._sort()
        self._number_summaries()

    # -- one video ----------------------------------------------------------------------

    def _video(self, vid: str, cid: str, indexed: datetime, *, quick: bool) -> None:
        rng, p = self.rng, self.plan
        category = rng.choice(list(_CATEGORIES))
        topics = rng.sample(_TOPICS[category], rng.randint(2, min(4, len(_TOPICS[category]))))
        title = rng.choice(_TITLES).format(t=topics[0], n=rng.randint(2, 9))
        self._clean_title[vid] = title
        if vid in p.title_edit:  # the dashboard fixes it after the sync
            title = title.lower() + rng.choice(_TITLE_NOISE)
        analysis: dict[str, Any] = {
            "category": [category],
            "content_type": rng.choice(_CONTENT_TYPES),
            "complexity_level": rng.choice(_LEVELS),
            "language": rng.choice(_LANGUAGES),
            "key_topics": topics,
            "sentiment_score": round(rng.uniform(-1, 1), 3),
        }
        row: dict[str, Any] = {
            "id": cid,
            "video_id": vid,
            "title": title,
            "canonical_url": f"https://www.youtube.com/watch?v={vid}",
            "thumbnail_url": f"https://i.ytimg.com/vi/{vid}/hqdefault.jpg",
            "published_at": _stamp(
                rng, indexed - _seconds(rng, timedelta(hours=1), timedelta(days=1500))
            ),
            "indexed_at": _stamp(rng, indexed),
            "duration_seconds": None if rng.random() < 0.01 else rng.randint(45, 3 * 3600),
            "has_audio": 0 if vid in p.audio else int(rng.random() < 0.6),
            "channel_name": rng.choice(_CHANNELS),
            "category": category,
            "key_topics": json.dumps(topics, ensure_ascii=rng.random() < 0.5),
            "subcategory": None,
            "subcategories_json": rng.choices((None, "", "[]"), weights=(70, 15, 15))[0],
            "summary": None,
            "analysis": json.dumps(analysis, ensure_ascii=False),
        }
        if vid in p.bad_topics:
            row["key_topics"] = self._garble(topics, self._planted("key_topics"))
            self.malformed.append((vid, "key_topics"))
        if vid in p.bad_analysis:
            row["analysis"] = self._garble(analysis, self._planted("analysis"))
            self.malformed.append((vid, "analysis"))
        elif vid in p.plain:
            row["analysis"] = (
                f"Category: {category}. Content type: {analysis['content_type']}. "
                f"Level: {analysis['complexity_level']}. Covers {', '.join(topics)}."
            )
        self.processing.append(row)
        self._when[cid] = indexed
        # summaries: 1-3 comprehensive revisions, sometimes other variants, in time order;
        # content.summary is the latest comprehensive one
        spread = timedelta(minutes=30) if quick else timedelta(hours=20)
        revisions = rng.choices((1, 2, 3), weights=(85, 10, 5))[0]
        kinds = ["comprehensive"] * revisions + [v for v in _VARIANTS if rng.random() < 0.25]
        rng.shuffle(kinds)
        times = sorted(indexed + _seconds(rng, timedelta(seconds=30), spread) for _ in kinds)
        seen: dict[str, int] = {}
        for kind, when in zip(kinds, times, strict=True):
            seen[kind] = seen.get(kind, 0) + 1
            text = self._summary_text(title, topics, kind, seen[kind])
            self._add_summary(cid, kind, text, when)
            if kind == "comprehensive":
                row["summary"] = text

    def _second_row(self, vid: str, first: datetime, *, trap: bool) -> None:
        """A second row for ``vid`` since before the sync; either id may be the later one."""
        rng = self.rng
        first_row = self._row(self.processing, vid)
        gap = timedelta(hours=2) if trap else _seconds(rng, timedelta(hours=1), timedelta(hours=20))
        second = first + gap
        row = dict(first_row)
        row["id"] = f"{vid}_{second:%Y%m%d%H%M%S}"
        if rng.random() < 0.5 and not trap:  # the legacy-id row is the older one
            row["id"], first_row["id"] = first_row["id"], f"{vid}_{first:%Y%m%d%H%M%S}"
            for s in self.summaries:
                if s["content_id"] == row["id"]:
                    s["content_id"] = first_row["id"]
            self._when[first_row["id"]] = first
        if trap:  # later instant, lexically smaller text: 'T...-05:00' sorts before 'T...Z'
            first_row["indexed_at"] = _stamp(rng, first, "z")
            row["indexed_at"] = _stamp(rng, second, "offset", hours=-5)
        else:
            row["indexed_at"] = _stamp(rng, second)
        row["analysis"] = json.dumps({"category": [row["category"]], "reprocessed": True})
        self.processing.append(row)
        self._when[row["id"]] = second
        when = second + _seconds(rng, timedelta(seconds=30), timedelta(hours=2))
        text = self._summary_text(row["title"], [], "comprehensive", 2, "after a second pass")
        self._add_summary(row["id"], "comprehensive", text, when)
        row["summary"] = text

    def _reindex(self, vid: str, after: datetime) -> None:
        """Processing indexes ``vid`` again after the sync: a second row with a new id."""
        rng = self.rng
        row = dict(self._row(self.processing, vid))
        row["id"] = f"{vid}_{after:%Y%m%d%H%M%S}"
        row["indexed_at"] = _stamp(rng, after)
        row["has_audio"] = 1
        row["analysis"] = json.dumps({"category": [row["category"]], "reprocessed": True})
        when = after + _seconds(rng, timedelta(seconds=30), timedelta(hours=1))
        text = self._summary_text(row["title"], [], "comprehensive", 9, "after a re-index")
        self._add_summary(row["id"], "comprehensive", text, when)
        row["summary"] = text
        self.processing.append(row)
        self._when[row["id"]] = after

    def _regenerate(self, vid: str) -> None:
        """A new comprehensive revision on processing after the sync."""
        row = self._row(self.processing, vid)
        when = self.sync + _seconds(self.rng, timedelta(minutes=1), _AFTER_SYNC)
        text = self._summary_text(row["title"], [], "comprehensive", 5, "by a newer model")
        self._add_summary(row["id"], "comprehensive", text, when)
        row["summary"] = text

    def _delete(self, deleted: list[str]) -> None:
        """Delete on the dashboard; the summaries of every other one are left behind."""
        gone = set(deleted)
        ids = {r["id"] for r in self.dashboard if r["video_id"] in gone}
        self.dashboard = [r for r in self.dashboard if r["video_id"] not in gone]
        orphaned = {f"yt:{v}" for v in deleted[::2]}
        for i, s in enumerate(self.summaries):
            if s["content_id"] in ids and s["content_id"] not in orphaned:
                self.dashboard_summaries.discard(i)
        self.orphans = sum(
            1 for i in self.dashboard_summaries if self.summaries[i]["content_id"] in orphaned
        )

    def _curate(self, row: dict[str, Any], garbled: bool) -> None:
        rng = self.rng
        if rng.random() < 0.5:
            row["category"] = rng.choice([c for c in _CATEGORIES if c != row["category"]])
        cat, subs = self._subcategories(row["category"])
        row["subcategory"] = subs[0]
        doc = [{"category": cat, "subcategories": subs}]
        if rng.random() < 0.3:  # a second category
            other = rng.choice([c for c in _CATEGORIES if c != cat])
            doc.append({"category": other, "subcategories": [_CATEGORIES[other][0]]})
        text = json.dumps(doc, ensure_ascii=False)
        row["subcategories_json"] = text[: len(text) // 2] if garbled else text
        if garbled:
            self.malformed.append((row["video_id"], "subcategories_json"))

    def _subcategories(self, category: str) -> tuple[str, list[str]]:
        options = _CATEGORIES[category]
        return category, self.rng.sample(options, self.rng.randint(1, min(2, len(options))))

    # -- texts ---------------------------------------------------------------------------

    def _summary_text(
        self, title: str, topics: list[str], kind: str, n: int, note: str = ""
    ) -> str:
        rng = self.rng
        topic = topics[0] if topics else "its subject"
        lead = {
            "comprehensive": f"“{title}” walks through {topic}",
            "bullet-points": f"• {topic}\n• {topics[-1] if topics else title}\n•",
            "key-insights": f"Key insight #{n}: {topic} matters more than it seems;",
        }[kind]
        if note:
            lead = f"Regenerated {note}: {lead}"
        tail = rng.choice(
            (
                "with clear examples and a short recap.",
                "comparing three approaches and their trade-offs.",
                "from first principles, then a worked example.",
                "and ends with common mistakes to avoid.",
            )
        )
        return f"{lead} {tail} (revision {n})"

    def _garble(self, value: Any, k: int) -> str:
        """Text that is almost JSON, in one of four ways, in turn."""
        kind = k % 4
        if kind == 0:  # truncated
            text = json.dumps(value, ensure_ascii=False)
            return text[: max(2, len(text) * 2 // 3)]
        if kind == 1:  # a Python repr, single quotes
            return repr(value)
        if kind == 2:  # a trailing comma
            text = json.dumps(value, ensure_ascii=False)
            return text[:-1] + ",]" if text.endswith("]") else text[:-1] + ",}"
        # NaN: what json.dumps writes for float("nan"), which PostgreSQL's jsonb rejects
        if isinstance(value, dict):
            return json.dumps({**value, "sentiment_score": float("nan")}, ensure_ascii=False)
        return json.dumps([*value, float("nan")])

    # -- bookkeeping ---------------------------------------------------------------------

    def _add_summary(self, cid: str, kind: str, text: str, when: datetime) -> None:
        self.summaries.append(
            {
                "content_id": cid,
                "summary_text": text,
                "summary_type": kind,
                "created_at": _stamp(self.rng, when),
                "when": when,
            }
        )

    def _planted(self, column: str) -> int:
        return sum(1 for _, c in self.malformed if c == column)

    def _row(self, rows: list[dict[str, Any]], vid: str) -> dict[str, Any]:
        """The one row of a video that is not a duplicate."""
        (row,) = (r for r in rows if r["video_id"] == vid and r["id"] == f"yt:{vid}")
        return row

    def _sort(self) -> None:
        # rows in the order they were indexed, as the apps inserted them
        for rows in (self.processing, self.dashboard):
            rows.sort(key=lambda r: (self._when[r["id"]], r["id"]))

    def _number_summaries(self) -> None:
        """Ids in creation order, as SQLite assigned them; the dashboard keeps its subset."""
        order = sorted(
            range(len(self.summaries)),
            key=lambda i: (self.summaries[i]["when"], self.summaries[i]["content_id"]),
        )
        position = {old: new for new, old in enumerate(order)}
        self.summaries = [self.summaries[i] for i in order]
        for new, s in enumerate(self.summaries, start=1):
            s["id"] = new
        self.dashboard_summaries = {position[i] for i in self.dashboard_summaries}


def _write_db(path: Path, content: list[dict[str, Any]], summaries: list[dict[str, Any]]) -> None:
    with closing(sqlite3.connect(path)) as con:
        con.executescript(SQLITE_SCHEMA)
        with con:
            con.executemany(
                f"INSERT INTO content ({', '.join(SOURCE_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(SOURCE_COLUMNS))})",
                [tuple(r[c] for c in SOURCE_COLUMNS) for r in content],
            )
            con.executemany(
                f"INSERT INTO content_summaries ({', '.join(SUMMARY_SOURCE_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(SUMMARY_SOURCE_COLUMNS))})",
                [tuple(s[c] for c in SUMMARY_SOURCE_COLUMNS) for s in summaries],
            )
