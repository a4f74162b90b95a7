"""Review queue: export formats, decisions import and validation, the store, the page."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import pytest

from handrail.errors import BadInput
from handrail.images.dhash import ImageHash
from handrail.images.hasher import HashRun
from handrail.images.pairs import find_pairs
from handrail.images.review import (
    CSV_COLUMNS,
    DECISIONS_FORMAT,
    DecisionStore,
    ReviewDecision,
    ReviewFileError,
    ReviewImage,
    ReviewPair,
    export_csv,
    export_html,
    export_json,
    import_decisions,
    review_pairs,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def queue(sample_run: HashRun) -> list[ReviewPair]:
    """Every matched pair of the sample (distance 0..15), so the queue is never empty."""
    pairs = find_pairs([r.dhash for r in sample_run.results], 15)
    return review_pairs(sample_run.results, pairs, band=(0, 15))


def fake_pair(a: str, b: str, distance: int, ha: str = "0" * 16, hb: str = "1" * 16) -> ReviewPair:
    return ReviewPair(ReviewImage(a, ha, 10, 10, None), ReviewImage(b, hb, 10, 10, None), distance)


def decisions_doc(*records: dict[str, Any]) -> dict[str, Any]:
    return {"format": DECISIONS_FORMAT, "version": 1, "decisions": list(records)}


def record(**changes: Any) -> dict[str, Any]:
    base = {"a": "a.jpg", "a_dhash": "0" * 16, "b": "b.jpg", "b_dhash": "f" * 16}
    return base | {"decision": "duplicate"} | changes


def test_review_pairs_filters_the_band_and_orders_stably() -> None:
    results = [
        ImageHash("z.jpg", "0" * 16, 4, 3, 0.0),
        ImageHash("a.jpg", "0" * 15 + "f", 4, 3, 0.0),
        ImageHash("m.jpg", "00000000000000ff", 4, 3, 0.0),
        ImageHash("q.jpg", "0000000000000fff", 4, 3, 0.0),
    ]
    pairs = find_pairs([r.dhash for r in results], 15)
    queue = review_pairs(results, pairs, band=(8, 12))
    # Distances: z-a 4, z-m 8, z-q 12, a-m 4, a-q 8, m-q 4; a sorts before b in each pair.
    assert [(p.a.path, p.b.path, p.distance) for p in queue] == [
        ("a.jpg", "q.jpg", 8),
        ("m.jpg", "z.jpg", 8),
        ("q.jpg", "z.jpg", 12),
    ]
    assert queue[0].a.dhash == results[1].dhash
    assert queue[0].a.bytes is None


def test_json_and_csv_exports(queue: list[ReviewPair], tmp_path: Path) -> None:
    doc = json.loads(export_json(queue, tmp_path / "q.json").read_text(encoding="utf-8"))
    assert doc["totalMatches"] == len(queue) == len(doc["pairs"])
    assert doc["pairs"][0] == queue[0].to_json()
    assert doc["pairs"][0]["a"]["bytes"] == Path(queue[0].a.path).stat().st_size

    with export_csv(queue, tmp_path / "q.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [(r["a_path"], r["b_path"], int(r["distance"])) for r in rows] == [
        (p.a.path, p.b.path, p.distance) for p in queue
    ]


def test_html_page_is_self_contained(queue: list[ReviewPair], tmp_path: Path) -> None:
    gone = fake_pair(str(tmp_path / "gone-a.jpg"), str(tmp_path / "gone-b.jpg"), 9)
    page = export_html([*queue, gone], tmp_path / "review.html").read_text(encoding="utf-8")
    assert page.count('src="data:image/jpeg;base64,') == 2 * len(queue)
    assert "image unavailable" in page
    assert not re.search(r"""(src|href)=["']?https?:""", page)
    assert page.count('<button type="button" class="dup"') == len(queue) + 1


