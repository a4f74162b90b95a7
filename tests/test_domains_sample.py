"""The sample RECON data directory: benchmark shares, channels, planted problems,
determinism, PeerTube's video table; and the tied_manual review queue on top of it."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from handrail.errors import BadInput, ResourceError
from handrail.recipes.domains.logic import (
    CATEGORY_OF,
    DOMAINS,
    MEGA_CHANNEL_VIDEOS,
    Catalogue,
    Status,
    count_domains,
    decide_pass1,
    pass1,
    pass2,
    uuid_of,
)
from handrail.recipes.domains.review import (
    REVIEWS_TABLE,
    NotInQueue,
    ReviewError,
    UnknownDocument,
    UnknownDomain,
    list_queue,
    resolve,
)
from handrail.recipes.domains.sample import (
    ASSIGNED_SHARE,
    REPROCESS_SHARE,
    TIED_SHARE,
    SampleInfo,
    make_sample,
)

DOCS = 6000  # the shares are allocated exactly, so they hold at any size; 22,000 takes longer
AT = "2026-04-28T00:00:00+00:00"
NEW_COLUMNS = (
    "recon_domain",
    "recon_domain_status",
    "recon_domain_assigned_at",
    "peertube_category_pushed_at",
)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleInfo:
    return make_sample(tmp_path_factory.mktemp("recon"), documents=DOCS, seed=0)


def rows(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def test_shares_match_the_benchmarks(sample: SampleInfo) -> None:
    assert abs(sample.assigned_share - ASSIGNED_SHARE) < 0.015
    assert abs(sample.tied_share - TIED_SHARE) < 0.015
    assert abs(sample.reprocess_share - REPROCESS_SHARE) < 0.015
    assert sum(sample.expected_pass1.values()) + len(sample.undecided) == DOCS


def test_expected_outcomes_are_what_the_files_say(sample: SampleInfo) -> None:
    hashes = [h for (h,) in rows(sample.db_path, "SELECT hash FROM documents ORDER BY hash")]
    assert len(hashes) == DOCS
    compute = pass1(sample.concepts_root, assigned_at=AT)
    got: Counter[str] = Counter()
    for h in hashes:
        new = compute({"hash": h})
        status = new["recon_domain_status"] if new else None
        assert status == sample.statuses[h]
        if status:
            got[status] += 1
    assert dict(got) == sample.expected_pass1
    assert sorted(compute.undecided) == list(sample.undecided)
    tied = [h for h in hashes if sample.statuses[h] == "tied_pass_1"]
    two = pass2(sample.concepts_root, Catalogue.sqlite(sample.db_path), assigned_at=AT)
    results = [two({"hash": h, "recon_domain_status": "tied_pass_1"}) for h in tied]
    after = Counter(r["recon_domain_status"] for r in results if r)
    assert dict(after) == sample.expected_pass2
    # the channels break most ties, and some stay for a human
    assert sample.expected_pass2["tied_pass_2"] > sample.expected_pass2["tied_manual"] > 10


def test_documents_table_is_the_pre_migration_schema(sample: SampleInfo) -> None:
    cols = [r[1] for r in rows(sample.db_path, "PRAGMA table_info(documents)")]
    assert cols[:4] == ["hash", "status", "filename", "discovered_at"]
    assert not set(NEW_COLUMNS) & set(cols)
    statuses = dict(rows(sample.db_path, "SELECT status, count(*) FROM documents GROUP BY 1"))
    assert set(statuses) == {"complete", "failed", "catalogued"}
    indexes = [r[1] for r in rows(sample.db_path, "PRAGMA index_list(documents)")]
    assert "idx_documents_recon_domain_status" not in indexes


def test_catalogue_videos_and_channels(sample: SampleInfo) -> None:
    cat = rows(sample.db_path, "SELECT hash, path, channel, source FROM catalogue")
    assert len(cat) == sample.videos
    assert 0.85 < sample.videos / DOCS < 0.95
    uuids = [uuid_of(p) for _, p, _, _ in cat]
    assert None not in uuids
    assert len(set(uuids)) == len(uuids)
    short = [p for _, p, _, _ in cat if len(p.rsplit("/w/", 1)[1]) == 22]
    assert len(short) == sample.short_uuid_paths
    assert 0.05 < len(short) / len(cat) < 0.15
    sizes = Counter(ch for _, _, ch, _ in cat if ch)
    assert sample.mega_channel is not None
    assert sizes[sample.mega_channel] == sample.mega_videos > MEGA_CHANNEL_VIDEOS
    assert sample.boundary_channel is not None
    assert sizes[sample.boundary_channel] == MEGA_CHANNEL_VIDEOS
    assert sum(1 for n in sizes.values() if n <= 8) >= 20  # many small channels
    assert any(ch is None for _, _, ch, _ in cat)  # a few rows lost their channel name
    assert len(sizes) == sample.channels


def test_concept_files_are_small_and_use_both_domain_forms(sample: SampleInfo) -> None:
    forms: Counter[str] = Counter()
    windows_per_doc: Counter[int] = Counter()
    legacy = 0
    dirs = list(sample.concepts_root.iterdir())
    for folder in dirs[:1500]:
        files = sorted(folder.glob("window_*.json"))
        windows_per_doc[len(files)] += 1
        for f in files:
            if not f.is_file():
                continue
            assert f.stat().st_size < 2048
            try:
                data = json.loads(f.read_bytes())
            except ValueError:
                continue
            for item in data if isinstance(data, list) else []:
                d = item.get("domain") if isinstance(item, dict) else None
                forms[type(d).__name__] += 1
                names = d if isinstance(d, list) else [d]
                legacy += any(isinstance(n, str) and n and n not in CATEGORY_OF for n in names)
    assert forms["str"] > forms["list"] > 100
    assert legacy > 50
    assert max(windows_per_doc) <= 5  # up to 4, plus one planted bad file
    assert windows_per_doc[0] > 0  # empty concept directories
    assert len(dirs) < DOCS  # missing concept directories


def test_planted_problems_are_reported_not_raised(sample: SampleInfo) -> None:
    assert len(sample.problems) == 4
    assert len({p.problem for p in sample.problems}) == 4
    for planted in sample.problems:
        scan = count_domains(sample.concepts_root / planted.hash)
        assert [p.path for p in scan.problems] == [planted.path]
        assert decide_pass1(scan).status is None
        assert sample.statuses[planted.hash] is None


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    def tree(info: SampleInfo) -> dict[str, bytes | None]:
        out: dict[str, bytes | None] = {}
        for p in sorted(info.concepts_root.rglob("*")):
            out[str(p.relative_to(info.root))] = p.read_bytes() if p.is_file() else None
        conn = sqlite3.connect(info.db_path)
        out["recon.db"] = "\n".join(conn.iterdump()).encode()
        conn.close()
        return out

    a = make_sample(tmp_path / "a", documents=700, seed=4)
    b = make_sample(tmp_path / "b", documents=700, seed=4)
    c = make_sample(tmp_path / "c", documents=700, seed=5)
    assert tree(a) == tree(b)
    assert tree(a) != tree(c)
    assert (a.expected_pass1, a.expected_pass2) == (b.expected_pass1, b.expected_pass2)
    assert [p.hash for p in a.problems] == [p.hash for p in b.problems]


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    make_sample(tmp_path, documents=30)
    with pytest.raises(FileExistsError, match="not overwriting"):
        make_sample(tmp_path, documents=30)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"documents": -1}, "documents"),
        ({"tied_share": 1.5}, "tied_share"),
        ({"reprocess_share": -0.1}, "reprocess_share"),
    ],
)
def test_rejects_bad_arguments(tmp_path: Path, kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_sample(tmp_path, **kw)


def test_other_shares_make_a_sample_that_fails_the_gate(tmp_path: Path) -> None:
    info = make_sample(tmp_path, documents=1200, tied_share=0.15, reprocess_share=0.3)
    assert abs(info.tied_share - 0.15) < 0.01
    assert abs(info.reprocess_share - 0.3) < 0.01


@pytest.mark.parametrize("documents", [0, 1, 40])
def test_tiny_samples(tmp_path: Path, documents: int) -> None:
    info = make_sample(tmp_path, documents=documents)
    assert info.documents == documents
    assert info.mega_channel is None
    assert sum(info.expected_pass1.values()) + len(info.undecided) == documents


@pytest.mark.postgres
def test_peertube_video_table(tmp_path: Path, pg_dsn: str) -> None:
    import psycopg

    info = make_sample(tmp_path / "s", documents=1500, seed=2, pg_dsn=pg_dsn)
    assert info.pg_videos == info.videos
    catalogue = {
        uuid_of(p): ch for p, ch in rows(info.db_path, "SELECT path, channel FROM catalogue")
    }
    with psycopg.connect(pg_dsn) as conn:
        videos = conn.execute(
            'SELECT v.uuid::text, v.category, c.name FROM video v JOIN "videoChannel" c '
            'ON c.id = v."channelId"'
        ).fetchall()
        cols = {
            r[0]: r[1]
            for r in conn.execute(
                "SELECT column_name, is_nullable FROM information_schema.columns "
                "WHERE table_name = 'video'"
            )
        }
    assert len(videos) == info.videos
    assert {u for u, _, _ in videos} == set(catalogue)
    for u, _, channel in videos:
        assert channel == (catalogue[u] or "Main root channel")
    categories = Counter(cat for _, cat, _ in videos)
    assert 0.1 < categories[None] / len(videos) < 1
    assert all(cat is None or 1 <= cat <= 18 for cat in categories)
    assert len(categories) > 10  # PeerTube's own categories are in use
    assert cols["category"] == "YES"
    assert {"id", "uuid", "name", "channelId"} <= set(cols)
    with pytest.raises(FileExistsError, match="PeerTube tables"):
        make_sample(tmp_path / "again", documents=10, pg_dsn=pg_dsn)


# -- the review queue -----------------------------------------------------------------------


def migrate_and_run_passes(info: SampleInfo) -> None:
    """What the recipe's schema step and two backfills do, minus the engine."""
    conn = sqlite3.connect(info.db_path)
    for col in NEW_COLUMNS:
        conn.execute(f"ALTER TABLE documents ADD COLUMN {col} TEXT")
    hashes = [h for (h,) in conn.execute("SELECT hash FROM documents ORDER BY hash")]
    one = pass1(info.concepts_root, assigned_at=AT)
    two = pass2(info.concepts_root, Catalogue.sqlite(info.db_path), assigned_at=AT)
    for compute in (one, two):
        for h in hashes:
            row = dict(
                zip(
                    ("hash", "recon_domain", "recon_domain_status"),
                    conn.execute(
                        "SELECT hash, recon_domain, recon_domain_status FROM documents "
                        "WHERE hash = ?",
                        (h,),
                    ).fetchone(),
                    strict=True,
                )
            )
            new = compute(row)
            if new:
                sets = ", ".join(f"{k} = ?" for k in new)
                conn.execute(f"UPDATE documents SET {sets} WHERE hash = ?", (*new.values(), h))
    conn.commit()
    conn.close()


