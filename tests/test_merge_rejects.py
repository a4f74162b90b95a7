"""Recipe D with unconvertible source values: each bad video is a journalled reject with its
key and reason, the rows around it are merged, and the gate after the merge names it."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from handrail import Journal, RunStatus
from handrail.recipes.merge import rules
from handrail.recipes.merge.recipe import build
from handrail.recipes.merge.sample import SampleInfo, make_sample
from handrail.resources.postgres import Postgres

from .helpers import cli, run_runbook, write

pytestmark = pytest.mark.postgres


def _plant(info: SampleInfo, db: Path, sql: str, *args: object) -> None:
    con = sqlite3.connect(db)
    with con:
        con.execute(sql, args)
    con.close()


def _merged_video(info: SampleInfo, *, curated: bool = False) -> str:
    """A video on both sides, neither deleted, new, duplicated nor (unless asked) curated."""
    p = {r["video_id"] for r in rules.read_copy(info.processing).content}
    d = {r["video_id"] for r in rules.read_copy(info.dashboard).content}
    pool = (p & d) - info.duplicates - info.deleted_on_dashboard - info.new_on_processing
    pool = pool & info.curated if curated else pool - info.curated
    return sorted(pool)[3]


def _sample(tmp_path: Path) -> tuple[SampleInfo, str]:
    info = make_sample(tmp_path / "ytv2", videos=300, seed=3)
    bad = _merged_video(info)
    _plant(
        info,
        info.processing,
        "UPDATE content SET published_at = 'not a time' WHERE video_id = ?",
        bad,
    )
    return info, bad


def test_lenient_merge_leaves_out_only_the_bad_video(tmp_path: Path) -> None:
    info, bad = _sample(tmp_path)
    with pytest.raises(rules.sqlmap.ConversionError, match="published_at"):
        rules.expected_merge(info.processing, info.dashboard, info.last_sync)
    rejects: dict[str, str] = {}
    rows = rules.expected_merge(info.processing, info.dashboard, info.last_sync, rejects=rejects)
    assert len(rows) == info.counts["merged.content"] - 1
    assert bad not in {r["video_id"] for r in rows}
    assert list(rejects) == [bad]
    assert "published_at" in rejects[bad]
    assert "not a time" in rejects[bad]
    summary_rejects: dict[str, str] = {}
    summaries = rules.expected_summaries(
        info.processing, info.dashboard, info.last_sync, rejects=summary_rejects
    )
    assert bad not in {s["video_id"] for s in summaries}
    assert summary_rejects
    assert all(k.startswith(f"{bad}/") for k in summary_rejects)


def test_bad_value_is_a_reject_and_the_gate_names_it(pg_dsn: str, tmp_path: Path) -> None:
    info, bad = _sample(tmp_path)
    root = info.root
    journal = Journal(tmp_path / ".h")
    _, result = run_runbook(build(root, dsn=pg_dsn), journal, auto_approve=True)
    assert result.status is RunStatus.FAILED
    assert bad in result.message
    assert "merge summaries/nothing rejected" in result.message
    steps = {s.name: s.status.value for s in journal.steps(result.run_id)}
    assert steps["merge copies"] == "done"
    rejects = journal.rejects(result.run_id, "merge copies")
    assert [r["key"] for r in rejects] == [bad]
    assert "published_at" in rejects[0]["reason"]
    with sqlite3.connect(root / "merged.db") as con:
        (n,) = con.execute("SELECT count(*) FROM content").fetchone()
    assert n == info.counts["merged.content"] - 1  # the rows around it are merged
    assert Postgres("t", pg_dsn).query("SELECT to_regclass('content') IS NOT NULL") == [(True,)]
    assert Postgres("t", pg_dsn).query("SELECT count(*) FROM content") == [(0,)]


def test_accepted_rejects_copy_the_rest(pg_dsn: str, tmp_path: Path) -> None:
    info, bad = _sample(tmp_path)
    _, result = run_runbook(
        build(info.root, dsn=pg_dsn, max_reject_share=0.01), tmp_path / ".h", auto_approve=True
    )
    assert result.status is RunStatus.COMPLETED, result.message
    ids = {v for (v,) in Postgres("t", pg_dsn).query("SELECT video_id FROM content")}
    assert bad not in ids
    assert len(ids) == info.counts["merged.content"] - 1


def test_a_rejected_curated_video_fails_the_curated_check(pg_dsn: str, tmp_path: Path) -> None:
    info = make_sample(tmp_path / "ytv2", videos=300, seed=3)
    bad = _merged_video(info, curated=True)
    _plant(
        info,
        info.processing,
        "UPDATE content SET indexed_at = '2025-13-45' WHERE video_id = ?",
        bad,
    )
    ex, result = run_runbook(
        build(info.root, dsn=pg_dsn, max_reject_share=0.01), tmp_path / ".h", auto_approve=True
    )
    assert result.status is RunStatus.FAILED
    assert "curated records in the target" in result.message
    checks = [
        c for c in ex.journal.checks(result.run_id) if c["name"] == "curated records in the target"
    ]
    assert bad in str(checks[-1]["evidence"])


def test_plan_shows_the_reject(pg_dsn: str, tmp_path: Path) -> None:
    info, bad = _sample(tmp_path)
    rb = write(
        info.root / "runbook.py",
        f"""
        from pathlib import Path
        from handrail.recipes.merge.recipe import build
        runbook = build(Path(__file__).parent, dsn={pg_dsn!r})
    """,
    )
    result = cli("plan", rb, "--json")
    assert result.exit_code == 0, result.output
    steps = {s["name"]: s["plan"] for s in json.loads(result.output)["steps"]}
    merge = steps["merge copies"]
    assert "planned when the run reaches it" not in merge["summary"]
    assert merge["summary"].endswith("1 rejected")
    assert merge["details"]["rejects"][0]["key"] == bad
