"""The public API is `handrail` itself: every name is exported, loads, and is documented,
the optional extras load only when used, and the docs teach only `from handrail import …`
(as httpx's tests/test_exported_members.py holds its namespace)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import handrail

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_every_exported_name_loads() -> None:
    for name in handrail.__all__:
        assert getattr(handrail, name) is not None, name
    assert set(handrail.__all__) <= set(dir(handrail))


def test_every_exported_name_is_documented_in_the_api_page() -> None:
    api = (ROOT / "docs" / "api.md").read_text()
    listed = set(re.findall(r"^- `([A-Za-z_]+)`:", api, flags=re.M))
    assert listed == set(handrail.__all__)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchThing"):
        handrail.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018


def test_import_handrail_loads_no_optional_extra() -> None:
    code = (
        "import sys, handrail\n"
        "heavy = [m for m in ('psycopg', 'httpx', 'jinja2', 'pyarrow', 'numpy', 'PIL') "
        "if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_docs_import_only_from_handrail() -> None:
    """`handrail.conversions` (a namespace of the API) and a recipe's own module (each
    recipe documents its `build`) are the two other paths the docs may show."""
    allowed = re.compile(r"^handrail(\.conversions|\.recipes\.[a-z_]+\.recipe)?$")
    found = []
    for doc in DOCS:
        for m in re.finditer(r"^\s*(?:from|import) (handrail[\w.]*)", doc.read_text(), re.M):
            if not allowed.match(m.group(1)):
                found.append(f"{doc.relative_to(ROOT)}: {m.group(0).strip()}")
    assert found == []