@pytest.fixture(scope="module")
def queued(tmp_path_factory: pytest.TempPathFactory) -> SampleInfo:
    """A migrated sample after passes 1 and 2, shared by the review tests: each test resolves
    at most its own item, and none depends on another's."""
    info = make_sample(tmp_path_factory.mktemp("queued"), documents=2500, seed=1)
    migrate_and_run_passes(info)
    return info


def test_list_queue(queued: SampleInfo) -> None:
    items = list_queue(queued.db_path)
    waiting = rows(
        queued.db_path, "SELECT hash FROM documents WHERE recon_domain_status = ?", ("tied_manual",)
    )
    assert sorted(i.hash for i in items) == sorted(h for (h,) in waiting)
    assert len(items) > 5
    for item in items:
        assert len(item.tied) >= 2
        assert len({n for _, n in item.tied}) == 1
        assert [d for d, _ in item.tied] == sorted((d for d, _ in item.tied), key=DOMAINS.index)
        assert item.fallback in {d for d, _ in item.tied}
        assert not item.problems
        if item.channel is not None and not item.mega:
            # the channel did not break the tie: its top tied domains share one count
            top = max(item.channel_counts.values())
            assert sum(1 for n in item.channel_counts.values() if n == top) >= 2 or top == 0
            assert item.fallback == min(d for d, n in item.channel_counts.items() if n == top)
        if item.path is not None:
            assert item.uuid == uuid_of(item.path)
    assert any(i.mega for i in items)
    assert any(i.channel is None for i in items)
    assert [i.hash for i in list_queue(queued.db_path, channel_counts=False)] == [
        i.hash for i in items
    ]


