"""Domain categorization rules on hand-made concept directories: pass 1, the channel
tiebreaker, reading windows robustly, UUIDs of catalogue paths, and the compute functions
inside a real Backfill run."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from handrail import Backfill, Runbook, RunStatus, SQLite
from handrail.errors import ResourceError
from handrail.recipes.domains import logic
from handrail.recipes.domains.logic import (
    CATEGORY_OF,
    DOMAIN_OF,
    DOMAINS,
    Catalogue,
    ChannelIndex,
    ChannelView,
    Status,
    Video,
    break_tie,
    count_domains,
    decide_pass1,
    decide_pass2,
    pass1,
    pass2,
    short_to_uuid,
    uuid_of,
    uuid_to_short,
)

from .helpers import run_runbook

MED, WATER, SEC, FOOD = "Medical", "Water Systems", "Security", "Food Systems"
AT = "2026-04-28T00:00:00+00:00"


def c(domain: Any) -> dict[str, Any]:
    return {"name": "x", "domain": domain}


def write(root: Path, doc: str, *windows: Any) -> Path:
    """Concept directory ``root/doc`` with one window file per argument (JSON-dumped unless
    it is str or bytes, which are written as they are)."""
    folder = root / doc
    folder.mkdir(parents=True, exist_ok=True)
    for k, w in enumerate(windows, start=1):
        path = folder / f"window_{k:04d}.json"
        if isinstance(w, bytes):
            path.write_bytes(w)
        elif isinstance(w, str):
            path.write_text(w, encoding="utf-8")
        else:
            path.write_text(json.dumps(w), encoding="utf-8")
    return folder


def test_eighteen_domains_map_to_categories_100_to_117_in_order() -> None:
    assert len(DOMAINS) == len(set(DOMAINS)) == 18
    assert [CATEGORY_OF[d] for d in DOMAINS] == list(range(100, 118))
    assert DOMAIN_OF[100] == "Agriculture & Livestock"
    assert DOMAIN_OF[117] == "Wilderness Skills"
    assert all(DOMAIN_OF[CATEGORY_OF[d]] == d for d in DOMAINS)


@pytest.mark.parametrize(
    ("windows", "status", "domain", "tied"),
    [
        ("missing", Status.NEEDS_REPROCESS, None, ()),
        ((), Status.NEEDS_REPROCESS, None, ()),
        (([],), Status.NEEDS_REPROCESS, None, ()),
        (([c("Survival"), c(["Homesteading", "DIY"])],), Status.NEEDS_REPROCESS, None, ()),
        (([c(None), c(""), c([]), {"name": "no domain key"}],), Status.NEEDS_REPROCESS, None, ()),
        (([c(MED)],), Status.ASSIGNED, MED, ()),
        (([c(MED), c(WATER)], [c(MED)]), Status.ASSIGNED, MED, ()),
        # a list counts each of its domains once
        (([c([MED, WATER]), c([WATER])],), Status.ASSIGNED, WATER, ()),
        # ... and a name repeated inside one list counts once
        (([c([MED, MED]), c(WATER)],), Status.TIED_PASS_1, None, (MED, WATER)),
        # legacy names never count, however many
        (([c(SEC)], [c("Survival")] * 5), Status.ASSIGNED, SEC, ()),
        (([c([SEC, "Survival"]), c(FOOD)],), Status.TIED_PASS_1, None, (FOOD, SEC)),
        # counts add up over all windows; the tie lists domains in category order
        (
            ([c(WATER)], [c(MED)], [c(SEC), c(SEC), c(MED), c(WATER)]),
            Status.TIED_PASS_1,
            None,
            (MED, SEC, WATER),
        ),
        # surrounding whitespace is not part of a name
        (([c(" Medical "), c("Medical\n")],), Status.ASSIGNED, MED, ()),
        # odd list items are skipped, not fatal
        ((["a bare string", c(7), c({"x": 1}), c([MED, 3]), c(MED)],), Status.ASSIGNED, MED, ()),
    ],
)
def test_pass1_rules(
    tmp_path: Path, windows: Any, status: Status, domain: str | None, tied: tuple[str, ...]
) -> None:
    folder = tmp_path / "doc" if windows == "missing" else write(tmp_path, "doc", *windows)
    outcome = decide_pass1(count_domains(folder))
    assert (outcome.status, outcome.domain, outcome.tied) == (status, domain, tied)


def test_scan_counts_legacy_and_skipped_and_ignores_other_files(tmp_path: Path) -> None:
    folder = write(tmp_path, "d", [c(MED), c(["Survival", WATER]), "odd", c(1.5)], [c(MED)])
    (folder / "meta.json").write_text(json.dumps([c(SEC)] * 9))
    (folder / "window_0003.json.tmp").write_text("garbage")
    scan = count_domains(folder)
    assert scan.exists
    assert scan.ok
    assert (scan.windows, scan.concepts, scan.skipped) == (2, 5, 2)
    assert scan.counts == Counter({MED: 2, WATER: 1})
    assert scan.legacy == Counter({"Survival": 1})


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ('[{"name": "x", "domain": "Medi', "not valid JSON"),
        ("", "not valid JSON"),
        (b'[{"name": "caf\xe9", "domain": "Food Systems"}]', "not valid JSON"),
        ('{"concepts": []}', "a JSON dict, not a list of concepts"),
        ('"Medical"', "a JSON str, not a list of concepts"),
        ("dir", "unreadable"),
    ],
)
def test_unreadable_windows_are_reported_and_leave_the_document_undecided(
    tmp_path: Path, bad: str | bytes, problem: str
) -> None:
    folder = write(tmp_path, "d", [c(MED), c(MED)], [c(WATER)])
    target = folder / "window_0003.json"
    if bad == "dir":
        target.mkdir()
    else:
        write(tmp_path, "d", [c(MED), c(MED)], [c(WATER)], bad)
    scan = count_domains(folder)
    assert [p.path for p in scan.problems] == [target]
    assert problem in scan.problems[0].problem
    assert str(target) in str(scan.problems[0])
    assert scan.counts == Counter({MED: 2, WATER: 1})  # the readable windows still count
    outcome = decide_pass1(scan)
    assert outcome.status is None
    with pytest.raises(ValueError, match="undecided"):
        outcome.columns(AT)


def test_concept_path_that_is_a_file_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "d").write_text("[]")
    scan = count_domains(tmp_path / "d")
    assert scan.problems[0].problem == "not a directory"
    assert decide_pass1(scan).status is None


@pytest.mark.parametrize(
    ("tied", "others", "winner", "fallback"),
    [
        ((MED, WATER), {WATER: 3, MED: 1}, WATER, WATER),
        ((MED, WATER), {WATER: 2, MED: 2, SEC: 50}, None, MED),
        ((MED, WATER), {SEC: 9}, None, MED),
        ((MED, WATER), {}, None, MED),
        ((FOOD, MED, WATER), {MED: 4, WATER: 4, FOOD: 1}, None, MED),
        ((FOOD, MED, WATER), {FOOD: 5, MED: 4, WATER: 4}, FOOD, FOOD),
    ],
)
def test_break_tie(
    tied: tuple[str, ...], others: dict[str, int], winner: str | None, fallback: str
) -> None:
    assert break_tie(tied, others) == (winner, fallback)


def test_break_tie_needs_domains() -> None:
    with pytest.raises(ValueError, match="at least one"):
        break_tie((), {})


@pytest.mark.parametrize(
    ("view", "status", "domain"),
    [
        (ChannelView("Ch", 3, others={WATER: 5, MED: 2}), Status.TIED_PASS_2, WATER),
        (ChannelView("Ch", 3, others={WATER: 2, MED: 2}), Status.TIED_MANUAL, MED),
        (ChannelView("Ch", 1, others={}), Status.TIED_MANUAL, MED),
        (ChannelView("Big", 501, mega=True), Status.TIED_MANUAL, MED),
        (ChannelView(None), Status.TIED_MANUAL, MED),
    ],
)
def test_pass2_rules(tmp_path: Path, view: ChannelView, status: Status, domain: str) -> None:
    scan = count_domains(write(tmp_path, "d", [c(WATER), c(MED)]))
    outcome = decide_pass2(scan, view)
    assert (outcome.status, outcome.domain, outcome.tied) == (status, domain, (MED, WATER))
    assert outcome.reason


def test_pass2_recounts_first(tmp_path: Path) -> None:
    mega = ChannelView("Big", 900, mega=True)
    assert decide_pass2(count_domains(write(tmp_path, "a", [c(MED)] * 2)), mega).status is (
        Status.ASSIGNED
    )
    assert decide_pass2(count_domains(tmp_path / "gone"), mega).status is Status.NEEDS_REPROCESS
    assert decide_pass2(count_domains(write(tmp_path, "b", "[")), mega).status is None


# -- UUIDs of catalogue paths ---------------------------------------------------------------

UUID = "a44521d0-0fb8-4ade-8002-3385545c3318"
SHORT = "mhvXdrZT4jP5T8vBxuvm75"  # the short-uuid package's own example for UUID


@pytest.mark.parametrize(
    ("path", "expect"),
    [
        (f"https://stream.example.net/w/{UUID}", UUID),
        (f"https://stream.example.net/w/{UUID.upper()}", UUID),
        (f"https://stream.example.net/w/{SHORT}", UUID),
        (f"/w/{SHORT}/", UUID),
        (f"https://stream.example.net/w/{UUID}?start=30s#t", UUID),
        (f"https://a.example/w/x/w/{UUID}", UUID),
        ("https://stream.example.net/w/11111111111111111111111", None),
        ("https://stream.example.net/w/0OIl0OIl0OIl0OIl0OIl0O", None),
        ("https://stream.example.net/w/zzzzzzzzzzzzzzzzzzzzzz", None),
        ("https://stream.example.net/w/", None),
        (f"https://stream.example.net/videos/watch/{UUID}", None),
        ("", None),
        (None, None),
    ],
)
def test_uuid_of(path: str | None, expect: str | None) -> None:
    assert uuid_of(path) == expect


def test_short_uuid_round_trip() -> None:
    assert uuid_to_short(UUID) == SHORT
    assert uuid_to_short("00000000-0000-0000-0000-000000000001") == "1" * 21 + "2"
    assert short_to_uuid("1" * 22) == "00000000-0000-0000-0000-000000000000"
    for n in (1, 57, 58, 2**64 + 7, 2**128 - 1):
        h = f"{n:032x}"
        u = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        assert len(uuid_to_short(u)) == 22
        assert short_to_uuid(uuid_to_short(u)) == u
    with pytest.raises(ValueError, match="not a UUID"):
        uuid_to_short("nope")


# -- channels and the compute functions ---------------------------------------------------------


def channel_world(root: Path) -> Catalogue:
    """Channel "Ch": a tied doc and two others favouring Water; "Flat": its others tie too;
    "Big": 501 videos without concept files; "Edge": exactly 500."""
    videos = [Video("t1", f"https://s.example/w/{UUID}", "Ch", "s.example")]
    write(root, "t1", [c(MED), c(WATER)])
    write(root, "t2", [c(MED), c(WATER)], [c(SEC)])  # a second tie in the same channel
    write(root, "o1", [c(WATER), c(WATER), c(SEC)])
    write(root, "o2", [c(MED), c(WATER)])
    videos += [Video(h, "/w/x", "Ch") for h in ("t2", "o1", "o2")]
    write(root, "f1", [c(FOOD), c(SEC)])
    write(root, "f2", [c(FOOD), c(SEC), c(MED)])
    videos += [Video("f1", "/w/x", "Flat"), Video("f2", "/w/x", "Flat")]
    write(root, "m1", [c(FOOD), c(SEC)])
    videos += [Video("m1", "/w/x", "Big")] + [Video(f"big{i}", "/w/x", "Big") for i in range(500)]
    write(root, "e1", [c(FOOD), c(SEC)])
    write(root, "e2", [c(SEC)])
    videos += [Video("e1", "/w/x", "Edge"), Video("e2", "/w/x", "Edge")]
    videos += [Video(f"edge{i}", "/w/x", "Edge") for i in range(498)]
    write(root, "n1", [c(FOOD), c(SEC)])  # not a video
    write(root, "blank", [c(FOOD), c(SEC)])
    videos.append(Video("blank", "/w/x", ""))  # a catalogue row without a channel name
    return Catalogue(videos)


@pytest.mark.parametrize(
    ("doc", "status", "domain"),
    [
        ("t1", Status.TIED_PASS_2, WATER),  # others: Water 4, Medical 2
        ("t2", Status.TIED_PASS_2, WATER),
        ("f1", Status.TIED_MANUAL, FOOD),  # others (f2): Food 1, Security 1
        ("m1", Status.TIED_MANUAL, FOOD),  # mega channel
        ("e1", Status.TIED_PASS_2, SEC),  # 500 videos is not mega
        ("n1", Status.TIED_MANUAL, FOOD),
        ("blank", Status.TIED_MANUAL, FOOD),
    ],
)
def test_pass2_compute(tmp_path: Path, doc: str, status: Status, domain: str) -> None:
    compute = pass2(tmp_path, channel_world(tmp_path), assigned_at=AT)
    row = {"hash": doc, "recon_domain": None, "recon_domain_status": "tied_pass_1"}
    assert compute(row) == {
        "recon_domain": domain,
        "recon_domain_status": status.value,
        "recon_domain_assigned_at": AT,
    }


def test_pass2_reads_each_channel_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catalogue = channel_world(tmp_path)
    compute = pass2(tmp_path, catalogue, assigned_at=AT)
    seen: Counter[str] = Counter()
    real = logic.count_domains

    def counting(folder: Path) -> logic.ConceptScan:
        seen[Path(folder).name] += 1
        return real(folder)

    monkeypatch.setattr(logic, "count_domains", counting)
    for doc in ("t1", "t2", "m1", "f1"):
        compute({"hash": doc, "recon_domain_status": "tied_pass_1"})
    # each tied doc is recounted once, each channel video read once; "Big" is never read
    assert seen == Counter({"t1": 2, "t2": 2, "o1": 1, "o2": 1, "f1": 2, "f2": 1, "m1": 1})


def test_pass2_leaves_other_rows_alone(tmp_path: Path) -> None:
    compute = pass2(tmp_path, channel_world(tmp_path), assigned_at=AT)
    for status in (None, "assigned", "needs_reprocess", "tied_manual", "manual_assigned"):
        assert compute({"hash": "t1", "recon_domain_status": status}) is None


def test_channel_index_reports_problems_of_other_videos(tmp_path: Path) -> None:
    write(tmp_path, "t", [c(MED), c(WATER)])
    write(tmp_path, "o", [c(WATER)], "[oops")
    index = ChannelIndex(tmp_path, Catalogue([Video("t", "/w/x", "C"), Video("o", "/w/x", "C")]))
    assert index.view("t") == ChannelView("C", 2, others={WATER: 1})
    assert list(index.problems) == ["o"]


def test_pass1_compute(tmp_path: Path) -> None:
    write(tmp_path, "a", [c(MED)])
    write(tmp_path, "t", [c(MED), c(WATER)])
    write(tmp_path, "bad", [c(MED)], "{")
    compute = pass1(tmp_path, assigned_at=AT)
    assert compute({"hash": "a", "recon_domain_status": None}) == {
        "recon_domain": MED,
        "recon_domain_status": "assigned",
        "recon_domain_assigned_at": AT,
    }
    assert compute({"hash": "t"}) == {
        "recon_domain": None,
        "recon_domain_status": "tied_pass_1",
        "recon_domain_assigned_at": AT,
    }
    assert compute({"hash": "none"})["recon_domain_status"] == "needs_reprocess"  # type: ignore[index]
    assert compute({"hash": "bad"}) is None
    assert list(compute.undecided) == ["bad"]
    assert compute.undecided["bad"][0].path == tmp_path / "bad" / "window_0002.json"
    # an unchanged decision keeps its stamp; later passes and humans are not overridden
    same = {"hash": "a", "recon_domain": MED, "recon_domain_status": "assigned"}
    assert compute(same) is None
    for status in ("tied_pass_2", "tied_manual", "manual_assigned"):
        assert compute({"hash": "a", "recon_domain_status": status}) is None
    # re-deciding after new concepts arrive
    write(tmp_path, "a", [c(WATER)], [c(WATER)])
    assert compute(same) == {
        "recon_domain": WATER,
        "recon_domain_status": "assigned",
        "recon_domain_assigned_at": AT,
    }


def test_compute_reprs_are_stable(tmp_path: Path) -> None:
    one = pass1(tmp_path, assigned_at=AT)
    two = pass2(tmp_path, Catalogue.sqlite(tmp_path / "recon.db"), assigned_at=AT)
    assert repr(one) == f"pass1({str(tmp_path)!r}, assigned_at={AT!r})"
    assert repr(two) == (
        f"pass2({str(tmp_path)!r}, Catalogue.sqlite({str(tmp_path / 'recon.db')!r}), "
        f"assigned_at={AT!r}, mega_over=500)"
    )


def test_catalogue_from_sqlite_is_lazy(tmp_path: Path) -> None:
    db = tmp_path / "recon.db"
    catalogue = Catalogue.sqlite(db)  # nothing there yet: fine until used
    with pytest.raises(ResourceError, match="no catalogue database"):
        catalogue.get("x")
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE catalogue (hash TEXT, path TEXT, channel TEXT, source TEXT)")
    conn.executemany(
        "INSERT INTO catalogue VALUES (?,?,?,?)",
        [
            ("a", f"https://s/w/{SHORT}", "C", "s"),
            ("a", "https://s/w/dup", "D", "s"),
            ("b", "https://s/w/x", None, "s"),
        ],
    )
    conn.commit()
    conn.close()
    catalogue = Catalogue.sqlite(db)
    assert catalogue.get("a") == Video("a", f"https://s/w/{SHORT}", "C", "s")
    assert catalogue.get("a").uuid == UUID  # type: ignore[union-attr]
    assert catalogue.channels() == {"C": 1}
    assert len(catalogue) == 2
    with pytest.raises(ResourceError, match="cannot read table"):
        Catalogue.sqlite(db, table="nope").get("a")


def test_passes_inside_a_real_backfill(tmp_path: Path) -> None:
    concepts = tmp_path / "concepts"
    db_path = tmp_path / "recon.db"
    write(concepts, "h1", [c(MED)])
    write(concepts, "h2", [c(MED), c(WATER)])
    write(concepts, "h3", [c(["Survival"])])
    write(concepts, "h4", [c(SEC)], b"\xff")
    write(concepts, "o1", [c(WATER)])
    conn = sqlite3.connect(db_path)
    conn.execute(
        "CREATE TABLE documents (hash TEXT PRIMARY KEY, status TEXT, filename TEXT, "
        "recon_domain TEXT, recon_domain_status TEXT, recon_domain_assigned_at TEXT)"
    )
    conn.executemany(
        "INSERT INTO documents (hash, status, filename) VALUES (?, 'complete', ?)",
        [(h, f"{h}.mp4") for h in ("h1", "h2", "h3", "h4", "h5", "o1")],
    )
    conn.execute("CREATE TABLE catalogue (hash TEXT, path TEXT, channel TEXT, source TEXT)")
    conn.executemany(
        "INSERT INTO catalogue VALUES (?, ?, 'C', 's')",
        [("h2", f"/w/{UUID}"), ("o1", f"/w/{SHORT}")],
    )
    conn.commit()
    conn.close()
    db = SQLite("recon", db_path)
    one = pass1(concepts, assigned_at=AT)
    two = pass2(concepts, Catalogue.sqlite(db_path), assigned_at=AT)
    steps = [
        Backfill("pass1", db, table="documents", key="hash", columns=logic.COLUMNS, compute=one),
        Backfill("pass2", db, table="documents", key="hash", columns=logic.COLUMNS, compute=two),
    ]
    _, result = run_runbook(
        Runbook("domains", steps=steps), tmp_path / ".handrail", auto_approve=True
    )
    assert result.status is RunStatus.COMPLETED
    got = dict(
        db.query(
            "SELECT hash, recon_domain_status || ':' || ifnull(recon_domain, '') FROM documents"
        )
    )
    assert got == {
        "h1": "assigned:Medical",
        "h2": "tied_pass_2:Water Systems",
        "h3": "needs_reprocess:",
        "h4": None,
        "h5": "needs_reprocess:",
        "o1": "assigned:Water Systems",
    }
    assert list(one.undecided) == ["h4"]
