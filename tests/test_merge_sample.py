"""The YTV2 merge sample and rules: deterministic, every case planted, the merge as documented.

The checks read the SQLite copies with their own SQL and their own parsing, so they test
the sample and the rules rather than trust :class:`SampleInfo`'s lists.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from handrail.recipes.merge.rules import (
    CHECK_LATEST_SQL,
    CONTENT_COLUMNS,
    CURATED_COLUMNS,
    DASHBOARD_COLUMNS,
    PROCESSING_COLUMNS,
    SOURCE_COLUMNS,
    SUMMARY_COLUMNS,
    Fate,
    curated_ids,
    expected_merge,
    expected_summaries,
    fates,
    load_last_sync,
    merge_content,
    parse_json,
    schema_sql,
)
from handrail.recipes.merge.sample import (
    CURATED,
    FILES,
    MIN_VIDEOS,
    SampleInfo,
    make_sample,
)

# -- an independent reading of the copies -------------------------------------------------


def query(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db)) as con:
        return con.execute(sql, args).fetchall()


def content(db: Path) -> dict[str, list[dict[str, Any]]]:
    """video_id -> its rows."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in query(db, f"SELECT {', '.join(SOURCE_COLUMNS)} FROM content"):
        row = dict(zip(SOURCE_COLUMNS, r, strict=True))
        out.setdefault(row["video_id"], []).append(row)
    return out


def utc(text: str) -> datetime:
    dt = datetime.fromisoformat(text)
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _no_constants(name: str) -> Any:
    raise ValueError(name)


def strict_json(text: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(text, parse_constant=_no_constants)
    except ValueError:
        return False, None


def only(rows: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(rows) == 1
    return rows[0]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleInfo:
    return make_sample(tmp_path_factory.mktemp("ytv2"), seed=0)


@pytest.fixture(scope="module")
def proc(sample: SampleInfo) -> dict[str, list[dict[str, Any]]]:
    return content(sample.processing)


@pytest.fixture(scope="module")
def dash(sample: SampleInfo) -> dict[str, list[dict[str, Any]]]:
    return content(sample.dashboard)


@pytest.fixture(scope="module")
def merged(sample: SampleInfo) -> dict[str, dict[str, Any]]:
    rows = expected_merge(sample.processing, sample.dashboard, sample.last_sync)
    assert [r["video_id"] for r in rows] == sorted(r["video_id"] for r in rows)
    return {r["video_id"]: r for r in rows}


@pytest.fixture(scope="module")
def summaries(sample: SampleInfo) -> list[dict[str, Any]]:
    return expected_summaries(sample.processing, sample.dashboard, sample.last_sync)


# -- the sample ---------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    a = make_sample(tmp_path / "a", videos=MIN_VIDEOS, seed=3)
    b = make_sample(tmp_path / "b", videos=MIN_VIDEOS, seed=3)
    c = make_sample(tmp_path / "c", videos=MIN_VIDEOS, seed=4)
    for name in FILES:
        assert (a.root / name).read_bytes() == (b.root / name).read_bytes(), name
        assert (a.root / name).read_bytes() != (c.root / name).read_bytes(), name
    assert a.curated == b.curated != c.curated
    assert a.malformed == b.malformed


@pytest.mark.parametrize("existing", FILES)
def test_refuses_to_overwrite(tmp_path: Path, existing: str) -> None:
    (tmp_path / existing).write_text("mine\n")
    with pytest.raises(FileExistsError, match=existing):
        make_sample(tmp_path, videos=MIN_VIDEOS)
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing]
    assert (tmp_path / existing).read_text() == "mine\n"


def test_too_few_videos_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="videos must be"):
        make_sample(tmp_path, videos=MIN_VIDEOS - 1)


def test_last_sync_file(sample: SampleInfo) -> None:
    assert load_last_sync(sample.last_sync_file) == sample.last_sync
    text = json.loads(sample.last_sync_file.read_text())["last_sync"]
    assert text.endswith("Z")
    assert sample.last_sync.tzinfo is not None


