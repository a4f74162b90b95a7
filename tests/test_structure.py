"""The layout holds: no import cycle in src/handrail, and only recipes and tests use
handrail.testing (the engine, resources, steps, table copy, report and CLI never do).

The graph is read from the source with ``ast``: every ``import`` and ``from … import``,
at module level or inside functions (a function-level import is how a cycle hides), except
under ``if TYPE_CHECKING:``. An alias module left at an old path for one release
(``sys.modules[__name__] = …``) is a redirection, not a module of its own: it is skipped.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "handrail"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        out[".".join(p for p in parts if p != "__init__")] = path
    return out


MODULES = _modules()


def _is_alias(path: Path) -> bool:
    return "sys.modules[__name__] =" in path.read_text()


def _target(module: str, node: ast.ImportFrom) -> list[str]:
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    if node.level:
        parts = package.split(".")
        base = ".".join(parts[: len(parts) - (node.level - 1)])
        target = f"{base}.{node.module}" if node.module else base
    else:
        target = node.module or ""
    named = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
    if named:
        return named
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return [target] if target else []


def _imports(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text())
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.ImportFrom):
                found.update(_target(module, node))
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name in MODULES)
            for field in ("body", "orelse", "finalbody", "handlers"):
                sub = getattr(node, field, None)
                if isinstance(sub, list):
                    visit([s for s in sub if isinstance(s, ast.stmt)])
            if isinstance(node, ast.Try):
                for h in node.handlers:
                    visit(h.body)

    visit(tree.body)
    found.discard(module)
    # importing handrail.x.y imports the package handrail.x first: that is not an edge
    return {m for m in found if not module.startswith(m + ".")}


def _graph() -> dict[str, set[str]]:
    live = {m for m, p in MODULES.items() if not _is_alias(p)}
    return {m: {t for t in _imports(m) if t in live} for m in live}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_no_import_cycle() -> None:
    assert _cycles(_graph()) == []


def test_a_planted_cycle_is_found() -> None:
    """The checker itself can fail."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_only_recipes_and_testing_import_handrail_testing() -> None:
    graph = _graph()
    allowed = ("handrail.testing", "handrail.recipes")
    bad = sorted(
        m
        for m, targets in graph.items()
        if not m.startswith(allowed) and any(t.startswith("handrail.testing") for t in targets)
    )
    assert bad == []
