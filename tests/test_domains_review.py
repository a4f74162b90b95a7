"""`handrail ties resolve` takes the hash as `ties list` shows it: a unique prefix of at
least 8 characters; an ambiguous prefix names its candidates; none is exit 2."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from handrail.recipes.domains.review import AmbiguousHash, UnknownDocument, resolve
from handrail.recipes.domains.sample import make_sample

from .helpers import cli, write


@pytest.fixture(scope="module")
def queue(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, object]]]:
    """A RECON sample after the backfill, with its tie queue, and a planted document whose
    hash shares its first 10 characters with the second queued one."""
    root = tmp_path_factory.mktemp("ties") / "recon"
    make_sample(root, documents=1500, seed=3)
    rb = write(
        root / "runbook.py",
        """
        from pathlib import Path
        from handrail.recipes.domains.recipe import build
        runbook = build(Path(__file__).parent)
    """,
    )
    assert cli("run", rb, "--yes").exit_code == 0
    listed = json.loads(cli("ties", "list", rb, "--json").output)
    assert len(listed) >= 3
    twin = str(listed[1]["hash"])[:10] + "0" * 54
    with sqlite3.connect(root / "recon.db") as conn:
        conn.execute(
            "INSERT INTO documents (hash, status, filename, discovered_at) VALUES (?,?,?,?)",
            (twin, "done", "twin.pdf", "2026-01-01"),
        )
    conn.close()
    return rb, listed


def _status(rb: Path, doc_hash: str) -> tuple[str, str]:
    with sqlite3.connect(rb.parent / "recon.db") as conn:
        row = conn.execute(
            "SELECT recon_domain, recon_domain_status FROM documents WHERE hash = ?", (doc_hash,)
        ).fetchone()
    conn.close()
    return row[0], row[1]


@pytest.mark.parametrize(
    ("chars", "exit_code", "expect"),
    [
        (12, 0, "manual_assigned"),  # what `ties list` shows
        (8, 0, "manual_assigned"),  # the shortest accepted
        (64, 0, "manual_assigned"),  # the full hash
        (7, 2, "at least 8"),
    ],
)
def test_resolve_by_prefix(
    queue: tuple[Path, list[dict[str, object]]], chars: int, exit_code: int, expect: str
) -> None:
    rb, listed = queue
    item = listed[{12: 0, 8: 2, 64: 3, 7: 4}[chars] % len(listed)]
    full = str(item["hash"])
    domain = item["tied"][0][0]  # type: ignore[index]
    result = cli("ties", "resolve", rb, full[:chars], domain, "--as", "ines")
    assert result.exit_code == exit_code, result.output
    assert expect in result.output
    if exit_code == 0:
        assert full in result.output  # the full hash is echoed
        assert _status(rb, full) == (domain, "manual_assigned")
    else:
        assert _status(rb, full)[1] == "tied_manual"


def test_ambiguous_prefix_names_the_candidates(queue: tuple[Path, list[dict[str, object]]]) -> None:
    rb, listed = queue
    full = str(listed[1]["hash"])
    result = cli("ties", "resolve", rb, full[:9], "Medical")
    assert result.exit_code == 2
    assert full in result.output
    assert full[:10] + "0" * 54 in result.output
    assert _status(rb, full)[1] == "tied_manual"
    with pytest.raises(AmbiguousHash, match="2 documents"):
        resolve(rb.parent / "recon.db", full[:10], "Medical", who="ines")
    # one more character is unique again
    assert cli("ties", "resolve", rb, full[:11], "Medical").exit_code == 0


def test_unknown_prefix_is_exit_2(queue: tuple[Path, list[dict[str, object]]]) -> None:
    rb, _ = queue
    result = cli("ties", "resolve", rb, "zzzzzzzzzz", "Medical")
    assert result.exit_code == 2
    assert "no document with hash 'zzzzzzzzzz'" in result.output
    with pytest.raises(UnknownDocument):
        resolve(rb.parent / "recon.db", "zzzzzzzzzz", "Medical", who="ines")