def test_counts_match_the_files(sample: SampleInfo, proc: Any, dash: Any) -> None:
    def count(db: Path, table: str) -> int:
        return int(query(db, f"SELECT count(*) FROM {table}")[0][0])

    c = sample.counts
    assert c["processing.content"] == count(sample.processing, "content")
    assert c["dashboard.content"] == count(sample.dashboard, "content")
    assert c["processing.content_summaries"] == count(sample.processing, "content_summaries")
    assert c["dashboard.content_summaries"] == count(sample.dashboard, "content_summaries")
    assert c["videos"] == len(proc.keys() | dash.keys()) == 3000
    assert c["merged.content"] == 3000 - len(sample.deleted_on_dashboard)
    orphans = query(
        sample.dashboard,
        "SELECT count(*) FROM content_summaries WHERE content_id NOT IN (SELECT id FROM content)",
    )[0][0]
    assert orphans == c["dashboard.orphan_summaries"] > 0


@pytest.mark.parametrize(
    ("planted", "size"),
    [
        ("curated", CURATED),
        ("deleted_on_dashboard", 60),
        ("new_on_processing", 90),
        ("duplicates", 30),
        ("duplicates_both", 15),
        ("duplicates_processing", 15),
        ("curated_stale", 22),
        ("malformed", 35),
        ("plain_text", 90),
        ("title_edited", 60),
        ("summary_regenerated", 90),
        ("audio_added", 60),
    ],
)
def test_planted_sizes(sample: SampleInfo, planted: str, size: int) -> None:
    assert len(getattr(sample, planted)) == size


def test_exactly_67_curated_whatever_the_size(tmp_path: Path) -> None:
    info = make_sample(tmp_path, videos=MIN_VIDEOS, seed=9)
    assert len(info.curated) == CURATED
    assert curated_ids(info.dashboard) == sorted(info.curated)


def test_deleted_and_new_are_as_planted(sample: SampleInfo, proc: Any, dash: Any) -> None:
    assert dash.keys() <= proc.keys()  # nothing exists on the dashboard alone
    only_processing = proc.keys() - dash.keys()
    assert only_processing == sample.deleted_on_dashboard | sample.new_on_processing
    for vid in sample.deleted_on_dashboard:
        assert utc(only(proc[vid])["indexed_at"]) < sample.last_sync
    for vid in sample.new_on_processing:
        assert utc(only(proc[vid])["indexed_at"]) > sample.last_sync


def test_duplicates_are_as_planted(sample: SampleInfo, proc: Any, dash: Any) -> None:
    assert {v for v, rows in proc.items() if len(rows) > 1} == sample.duplicates
    assert {v for v, rows in dash.items() if len(rows) > 1} == sample.duplicates_both
    for vid in sample.duplicates:
        rows = proc[vid]
        assert len(rows) == 2
        assert len({r["id"] for r in rows}) == 2
        assert len({utc(r["indexed_at"]) for r in rows}) == 2
    for vid in sample.duplicates_processing:  # re-indexed after the sync
        assert max(utc(r["indexed_at"]) for r in proc[vid]) > sample.last_sync


def test_curated_are_as_planted(sample: SampleInfo, proc: Any, dash: Any) -> None:
    assert curated_ids(sample.dashboard) == sorted(sample.curated)
    assert not sample.curated & sample.duplicates
    for vid in sample.curated:
        d, p = only(dash[vid]), only(proc[vid])
        assert d["subcategory"]
        assert d["subcategories_json"]
        if vid in sample.curated_stale:
            assert p["subcategory"]
            assert p["subcategories_json"]
        else:
            assert p["subcategory"] is None
    for vid, rows in dash.items():
        if vid not in sample.curated:
            assert all(r["subcategory"] is None for r in rows)
            assert all(r["subcategories_json"] in (None, "", "[]") for r in rows)


def test_malformed_cells_are_not_json_and_the_list_is_complete(
    sample: SampleInfo, proc: Any, dash: Any
) -> None:
    for vid, col in sample.malformed:
        side = dash if col == "subcategories_json" else proc
        text = only(side[vid])[col]
        assert text, (vid, col)
        assert not strict_json(text)[0], (vid, col, text)
    assert {c for _, c in sample.malformed} == {"key_topics", "analysis", "subcategories_json"}
    # the NaN trap: Python's lenient json reads it, PostgreSQL's jsonb would not
    assert any("NaN" in only(proc[v])[c] for v, c in sample.malformed if c != "subcategories_json")
    bad = sample.raw_text_cells
    for vid, rows in proc.items():
        for row in rows:
            for col in ("key_topics", "analysis"):
                if (vid, col) not in bad:
                    assert strict_json(row[col])[0], (vid, col)
    for vid, col in sample.plain_text:
        assert only(proc[vid])[col].startswith("Category: ")


