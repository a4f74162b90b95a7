"""Recipe B end to end on real generated images: clusters with every member, errors
recorded, the library written atomically with every original field kept, both rollbacks,
the cache on re-runs, and decisions imported from the review page kept across runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from handrail import Runbook, RunStatus
from handrail.images.sample import SampleManifest, make_sample_library
from handrail.recipes.dhash.recipe import build

from .helpers import cli, run_runbook, write


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SampleManifest]:
    root = tmp_path_factory.mktemp("library")
    manifest = make_sample_library(root, count=80, copies=12, seed=4)
    return root, manifest


@pytest.fixture
def library(template: tuple[Path, SampleManifest], tmp_path: Path) -> Path:
    root, _ = template
    # Paths in library.json are absolute: keep the copy at the same place by copying the
    # library file only and pointing it at the template's images.
    work = tmp_path / "lib"
    work.mkdir()
    shutil.copy(root / "library.json", work / "library.json")
    return work


def recipe(root: Path, **kw: Any) -> Runbook:
    """The dHash recipe on ``root``, with timing limits no test machine misses."""
    return build(root, mean_ms=10_000, p95_ms=60_000, max_failure_rate=0.1, **kw)


def test_migration_finds_planted_copies_and_reports_broken_files(
    library: Path, template: tuple[Path, SampleManifest]
) -> None:
    _, manifest = template
    before = json.loads((library / "library.json").read_text())
    ex, result = run_runbook(recipe(library), library / ".handrail", auto_approve=True)
    assert result.status is RunStatus.COMPLETED, result.message
    doc = json.loads((library / "library.json").read_text())
    # every image kept, every original field unchanged
    assert [
        {k: v for k, v in i.items() if not k.startswith("dhash")} for i in doc["images"]
    ] == before["images"]
    hashed = [i for i in doc["images"] if "dhash" in i]
    assert all(len(i["dhash"]) == 16 for i in hashed)
    errors = {e["image"] for e in doc["dhash_errors"]}
    assert errors == {str(p) for p in manifest.broken}
    pairs = {(d["original"], d["duplicate"]) for d in doc["dhash_duplicates"]}
    members = {p for pair in pairs for p in pair}
    found = [c for c in manifest.copies if str(c.copy) in members and str(c.original) in members]
    assert len(found) >= len(manifest.copies) - 1, [
        c.kind for c in manifest.copies if c not in found
    ]
    assert doc["dhash_migration"]["errors"] == len(errors)
    state = ex.journal.step(result.run_id, "find duplicates").state
    assert Path(state["review_html"]).exists()


def test_rollback_restores_the_backup_bytes(library: Path) -> None:
    original = (library / "library.json").read_bytes()
    ex, result = run_runbook(recipe(library), library / ".handrail", auto_approve=True)
    assert (library / "library.json").read_bytes() != original
    assert ex.rollback(result.run_id).exit_code == 0
    assert (library / "library.json").read_bytes() == original


def test_rollback_after_an_edit_removes_only_dhash_fields(library: Path) -> None:
    ex, result = run_runbook(recipe(library), library / ".handrail", auto_approve=True)
    doc = json.loads((library / "library.json").read_text())
    doc["images"][0]["caption"] = "edited after the migration"
    doc["album"] = "kept"
    (library / "library.json").write_text(json.dumps(doc))
    ex.rollback(result.run_id)
    after = json.loads((library / "library.json").read_text())
    assert after["images"][0]["caption"] == "edited after the migration"
    assert after["album"] == "kept"
    assert not any(k.startswith("dhash") for i in after["images"] for k in i)
    assert not any(k.startswith("dhash") for k in after)


def test_second_run_hashes_nothing_again(library: Path) -> None:
    ex, first = run_runbook(recipe(library), library / ".handrail", auto_approve=True)
    ex.rollback(first.run_id)
    plan = {s.name: p for s, p in ex.plan()}
    counts = plan["hash images"].counts
    assert counts["to_hash"] == 1  # only the missing file: nothing to cache for it
    assert counts["cached"] == counts["images"] - 1


def test_review_decisions_are_imported_and_kept(library: Path) -> None:
    write(
        library / "runbook.py",
        """
        from pathlib import Path
        from handrail.recipes.dhash.recipe import build
        runbook = build(Path(__file__).parent, mean_ms=10_000, p95_ms=60_000,
                        max_failure_rate=0.1)
    """,
    )
    assert cli("run", library / "runbook.py", "--yes").exit_code == 0
    listed = json.loads(cli("review", "list", library / "runbook.py", "--json").output)
    queue = json.loads((Path(listed["page"]).parent / "review.json").read_text())
    assert queue["pairs"], "the sample should leave some pairs in the review band"
    pair = queue["pairs"][0]
    a, b = pair["a"], pair["b"]
    decisions = library / "decisions.json"
    decisions.write_text(
        json.dumps(
            {
                "format": "handrail.images.review-decisions",
                "version": 1,
                "decisions": [
                    {
                        "a": a["path"],
                        "a_dhash": a["dhash"],
                        "b": b["path"],
                        "b_dhash": b["dhash"],
                        "decision": "duplicate",
                    }
                ],
            }
        )
    )
    imported = cli("review", "import", decisions, "--runbook", library / "runbook.py")
    assert imported.exit_code == 0, imported.output
    again = cli("run", library / "runbook.py", "--yes", "--new")
    assert again.exit_code == 0, again.output
    doc = json.loads((library / "library.json").read_text())
    pairs = {frozenset((d["original"], d["duplicate"])) for d in doc["dhash_duplicates"]}
    clustered = {p for pr in pairs for p in pr}
    assert a["path"] in clustered
    assert b["path"] in clustered
    after = json.loads(cli("review", "list", library / "runbook.py", "--json").output)
    assert after["pending_pairs"] == listed["pending_pairs"] - 1
    assert after["decisions_kept"] == 1


def test_rehearsal_passes_and_leaves_production_alone(library: Path) -> None:
    from handrail.resources import JSONFile

    rb = write(
        library / "runbook.py",
        """
        from pathlib import Path
        from handrail.recipes.dhash.recipe import build
        runbook = build(Path(__file__).parent, mean_ms=10_000, p95_ms=60_000,
                        max_failure_rate=0.1)
    """,
    )
    before = JSONFile("l", library / "library.json").fingerprint().digest
    result = cli("rehearse", rb)
    assert result.exit_code == 0, result.output
    assert JSONFile("l", library / "library.json").fingerprint().digest == before