def test_resolve(queued: SampleInfo) -> None:
    item = list_queue(queued.db_path, channel_counts=False)[0]
    choice = next(d for d in DOMAINS if d != item.fallback)
    resolve(queued.db_path, item.hash, choice, who="ana", at=AT)
    got = rows(
        queued.db_path,
        "SELECT recon_domain, recon_domain_status, recon_domain_assigned_at FROM documents "
        "WHERE hash = ?",
        (item.hash,),
    )
    assert got == [(choice, "manual_assigned", AT)]
    audit = rows(
        queued.db_path,
        f"SELECT hash, domain, fallback, who, at FROM {REVIEWS_TABLE} WHERE hash = ?",
        (item.hash,),
    )
    assert audit == [(item.hash, choice, item.fallback, "ana", AT)]
    assert item.hash not in {i.hash for i in list_queue(queued.db_path, channel_counts=False)}
    with pytest.raises(NotInQueue, match=f"{item.hash}.*'manual_assigned'"):
        resolve(queued.db_path, item.hash, choice, who="ana")


def resolve_errors(queued: SampleInfo) -> list[tuple[str, str, type[BadInput], str]]:
    assigned = next(h for h, s in queued.statuses.items() if s == Status.ASSIGNED.value)
    waiting = list_queue(queued.db_path, channel_counts=False)[0].hash
    return [
        ("f" * 64, "Medical", UnknownDocument, "no document with hash 'f{64}'"),
        (assigned, "Medical", NotInQueue, f"{assigned} is not in the review queue.*'assigned'"),
        (waiting, "Plumbing", UnknownDomain, f"'Plumbing' to document {waiting}"),
        (waiting, "medical", UnknownDomain, "not one of the 18 domains"),
    ]