def test_timestamps_come_in_three_spellings(proc: Any) -> None:
    texts = [r["indexed_at"] for rows in proc.values() for r in rows]
    assert any(t.endswith("Z") for t in texts)
    assert any(t[-6] in "+-" and t[-3] == ":" for t in texts)
    assert any(len(t) == 19 and t[10] == " " for t in texts)


# -- the merge ----------------------------------------------------------------------------


def test_owner_groups_cover_every_column() -> None:
    groups = [*CURATED_COLUMNS, *DASHBOARD_COLUMNS, *PROCESSING_COLUMNS, "video_id"]
    assert sorted(groups) == sorted(SOURCE_COLUMNS)


def test_merge_honours_deletions_and_keeps_new(
    sample: SampleInfo, merged: Any, proc: Any, dash: Any
) -> None:
    assert len(merged) == sample.counts["merged.content"]
    assert merged.keys() == (proc.keys() | dash.keys()) - sample.deleted_on_dashboard
    assert sample.new_on_processing <= merged.keys()
    for vid in sample.new_on_processing:
        assert merged[vid]["indexed_at"] > sample.last_sync


def test_merge_resolves_duplicates_by_latest_indexed_at(
    sample: SampleInfo, merged: Any, proc: Any
) -> None:
    lexical_would_differ = 0
    for vid in sample.duplicates:
        latest = max(proc[vid], key=lambda r: utc(r["indexed_at"]))
        assert merged[vid]["id"] == latest["id"]
        assert merged[vid]["indexed_at"] == utc(latest["indexed_at"])
        assert merged[vid]["summary"] == latest["summary"]
        if max(proc[vid], key=lambda r: r["indexed_at"])["id"] != latest["id"]:
            lexical_would_differ += 1
    assert lexical_would_differ >= 1  # comparing the texts would pick the wrong row


def test_merge_keeps_curation(sample: SampleInfo, merged: Any, dash: Any) -> None:
    for vid in sample.curated:
        d = only(dash[vid])
        row = merged[vid]
        assert row["category"] == d["category"]
        assert row["subcategory"] == d["subcategory"]
        ok, value = strict_json(d["subcategories_json"])
        assert row["subcategories_json"] == (value if ok else {"raw_text": d["subcategories_json"]})


def test_merge_keeps_text_that_is_not_json_as_raw_text(
    sample: SampleInfo, merged: Any, proc: Any, dash: Any
) -> None:
    target = {
        "key_topics": "topics_json",
        "analysis": "analysis_json",
        "subcategories_json": "subcategories_json",
    }
    for vid, col in sample.raw_text_cells:
        side = dash if col == "subcategories_json" else proc
        assert merged[vid][target[col]] == {"raw_text": only(side[vid])[col]}
    found = {
        (vid, col)
        for vid, row in merged.items()
        for col, t in target.items()
        if isinstance(row[t], dict) and "raw_text" in row[t]
    }
    assert found == sample.raw_text_cells


def test_merge_takes_each_side_s_edits(
    sample: SampleInfo, merged: Any, proc: Any, dash: Any
) -> None:
    for vid in sample.title_edited:
        d, p = only(dash[vid]), only(proc[vid])
        assert d["title"] != p["title"]
        assert merged[vid]["title"] == d["title"]
    for vid in sample.summary_regenerated:
        d, p = only(dash[vid]), only(proc[vid])
        assert d["summary"] != p["summary"]
        assert merged[vid]["summary"] == p["summary"]
    for vid in sample.audio_added:
        assert only(dash[vid])["has_audio"] == 0
        assert merged[vid]["has_audio"] is True


def test_merge_converts_types(merged: Any, proc: Any) -> None:
    for vid, row in merged.items():
        assert tuple(row) == CONTENT_COLUMNS
        assert row["indexed_at"].utcoffset() == timedelta(0)
        assert row["published_at"].utcoffset() == timedelta(0)
        assert isinstance(row["has_audio"], bool)
        assert row["duration_seconds"] is None or isinstance(row["duration_seconds"], int)
        latest = max(proc[vid], key=lambda r: utc(r["indexed_at"]))
        assert row["published_at"] == utc(latest["published_at"])
    empties = Counter(
        "null" if r["subcategories_json"] is None else "list"
        for r in merged.values()
        if not r["subcategory"]
    )
    assert empties["null"] > 0  # NULL and '' -> None
    assert empties["list"] > 0  # '[]' -> []


