"""The docs speak for the project: every README command runs as shown, every command has
help, and the public API is complete."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

import handrail

from .helpers import cli

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def readme_commands() -> list[list[str]]:
    block = README.split("```console", 1)[1].split("```", 1)[0]
    out = []
    for line in block.splitlines():
        line = line.strip()
        if line.startswith("$ handrail "):
            out.append(shlex.split(line[2:], comments=True)[1:])
    return out


def test_readme_starts_with_the_two_commands() -> None:
    head = "\n".join(README.splitlines()[:8])
    assert "make demo" in head
    assert "make test" in head


def test_readme_session_runs_as_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    commands = readme_commands()
    assert len(commands) >= 8
    for args in commands:
        result = cli(*args)
        expected = 3 if "--no-input" in args else 0
        assert result.exit_code == expected, (args, result.output)


def test_readme_example_runbook_runs(tmp_path: Path) -> None:
    import sqlite3

    code = README.split("```python", 1)[1].split("```", 1)[0]
    (tmp_path / "add_status.py").write_text(code)
    conn = sqlite3.connect(tmp_path / "app.db")
    conn.execute("CREATE TABLE documents (id INTEGER PRIMARY KEY, title TEXT, updated TEXT)")
    conn.executemany(
        "INSERT INTO documents VALUES (?,?,?)",
        [(i, f"doc {i}", f"202{i % 6}-06-01") for i in range(100)],
    )
    conn.commit()
    conn.close()
    before = cli("fingerprint", tmp_path / "app.db").output
    assert cli("plan", tmp_path / "add_status.py").exit_code == 0
    paused = cli("run", tmp_path / "add_status.py", "--no-input")
    assert paused.exit_code == 3, paused.output
    assert cli("approve", tmp_path / "add_status.py").exit_code == 0
    assert cli("run", tmp_path / "add_status.py").exit_code == 0
    assert cli("rollback", tmp_path / "add_status.py").exit_code == 0
    assert cli("fingerprint", tmp_path / "app.db").output == before


def test_docs_name_every_command() -> None:
    from handrail.cli import main

    text = (ROOT / "docs" / "cli.md").read_text()
    for name in main.commands:
        assert re.search(rf"^## `?handrail {name}\b", text, re.M), f"docs/cli.md lacks {name}"


def test_public_api_is_complete() -> None:
    exported = set(handrail.__all__)
    for name in exported:
        assert hasattr(handrail, name), name
    public = {n for n in vars(handrail) if not n.startswith("_") and n[0].isupper()} - {
        "TYPE_CHECKING"
    }
    assert public <= exported, public - exported