def test_resolve_errors_name_the_hash_and_domain(queued: SampleInfo) -> None:
    def state() -> list[tuple[Any, ...]]:
        return rows(queued.db_path, "SELECT * FROM documents ORDER BY hash") + rows(
            queued.db_path, "SELECT name FROM sqlite_master ORDER BY name"
        )

    before = state()
    for doc, domain, error, match in resolve_errors(queued):
        with pytest.raises(error, match=match) as caught:
            resolve(queued.db_path, doc, domain, who="ana")
        assert isinstance(caught.value, ReviewError)
        assert caught.value.exit_code == 2
    with pytest.raises(ReviewError, match="who"):
        resolve(queued.db_path, resolve_errors(queued)[2][0], "Medical", who=" ")
    assert state() == before


def test_review_needs_a_migrated_database(tmp_path: Path) -> None:
    with pytest.raises(ResourceError, match="no RECON database"):
        list_queue(tmp_path / "recon.db")
    assert not (tmp_path / "recon.db").exists()
    info = make_sample(tmp_path, documents=20)
    with pytest.raises(ResourceError, match="lacks column") as caught:
        resolve(info.db_path, "x", "Medical", who="ana")
    assert "schema step" in str(caught.value)


def test_queue_without_a_catalogue_shows_counts_and_problems(tmp_path: Path) -> None:
    db = tmp_path / "recon.db"
    concepts = tmp_path / "elsewhere"
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TABLE documents (hash TEXT PRIMARY KEY, filename TEXT, recon_domain TEXT, "
        "recon_domain_status TEXT)"
    )
    conn.executemany(
        "INSERT INTO documents VALUES (?, ?, ?, ?)",
        [
            ("h1", "b.pdf", "Food Systems", "tied_manual"),
            ("h2", "a.pdf", "Medical", "tied_manual"),
            ("h3", "c.pdf", "Medical", "assigned"),
        ],
    )
    conn.commit()
    conn.close()
    for doc, window in (("h1", ["Security", "Food Systems"] * 2), ("h2", ["Medical"])):
        (concepts / doc).mkdir(parents=True)
        concept_list = [{"name": "x", "domain": d} for d in window]
        (concepts / doc / "window_0001.json").write_text(json.dumps(concept_list))
    (concepts / "h2" / "window_0002.json").write_text("[{")
    items = list_queue(db, concepts)
    assert [i.hash for i in items] == ["h2", "h1"]  # by filename
    h2, h1 = items
    assert h1.tied == (("Food Systems", 2), ("Security", 2))
    assert (h1.channel, h1.path, h1.uuid, h1.channel_counts) == (None, None, None, {})
    assert h2.tied == (("Medical", 1),)  # shown as read now, with the unreadable file
    assert [p.path.name for p in h2.problems] == ["window_0002.json"]