def test_summaries_one_latest_revision_per_variant(
    sample: SampleInfo, merged: Any, summaries: list[dict[str, Any]]
) -> None:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for s in summaries:
        assert tuple(s) == SUMMARY_COLUMNS
        groups.setdefault((s["video_id"], s["variant"]), []).append(s)
    assert {v for v, _ in groups} == merged.keys()
    assert any(len(g) > 1 for g in groups.values())
    for key, group in groups.items():
        assert [s["revision"] for s in group] == list(range(1, len(group) + 1)), key
        assert [s["is_latest"] for s in group] == [False] * (len(group) - 1) + [True]
        times = [s["created_at"] for s in group]
        assert times == sorted(times)
    for vid, row in merged.items():  # content.summary is the latest comprehensive text
        assert groups[(vid, "comprehensive")][-1]["text"] == row["summary"], vid
    for vid in sample.summary_regenerated:
        assert groups[(vid, "comprehensive")][-1]["created_at"] > sample.last_sync
    for vid in sample.duplicates:  # the summaries of both rows meet under the video
        assert len(groups[(vid, "comprehensive")]) >= 2


# -- the rules on hand-made rows ---------------------------------------------------------

SYNC = datetime(2025, 9, 1, 12, 0, tzinfo=UTC)


def row(vid: str, rid: str = "", **values: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict.fromkeys(SOURCE_COLUMNS)
    base.update(id=rid or f"yt:{vid}", video_id=vid, title="T", indexed_at="2025-08-01 00:00:00")
    base.update(values)
    return base


@pytest.mark.parametrize(
    ("processing", "dashboard", "fate"),
    [
        ([row("a")], [row("a")], Fate.MERGED),
        ([row("a", indexed_at="2025-09-01T12:00:00Z")], [], Fate.DELETED),  # at the sync
        ([row("a", indexed_at="2025-09-01T14:00:01+02:00")], [], Fate.NEW),
        ([row("a", indexed_at="2025-09-01 12:00:01")], [], Fate.NEW),  # naive is UTC
        ([row("a", indexed_at=None)], [], Fate.DELETED),
        ([], [row("a")], Fate.DASHBOARD_ONLY),
    ],
)
def test_fates(processing: list[Any], dashboard: list[Any], fate: Fate) -> None:
    assert fates(processing, dashboard, SYNC) == {"a": fate}
    kept = [r["video_id"] for r in merge_content(processing, dashboard, SYNC)]
    assert kept == ([] if fate is Fate.DELETED else ["a"])


@pytest.mark.parametrize(
    ("processing", "dashboard", "column", "expect"),
    [
        ([row("a", title="p")], [row("a", title="d")], "title", "d"),
        ([row("a", title="p")], [row("a", title="  ")], "title", "p"),  # blank: other side
        ([row("a", summary="p")], [row("a", summary="d")], "summary", "p"),
        ([row("a", summary=None)], [row("a", summary="d")], "summary", "d"),
        ([row("a", category="p")], [row("a", category="d")], "category", "p"),  # not curated
        (
            [row("a", category="p", subcategory="ps", subcategories_json='["ps"]')],
            [row("a", category="d", subcategory="ds", subcategories_json=None)],
            "subcategories_json",
            None,  # curation travels as a unit: not filled in from processing
        ),
        (
            [row("a")],
            [row("a", subcategories_json="{broken")],
            "subcategories_json",
            {"raw_text": "{broken"},
        ),
        # duplicates: latest indexed_at wins; equal times: greater id
        (
            [
                row("a", "x1", indexed_at="2025-08-02T00:00:00Z", summary="new"),
                row("a", "x2", indexed_at="2025-08-02T01:00:00+02:00", summary="old"),
            ],
            [row("a")],
            "summary",
            "new",
        ),
        (
            [row("a", "x1", summary="one"), row("a", "x2", summary="two")],
            [row("a")],
            "id",
            "x2",
        ),
        # on the dashboard a curated row beats a later bare duplicate
        (
            [row("a")],
            [
                row("a", "d1", indexed_at="2025-08-01 00:00:00", subcategory="kept"),
                row("a", "d2", indexed_at="2025-08-09 00:00:00"),
            ],
            "subcategory",
            "kept",
        ),
    ],
)
def test_column_precedence(
    processing: list[Any], dashboard: list[Any], column: str, expect: Any
) -> None:
    (merged_row,) = merge_content(processing, dashboard, SYNC)
    assert merged_row[column] == expect


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("null", None),
        ("[]", []),
        ('"Technology"', "Technology"),
        ('{"a": [1, 2.5, true]}', {"a": [1, 2.5, True]}),
        ('{"score": NaN}', {"raw_text": '{"score": NaN}'}),
        ("['a', 'b']", {"raw_text": "['a', 'b']"}),
        ("Plain prose.", {"raw_text": "Plain prose."}),
    ],
)
def test_parse_json(text: str | None, expect: Any) -> None:
    assert parse_json(text) == expect