def test_html_escapes_paths(tmp_path: Path) -> None:
    evil = fake_pair("<script>alert(1)</script>.jpg", "b&c.jpg", 9)
    page = export_html([evil], tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<script>alert(1)</script>.jpg" not in page
    assert "&lt;script&gt;" in page
    assert "b&amp;c.jpg" in page


def test_import_round_trip_normalises_pair_order(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(
        json.dumps(
            decisions_doc(
                record(),
                record(a="z.jpg", b="c.jpg", decision="not_duplicate", decided_at="2025-01-01"),
                record(),  # the same verdict twice counts once
            )
        ),
        encoding="utf-8",
    )
    assert import_decisions(path) == [
        ReviewDecision("a.jpg", "0" * 16, "b.jpg", "f" * 16, "duplicate"),
        ReviewDecision("c.jpg", "f" * 16, "z.jpg", "0" * 16, "not_duplicate", "2025-01-01"),
    ]


BAD_FILES: list[tuple[str, str | dict[str, Any] | list[Any], str]] = [
    ("not JSON", "{nope", r"not valid JSON \(line 1, column 2"),
    ("a list", [], "expected a JSON object"),
    ("wrong format", {"format": "x", "version": 1, "decisions": []}, "format is 'x'"),
    ("future version", {"format": DECISIONS_FORMAT, "version": 9, "decisions": []}, "version 9"),
    ("no list", {"format": DECISIONS_FORMAT, "version": 1, "decisions": {}}, "must be a list"),
    ("record not object", decisions_doc(record(), 5), "record #2 is not an object"),
    ("missing keys", decisions_doc({"a": "x"}), "record #1 lacks a_dhash, b, b_dhash, decision"),
    ("bad hash", decisions_doc(record(b_dhash="xyz")), "record #1: b_dhash 'xyz' is not 16"),
    ("bad verdict", decisions_doc(record(decision="maybe")), "record #1: decision 'maybe'"),
    ("self pair", decisions_doc(record(b="a.jpg")), "record #1: an image cannot be paired"),
    ("empty path", decisions_doc(record(a="")), "record #1: 'a' and 'b' must be non-empty"),
    (
        "contradiction",
        decisions_doc(
            record(),
            record(
                a="b.jpg", b="a.jpg", a_dhash="f" * 16, b_dhash="0" * 16, decision="not_duplicate"
            ),
        ),
        "record #2 contradicts record #1",
    ),
]


@pytest.mark.parametrize(("case", "content", "message"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_decision_files_name_the_file_and_record(
    tmp_path: Path, case: str, content: str | dict[str, Any] | list[Any], message: str
) -> None:
    path = tmp_path / "decisions.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    with pytest.raises(ReviewFileError, match=message) as info:
        import_decisions(path)
    assert str(info.value).startswith(str(path))
    assert isinstance(info.value, BadInput)
    assert info.value.exit_code == 2


def test_missing_and_unreadable_decision_files(tmp_path: Path) -> None:
    with pytest.raises(ReviewFileError, match="no such file"):
        import_decisions(tmp_path / "nope.json")
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ReviewFileError, match="cannot read"):
        import_decisions(binary)


def test_store_keeps_decisions_across_runs_until_an_image_changes(tmp_path: Path) -> None:
    p1 = fake_pair("a.jpg", "b.jpg", 9, "0" * 16, "1" * 16)
    p2 = fake_pair("c.jpg", "d.jpg", 12, "2" * 16, "3" * 16)
    store = DecisionStore(tmp_path / "store.json")
    assert store.pending([p1, p2]) == [p1, p2]
    changed = store.record(
        [
            ReviewDecision("a.jpg", "0" * 16, "b.jpg", "1" * 16, "duplicate"),
            ReviewDecision("c.jpg", "2" * 16, "d.jpg", "3" * 16, "not_duplicate"),
        ]
    )
    assert changed == 2
    store.save()

    again = DecisionStore(tmp_path / "store.json")
    assert len(again) == 2
    assert again.get(p1) == "duplicate"
    assert again.get(p2) == "not_duplicate"
    assert again.pending([p1, p2]) == []
    current = {"a.jpg": "0" * 16, "b.jpg": "1" * 16, "c.jpg": "2" * 16, "d.jpg": "3" * 16}
    assert again.edges(current) == ([("a.jpg", "b.jpg")], [("c.jpg", "d.jpg")])

    # b.jpg was edited: its hash changed, so the old verdict no longer applies.
    edited = fake_pair("a.jpg", "b.jpg", 10, "0" * 16, "4" * 16)
    assert again.pending([edited, p2]) == [edited]
    assert again.edges(current | {"b.jpg": "4" * 16}) == ([], [("c.jpg", "d.jpg")])

    # Re-recording the same verdict changes nothing; a new verdict replaces the old.
    same = ReviewDecision("a.jpg", "0" * 16, "b.jpg", "1" * 16, "duplicate")
    flipped = ReviewDecision("c.jpg", "2" * 16, "d.jpg", "3" * 16, "duplicate")
    assert again.record([same, flipped]) == 1
    assert again.get(p2) == "duplicate"


def test_store_refuses_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "store.json"
    path.write_text('{"format": "handrail.images.decision-store", "version": 1}', "utf-8")
    with pytest.raises(ReviewFileError, match=r"store\.json: 'decisions' must be a list"):
        DecisionStore(path)


@pytest.mark.browser
def test_review_page_in_headless_chromium(queue: list[ReviewPair], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "run scripts/ensure-chromium.sh (make browser) first"
    assert len(queue) >= 4
    page_path = export_html(queue, tmp_path / "review.html")
    saved = tmp_path / "downloaded.json"
    choices = {0: "duplicate", 1: "not_duplicate", 3: "duplicate"}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(accept_downloads=True)
            page.goto(page_path.as_uri())
            assert page.locator(".pair").count() == len(queue)
            # Change of mind on pair 3: the last click counts.
            page.click(".pair[data-index='3'] button[data-decision='not_duplicate']")
            for index, decision in choices.items():
                page.click(f".pair[data-index='{index}'] button[data-decision='{decision}']")
            assert page.text_content("#progress") == f"3 of {len(queue)} decided"
            pressed = page.get_attribute(
                ".pair[data-index='1'] button[data-decision='not_duplicate']", "aria-pressed"
            )
            assert pressed == "true"
            with page.expect_download() as download:
                page.click("#save")
            download.value.save_as(saved)
            assert download.value.suggested_filename == "review-decisions.json"
        finally:
            browser.close()

    decisions = import_decisions(saved)
    assert [(d.key, d.decision) for d in decisions] == [
        (queue[i].key, choice) for i, choice in sorted(choices.items())
    ]
    assert all(d.decided_at for d in decisions)

    store = DecisionStore(tmp_path / "store.json")
    assert store.record(decisions) == 3
    store.save()
    assert DecisionStore(tmp_path / "store.json").pending(queue) == [
        p for i, p in enumerate(queue) if i not in choices
    ]
