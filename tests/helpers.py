"""Shared helpers for the tests: tiny runbooks on real files, one way to build and run an
executor on a runbook, and the CLI as users run it."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from handrail import Executor, Journal, Runbook, RunOptions, RunResult
from handrail.cli import main

HANDRAIL = [sys.executable, "-m", "handrail.cli"]


def cli(*args: str, input: str | None = None) -> Result:
    """Run the CLI in-process (fast), the way a user would type it."""
    return CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)


def cli_proc(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a real subprocess (for crashes, concurrency and exit codes)."""
    full_env = os.environ | {"COLUMNS": "200", "NO_COLOR": "1"} | (env or {})
    return subprocess.run(
        [*HANDRAIL, *map(str, args)],
        cwd=cwd,
        env=full_env,
        text=True,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def make_executor(
    rb: Runbook, state: Path | Journal, *, key: str | None = None, **options: Any
) -> Executor:
    """The one way tests build an executor on a runbook.

    ``state`` is the state directory (its journal is opened here) or a ``Journal`` the test
    reads afterwards. ``key`` names the runbook across runs; by default ``<state>/<runbook
    name>``, so runbooks of different names sharing a state directory never resume each
    other's runs, and the same runbook run again resumes or starts anew as the CLI would.
    ``options`` are ``RunOptions`` fields with RunOptions' own defaults: nothing is approved,
    nothing destructive allowed, the preflight runs, unless the test says so.
    """
    journal = state if isinstance(state, Journal) else Journal(state)
    if key is None:
        key = str(journal.path.parent / rb.name)
    return Executor(rb, journal, runbook_key=key, options=RunOptions(**options))


def run_runbook(
    rb: Runbook, state: Path | Journal, *, key: str | None = None, **options: Any
) -> tuple[Executor, RunResult]:
    """Build an executor (see :func:`make_executor`) and run ``rb`` once: (executor, result)."""
    ex = make_executor(rb, state, key=key, **options)
    return ex, ex.run()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def make_items_db(path: Path, n: int = 50) -> Path:
    """A small SQLite database with an items table keyed by id."""
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, status TEXT, score REAL);"
    )
    conn.executemany(
        "INSERT INTO items VALUES (?,?,?,?)",
        [(i, f"item {i}", "new" if i % 3 else "old", i / 7) for i in range(1, n + 1)],
    )
    conn.commit()
    conn.close()
    return path