# -- PostgreSQL ---------------------------------------------------------------------------


@pytest.fixture
def pg(pg_dsn: str) -> Iterator[Any]:
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(schema_sql())
        yield conn


def add_video(conn: Any, vid: str) -> None:
    conn.execute("INSERT INTO content (video_id, id) VALUES (%s, %s)", (vid, f"yt:{vid}"))


def add_summary(conn: Any, vid: str, revision: int, latest: bool) -> None:
    conn.execute(
        "INSERT INTO content_summaries (video_id, variant, text, revision, is_latest) "
        "VALUES (%s, 'comprehensive', %s, %s, %s)",
        (vid, f"rev {revision}", revision, latest),
    )


@pytest.mark.postgres
def test_schema_applies_twice_and_allows_one_latest(pg: Any) -> None:
    import psycopg

    pg.execute(schema_sql())  # the second time changes nothing
    triggers = pg.execute(
        "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY tgname"
    ).fetchall()
    assert triggers == [("content_summaries_has_latest",), ("content_updated_at",)]
    add_video(pg, "v1")
    add_summary(pg, "v1", 1, True)
    with pytest.raises(psycopg.errors.UniqueViolation, match="content_summaries_one_latest"):
        add_summary(pg, "v1", 2, True)
    # none latest: refused when the transaction commits
    with (
        pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="none is_latest"),
        pg.transaction(),
    ):
        pg.execute("UPDATE content_summaries SET is_latest = false")
    # moving the pointer in one transaction (clear first, then mark) is fine
    with pg.transaction():
        pg.execute("UPDATE content_summaries SET is_latest = false WHERE video_id = 'v1'")
        add_summary(pg, "v1", 2, True)
    assert pg.execute(CHECK_LATEST_SQL).fetchall() == []
    pg.execute("DELETE FROM content WHERE video_id = 'v1'")  # cascades, and is consistent
    assert pg.execute("SELECT count(*) FROM content_summaries").fetchone() == (0,)


@pytest.mark.postgres
def test_updated_at_is_stamped_on_change_only(pg: Any) -> None:
    add_video(pg, "v1")

    def stamp() -> datetime:
        return pg.execute("SELECT updated_at FROM content").fetchone()[0]  # type: ignore[no-any-return]

    first = stamp()
    pg.execute("UPDATE content SET title = NULL")  # no change
    assert stamp() == first
    pg.execute("UPDATE content SET title = 'fixed'")
    assert stamp() > first


@pytest.mark.postgres
def test_the_expected_rows_fit_the_schema(
    pg: Any, merged: Any, summaries: list[dict[str, Any]]
) -> None:
    from psycopg.types.json import Jsonb

    json_cols = {"subcategories_json", "topics_json", "analysis_json"}

    def adapt(r: dict[str, Any]) -> list[Any]:
        return [Jsonb(r[c]) if c in json_cols and r[c] is not None else r[c] for c in r]

    with pg.cursor() as cur:
        cur.executemany(
            f"INSERT INTO content ({', '.join(CONTENT_COLUMNS)}) "
            f"VALUES ({', '.join(['%s'] * len(CONTENT_COLUMNS))})",
            [adapt(r) for r in merged.values()],
        )
        cur.executemany(
            f"INSERT INTO content_summaries ({', '.join(SUMMARY_COLUMNS)}) "
            f"VALUES ({', '.join(['%s'] * len(SUMMARY_COLUMNS))})",
            [list(s.values()) for s in summaries],
        )
    assert pg.execute(CHECK_LATEST_SQL).fetchall() == []
    back = pg.execute(
        f'SELECT {", ".join(CONTENT_COLUMNS)} FROM content ORDER BY video_id COLLATE "C"'
    ).fetchall()
    assert [dict(zip(CONTENT_COLUMNS, r, strict=True)) for r in back] == list(merged.values())
