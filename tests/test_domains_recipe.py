"""Recipe A end to end: real recon.db and concept files, a real PostgreSQL PeerTube
database behind a loopback PeerTube-like API. The push restores each video's prior category
exactly on rollback; quarantined concept directories come back byte-identical."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from handrail import RunStatus
from handrail.recipes.domains.recipe import build
from handrail.recipes.domains.sample import make_sample
from handrail.resources import Directory, SQLite
from handrail.resources.postgres import Postgres
from handrail.testing.peertube import PeerTubeServer

from .helpers import cli, run_runbook, write

pytestmark = pytest.mark.postgres
TOKEN = "tok-recipe-a-test"


@pytest.fixture
def world(pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    root = tmp_path / "recon"
    info = make_sample(root, documents=1500, seed=3, pg_dsn=pg_dsn)
    monkeypatch.setenv("PEERTUBE_TOKEN", TOKEN)
    with PeerTubeServer(pg_dsn, token=TOKEN) as server:
        yield {"root": root, "dsn": pg_dsn, "url": server.url, "info": info, "server": server}


def state(w: dict[str, Any]) -> dict[str, str]:
    return {
        "recon": SQLite("r", w["root"] / "recon.db").fingerprint().digest,
        "concepts": Directory("c", w["root"] / "concepts").fingerprint().digest,
        "peertube": Postgres("p", w["dsn"]).fingerprint().digest,
    }


def categories(dsn: str) -> dict[str, int | None]:
    with psycopg.connect(dsn) as conn:
        return {str(u): c for u, c in conn.execute("SELECT uuid, category FROM video")}


def test_recipe_a_forward_and_exact_rollback(world: dict[str, Any], tmp_path: Path) -> None:
    before = state(world)
    prior = categories(world["dsn"])
    rb = build(
        world["root"],
        peertube_url=world["url"],
        peertube_dsn=world["dsn"],
        stages=(100, 300, None),
        reprocess_stages=(10, 50, None),
    )
    ex, result = run_runbook(rb, tmp_path / ".handrail", auto_approve=True, allow_destructive=True)
    assert result.status is RunStatus.COMPLETED, result.message
    recon = SQLite("r", world["root"] / "recon.db")
    pushed = dict(
        recon.query(
            "SELECT count(*), count(peertube_category_pushed_at) FROM documents "
            "WHERE recon_domain_status IN ('assigned', 'tied_pass_2')"
        )
    )
    assert pushed  # every pushable document in the catalogue got its stamp
    after = categories(world["dsn"])
    assert sum(1 for c in after.values() if c is not None and c >= 100) > 1000
    keys = [
        g for g in ex.journal.checks(result.run_id) if g["name"] == "PeerTube counts per category"
    ]
    assert [g["outcome"] for g in keys] == ["pass", "pass", "pass"]
    # a curator changes one pushed video's category in PeerTube afterwards
    changed_uuid = next(u for u, c in after.items() if c is not None and c >= 100)
    with psycopg.connect(world["dsn"], autocommit=True) as conn:
        conn.execute("UPDATE video SET category = 5 WHERE uuid = %s", (changed_uuid,))
    undone = ex.rollback(result.run_id)
    assert undone.exit_code == 1
    assert any(changed_uuid in c for c in undone.conflicts)
    restored = categories(world["dsn"])
    assert restored[changed_uuid] == 5  # the curator's change survives
    assert {u: c for u, c in restored.items() if u != changed_uuid} == {
        u: c for u, c in prior.items() if u != changed_uuid
    }  # every other prior value exact
    forced = ex.rollback(result.run_id, force=True)
    assert forced.exit_code == 0, forced.message
    assert state(world) == before


def test_ties_queue_cli(world: dict[str, Any]) -> None:
    rb = write(
        world["root"] / "runbook.py",
        """
        from pathlib import Path
        from handrail.recipes.domains.recipe import build
        runbook = build(Path(__file__).parent)
    """,
    )
    assert cli("run", rb, "--yes").exit_code == 0
    listed = json.loads(cli("ties", "list", rb, "--json").output)
    assert listed, "the sample leaves some ties for a human"
    first = listed[0]
    domain = first["tied"][0][0]
    assert cli("ties", "resolve", rb, first["hash"], domain, "--as", "ines").exit_code == 0
    again = json.loads(cli("ties", "list", rb, "--json").output)
    assert len(again) == len(listed) - 1
    row = SQLite("r", world["root"] / "recon.db").query(
        "SELECT recon_domain, recon_domain_status FROM documents WHERE hash = ?", (first["hash"],)
    )
    assert row == [(domain, "manual_assigned")]
    bad = cli("ties", "resolve", rb, first["hash"], "Astrology")
    assert bad.exit_code == 2
    assert "Astrology" in bad.output
    # A rollback after a person resolved a tie must not drop the columns holding it.
    rolled = cli("rollback", rb)
    assert rolled.exit_code == 1
    assert first["hash"] in " ".join(rolled.output.split())
    assert SQLite("r", world["root"] / "recon.db").query(
        "SELECT recon_domain, recon_domain_status FROM documents WHERE hash = ?", (first["hash"],)
    ) == [(domain, "manual_assigned")]
    kept = cli("rollback", rb, "--keep-theirs")
    assert kept.exit_code == 1  # finished, and what stayed is listed
    assert SQLite("r", world["root"] / "recon.db").query(
        "SELECT recon_domain, recon_domain_status FROM documents WHERE hash = ?", (first["hash"],)
    ) == [(domain, "manual_assigned")]
    assert json.loads(cli("status", rb, "--json").output)["status"] == "rolled_back"


def test_recon_side_rehearses_and_the_push_needs_a_sandbox(world: dict[str, Any]) -> None:
    """The RECON steps rehearse on clones and pass; with the push, rehearsal refuses (exit 2)
    until the runbook names a sandbox for PeerTube's API, and touches nothing."""
    recon_only = write(
        world["root"] / "recon_only.py",
        """
        from pathlib import Path
        from handrail.recipes.domains.recipe import build
        runbook = build(Path(__file__).parent)
    """,
    )
    before = state(world)
    passed = cli("rehearse", recon_only)
    assert passed.exit_code == 0, passed.output
    with_push = write(
        world["root"] / "with_push.py",
        f"""
        from pathlib import Path
        from handrail.recipes.domains.recipe import build
        runbook = build(Path(__file__).parent, peertube_url={world["url"]!r},
                        peertube_dsn={world["dsn"]!r})
    """,
    )
    refused = cli("rehearse", with_push)
    assert refused.exit_code == 2
    assert "sandbox" in refused.output
    assert state(world) == before
