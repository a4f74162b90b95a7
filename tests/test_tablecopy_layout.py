"""The table copy and parity package: one public API, no private names across modules,
the old module paths still importable, and SQLite-only parity without psycopg."""

from __future__ import annotations

import ast
import importlib
import os
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path

import pytest

import handrail.tablecopy as tablecopy

PACKAGE = Path(tablecopy.__file__).parent
SRC = PACKAGE.parent

OLD_PATHS = {
    "handrail.pgcopy": "handrail.tablecopy.copy",
    "handrail.pgcopy_arrow": "handrail.tablecopy.read_arrow",
    "handrail.pgcopy_sql": "handrail.tablecopy.read_sql",
    "handrail.parity": "handrail.tablecopy.parity",
    "handrail.parity_sqlite": "handrail.tablecopy.parity_sqlite",
    "handrail.sqlmap": "handrail.tablecopy.mapping",
    "handrail.ops.pg_copy": "handrail.tablecopy.steps",
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, str, int]]:
    """(module imported from, name, line) of every ``from x import y`` in ``path``, with
    relative imports resolved to absolute module names."""
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package[: len(package) - node.level + 1]
            module = ".".join([*base, *([node.module] if node.module else [])])
        else:
            module = node.module or ""
        out += [(module, a.name, node.lineno) for a in node.names]
    return out


def test_no_private_name_crosses_a_module_of_the_package() -> None:
    """Inside tablecopy, a name with a leading underscore stays in its module; outside,
    no module of handrail imports one from the package."""
    crossings = []
    for path in sorted(SRC.rglob("*.py")):
        mine = _module_name(path)
        for module, name, line in _imports(path):
            inside = module == "handrail.tablecopy" or module.startswith("handrail.tablecopy.")
            if inside and module != mine and name.startswith("_") and name != "__future__":
                crossings.append(f"{path.relative_to(SRC)}:{line}: from {module} import {name}")
    assert crossings == []


def test_the_package_imports_no_private_name_from_elsewhere() -> None:
    """The package uses other modules of handrail only through their public names
    (``_split_table`` of resources.postgres was one)."""
    crossings = []
    for path in sorted(PACKAGE.glob("*.py")):
        for module, name, line in _imports(path):
            if module.startswith("handrail.") and name.startswith("_"):
                crossings.append(f"{path.name}:{line}: from {module} import {name}")
    assert crossings == []


def test_the_check_sees_a_private_import(tmp_path: Path) -> None:
    """The parser above resolves relative imports: a planted ``from .mapping import _x``
    in a module of the package is reported as crossing."""
    planted = PACKAGE / "_planted_for_test.py"
    planted.write_text("from .mapping import _to_bool\n")
    try:
        found = _imports(planted)
    finally:
        planted.unlink()
    assert found == [("handrail.tablecopy.mapping", "_to_bool", 1)]


def test_every_module_lists_its_public_names() -> None:
    """Each module of the package has ``__all__``; every name in it exists, and every
    name another module of the package imports from it is listed there."""
    alls: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.glob("*.py")):
        mod = importlib.import_module(_module_name(path))
        assert hasattr(mod, "__all__"), f"{path.name} has no __all__"
        missing = [n for n in mod.__all__ if not hasattr(mod, n)]
        assert missing == [], f"{path.name}: __all__ names {missing}, which it lacks"
        alls[mod.__name__] = set(mod.__all__)
    unlisted = []
    for path in sorted(PACKAGE.glob("*.py")):
        for module, name, line in _imports(path):
            if module in alls and module != _module_name(path) and name not in alls[module]:
                unlisted.append(f"{path.name}:{line}: {name} is not in {module}.__all__")
    assert unlisted == []


def test_the_package_api_is_its_all() -> None:
    for name in tablecopy.__all__:
        assert getattr(tablecopy, name) is not None
    for name in ("CopyTable", "Parity", "TableMap", "Column", "copy_table", "parity"):
        assert name in tablecopy.__all__


@pytest.mark.parametrize(("old", "new"), sorted(OLD_PATHS.items()))
def test_old_module_paths_are_the_new_modules(old: str, new: str) -> None:
    """A runbook written against the old paths keeps working for one release, private
    names included: the old module is the new one."""
    assert importlib.import_module(old) is importlib.import_module(new)


def _sqlite_table(path: Path, rows: list[tuple[int, str, float | None]]) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score REAL)")
        conn.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
        conn.commit()


def test_sqlite_only_parity_runs_without_psycopg(tmp_path: Path) -> None:
    """Parity between two SQLite files, in a process where psycopg cannot be imported:
    equal tables are equal, and a changed, a missing and an extra row are each found."""
    rows = [(i, f"n{i}", i / 3 if i % 7 else None) for i in range(1, 2001)]
    _sqlite_table(tmp_path / "a.db", rows)
    other = [r for r in rows if r[0] != 10] + [(5000, "new", 1.0)]
    other = [(i, "changed" if i == 20 else n, s) for i, n, s in other]
    _sqlite_table(tmp_path / "b.db", other)
    _sqlite_table(tmp_path / "c.db", rows)
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["psycopg"] = None  # any import of psycopg now raises ImportError
        from handrail.resources.sqlite import SQLite
        from handrail.tablecopy import Column, TableMap, parity

        m = TableMap("t", "t", key=["id"], columns=[Column("id"), Column("name"),
                     Column("score")])
        a = SQLite("a", {str(tmp_path / "a.db")!r})
        same = parity(a, SQLite("c", {str(tmp_path / "c.db")!r}), m)
        diff = parity(a, SQLite("b", {str(tmp_path / "b.db")!r}), m)
        assert "psycopg" not in [n for n, v in sys.modules.items() if v is not None]
        print(same.equal, same.source_rows, same.target_rows)
        print(diff.missing, diff.extra, diff.different)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(SRC.parent)}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["True 2000 2000", "[(10,)] [(5000,)] [(20,)]"]
