"""Recipe A's "stamp pushed" stamps only what PeerTube took: a video the push rejected
(404) or a catalogue path with no video UUID stays unstamped, so a later push retries it."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from handrail import Journal, Runbook, RunStatus
from handrail.engine.loader import runbook_key
from handrail.recipes.domains.logic import CATEGORY_OF, PUSHABLE, uuid_of
from handrail.recipes.domains.recipe import backfill_steps, build, push_steps
from handrail.recipes.domains.sample import make_sample
from handrail.resources import Directory, SQLite
from handrail.testing.peertube import PeerTubeServer

from .helpers import run_runbook

pytestmark = pytest.mark.postgres
TOKEN = "tok-stamp-test"
AT = "2026-02-02T00:00:00+00:00"


@pytest.fixture
def world(pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    root = tmp_path / "recon"
    info = make_sample(root, documents=800, seed=4, pg_dsn=pg_dsn)
    catalogued = {h for (h,) in SQLite("r", root / "recon.db").query("SELECT hash FROM catalogue")}
    assigned = sorted(h for h, s in info.statuses.items() if s == "assigned" and h in catalogued)
    monkeypatch.setenv("PEERTUBE_TOKEN", TOKEN)
    with PeerTubeServer(pg_dsn, token=TOKEN) as server:
        videos = {
            h: uuid_of(p)
            for h, p in SQLite("r", root / "recon.db").query("SELECT hash, path FROM catalogue")
            if uuid_of(p)
        }
        yield {
            "root": root,
            "dsn": pg_dsn,
            "url": server.url,
            "not_video": assigned[0],
            "videos": videos,
        }


def _decided(root: Path) -> dict[str, tuple[str | None, str | None]]:
    """hash -> (video uuid, stamp) of every pushable document in the catalogue."""
    marks = ", ".join(f"'{s.value}'" for s in PUSHABLE)
    rows = SQLite("r", root / "recon.db").query(
        "SELECT d.hash, c.path, d.peertube_category_pushed_at FROM documents d JOIN catalogue c "
        f"ON c.hash = d.hash WHERE d.recon_domain_status IN ({marks})"
    )
    return {h: (uuid_of(p), at) for h, p, at in rows}


def test_stamp_only_what_the_push_applied(world: dict[str, Any], tmp_path: Path) -> None:
    root, dsn = world["root"], world["dsn"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        # PeerTube lost one video since the catalogue was written: its push is a 404.
        gone = conn.execute("SELECT * FROM video ORDER BY uuid LIMIT 1").fetchone()
        assert gone is not None
        conn.execute("DELETE FROM video WHERE id = %s", (gone[0],))
    gone_uuid = str(gone[1])
    # One assigned document's catalogue entry is not a video link: nothing to push.
    with sqlite3.connect(root / "recon.db") as db:
        db.execute(
            "UPDATE catalogue SET path = 'https://tube.example/about/manual.pdf' WHERE hash = ?",
            (world["not_video"],),
        )
    db.close()
    journal = Journal(tmp_path / ".h")
    rb = build(
        root,
        peertube_url=world["url"],
        peertube_dsn=dsn,
        assigned_at=AT,
        stages=(100, None),
        reprocess_stages=(10, None),
    )
    _, result = run_runbook(rb, journal, key="full", auto_approve=True, allow_destructive=True)
    assert result.status is RunStatus.COMPLETED, result.message
    assert any(
        gone_uuid in r["source"] or gone_uuid in r["key"]
        for r in journal.rejects(result.run_id, "push categories")
    )
    decided = _decided(root)
    missing = {h for h, (u, _) in decided.items() if u == gone_uuid}
    no_uuid = {h for h, (u, _) in decided.items() if u is None}
    assert missing, "the deleted video has a decided document"
    assert no_uuid, "the sample has decided documents that are not videos"
    stamped = {h for h, (_, at) in decided.items() if at is not None}
    assert stamped == set(decided) - missing - no_uuid
    assert all(decided[h][1] is None for h in missing | no_uuid)

    # The video comes back: a push-and-stamp runbook retries exactly what was left.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"INSERT INTO video VALUES ({', '.join(['%s'] * len(gone))})", gone)
    recon = SQLite("recon", root / "recon.db")
    concepts = Directory("concepts", root / "concepts", backup_when_read=False)
    push, stamp, _ = push_steps(
        root,
        recon,
        concepts,
        peertube_url=world["url"],
        peertube_dsn=dsn,
        token_env="PEERTUBE_TOKEN",
        assigned_at=AT,
        stages=(100, None),
    )
    _, second = run_runbook(
        Runbook("domains-push", steps=[push, stamp]), journal, key="push", auto_approve=True
    )
    assert second.status is RunStatus.COMPLETED, second.message
    assert journal.step(second.run_id, "push categories").items_total == len(missing)
    decided = _decided(root)
    assert {h for h, (_, at) in decided.items() if at is None} == no_uuid


def test_a_resolved_tie_is_pushed_by_the_next_run(world: dict[str, Any], tmp_path: Path) -> None:
    """docs/cli.md: a manual_assigned document "is pushed by the next run". Pass 1 has
    nothing left to write then, and the benchmark gate says so instead of failing."""
    from .helpers import cli, write

    root = world["root"]
    rb = write(
        root / "runbook.py",
        f"""
        from pathlib import Path
        from handrail.recipes.domains.recipe import build
        runbook = build(str(Path(__file__).parent), peertube_url={world["url"]!r},
                        peertube_dsn={world["dsn"]!r}, stages=(100, None),
                        reprocess_stages=(10, None))
    """,
    )
    first = cli("run", rb, "--yes", "--allow-destructive")
    assert first.exit_code == 0, first.output
    tied = json.loads(cli("ties", "list", rb, "--json").output)
    doc = next(t for t in tied if t["hash"] in world["videos"])
    assert cli("ties", "resolve", rb, doc["hash"][:12], "Medical", "--as", "ana").exit_code == 0
    second = cli("run", rb, "--new", "--yes", "--allow-destructive")
    assert second.exit_code == 0, second.output
    journal = Journal(root / ".handrail")
    run = journal.latest_run(runbook_key(rb))
    assert run is not None
    checks = [c for c in journal.checks(run.id) if c["name"] == "assigned vs tied"]
    assert checks[-1]["outcome"] == "pass"
    assert "nothing left to assign" in checks[-1]["evidence"]["message"]
    (row,) = SQLite("r", root / "recon.db").query(
        "SELECT peertube_category_pushed_at FROM documents WHERE hash = ?", (doc["hash"],)
    )
    assert row[0] is not None
    uuid = world["videos"][doc["hash"]]
    with psycopg.connect(world["dsn"]) as conn:
        (category,) = conn.execute("SELECT category FROM video WHERE uuid = %s", (uuid,)).fetchone()
    assert category == CATEGORY_OF["Medical"]


def test_no_rows_on_an_undecided_table_still_fails(tmp_path: Path) -> None:
    """Nothing to write and nothing decided before is not "all done": the gate fails."""
    root = tmp_path / "recon"
    make_sample(root, documents=30, seed=1)
    with sqlite3.connect(root / "recon.db") as db:
        db.execute("DELETE FROM catalogue")
        db.execute("DELETE FROM documents")
    db.close()
    recon, _, steps = backfill_steps(str(root), assigned_at=AT)  # a str, like build()
    assert recon.path == root / "recon.db"
    _, result = run_runbook(
        Runbook("empty", steps=steps), tmp_path / ".h", key="empty", auto_approve=True
    )
    assert result.status is RunStatus.FAILED
    assert "dry run matches the benchmarks" in result.message
