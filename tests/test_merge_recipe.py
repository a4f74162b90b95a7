"""Recipe D end to end on a real PostgreSQL: deletions since the last sync honoured, new
videos kept, the 67 curated records intact at every gate, parity proven, the read switch
flipped last, and a rollback that returns every resource to its fingerprint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from handrail import RunStatus
from handrail.recipes.merge.recipe import build
from handrail.recipes.merge.sample import make_sample
from handrail.resources import Directory
from handrail.resources.postgres import Postgres

from .helpers import run_runbook

pytestmark = pytest.mark.postgres


def test_merge_recipe(pg_dsn: str, tmp_path: Path) -> None:
    root = tmp_path / "ytv2"
    info = make_sample(root, videos=600, seed=2)
    target = Postgres("t", pg_dsn)
    before = (
        target.fingerprint().digest,
        Directory("d", root, exclude=[".handrail"]).fingerprint().digest,
    )
    ex, result = run_runbook(
        build(root, dsn=pg_dsn, rows_per_batch=100), tmp_path / ".h", auto_approve=True
    )
    assert result.status is RunStatus.COMPLETED, result.message
    ids = {v for (v,) in target.query("SELECT video_id FROM content")}
    assert not ids & set(info.deleted_on_dashboard)
    assert set(info.new_on_processing) <= ids
    curated = target.query(
        "SELECT count(*) FROM content WHERE video_id = ANY(%s)", (sorted(info.curated),)
    )
    assert curated == [(67,)]
    outcomes = {(c["gate"], c["name"]): c["outcome"] for c in ex.journal.checks(result.run_id)}
    assert outcomes[("copy content/content equals the merge", "parity content = content")] == "pass"
    assert all(o == "pass" for (g, n), o in outcomes.items() if n.startswith("curated"))
    assert json.loads((root / "read_switch.json").read_text())["read_from"] == "postgres"
    undone = ex.rollback(result.run_id)
    assert undone.exit_code == 0, undone.message
    assert undone.warnings == []
    assert (
        target.fingerprint().digest,
        Directory("d", root, exclude=[".handrail"]).fingerprint().digest,
    ) == before


def test_merge_recipe_rehearses_on_clones(pg_dsn: str, tmp_path: Path) -> None:
    from .helpers import cli, write

    root = tmp_path / "ytv2"
    make_sample(root, videos=300, seed=5)
    rb = write(
        root / "runbook.py",
        f"""
        from pathlib import Path
        from handrail.recipes.merge.recipe import build
        runbook = build(Path(__file__).parent, dsn={pg_dsn!r}, rows_per_batch=100)
    """,
    )
    target = Postgres("t", pg_dsn)
    before = target.fingerprint().digest
    result = cli("rehearse", rb)
    assert result.exit_code == 0, result.output
    assert target.fingerprint().digest == before  # production untouched
