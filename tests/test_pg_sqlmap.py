"""Conversions and canonical texts of sqlmap, as tables (no database needed)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from handrail.model import Reject
from handrail.tablecopy.mapping import (
    MAX_JSON_DEPTH,
    Column,
    ConversionError,
    Converted,
    MappingError,
    TableMap,
    boolean,
    canonical,
    integer,
    json_depth,
    jsonb,
    jsonb_text,
    timestamptz,
)

T = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expect"),
    [
        ("2024-03-01 12:00:00", T),
        ("2024-03-01T12:00:00Z", T),
        ("2024-03-01T14:00:00+02:00", T),
        ("2024-03-01T12:00:00.000000", T),
        ("2024-03-01 12:00:00 UTC", T),
        (1709294400, T),
        ("1709294400", T),
        (1709294400000, T),  # milliseconds
        (1709294400.0, T),
        ("", None),
        (None, None),
    ],
)
def test_timestamps(raw: Any, expect: datetime | None) -> None:
    assert timestamptz()(raw) == expect


@pytest.mark.parametrize(
    "raw",
    [
        "yesterday",
        "2024-13-01",
        True,
        [1],
        "0001-01-01 00:00:00+05:00",  # year 0 in UTC
        "9999-12-31 23:59:59-01:00",  # year 10000 in UTC
    ],
)
def test_bad_timestamps(raw: Any) -> None:
    with pytest.raises(ConversionError):
        timestamptz()(raw)


@pytest.mark.parametrize(
    ("raw", "expect"),
    [
        ('{"b": 1, "aa": 2, "a": [1.50, 2e3]}', '{"a": [1.50, 2000], "b": 1, "aa": 2}'),
        ("not json", '{"raw_text": "not json"}'),
        ("NaN", '{"raw_text": "NaN"}'),
        ("  ", None),
        (None, None),
        ('"x\\u0001y"', '"x\\u0001y"'),
        ("null", "null"),
    ],
)
def test_json_in_text(raw: Any, expect: str | None) -> None:
    assert jsonb()(raw) == expect


def test_json_deeper_than_the_limit_is_kept_as_raw_text() -> None:
    """A fixed limit, not the caller's stack, decides: the same answer from any reader."""
    deep = "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)
    assert jsonb()(deep) == jsonb_text({"raw_text": deep})
    at_limit = '{"a": ' * MAX_JSON_DEPTH + "1" + "}" * MAX_JSON_DEPTH
    assert jsonb()(at_limit) == at_limit
    # brackets inside strings are not nesting
    many = '["' + "[" * 1000 + '"]'
    assert json_depth(many) == 1
    assert jsonb()(many) == many


def test_json_with_nul_is_a_reject() -> None:
    with pytest.raises(ConversionError, match="u0000"):
        jsonb()('{"a": "\\u0000"}')


@pytest.mark.parametrize(
    ("raw", "expect"),
    [(1, True), (0, False), ("t", True), ("No", False), (None, None), ("", None)],
)
def test_booleans(raw: Any, expect: bool | None) -> None:
    assert boolean()(raw) is expect


@pytest.mark.parametrize("raw", [2, "maybe", 0.5])
def test_bad_booleans(raw: Any) -> None:
    with pytest.raises(ConversionError):
        boolean()(raw)


@pytest.mark.parametrize(
    ("kind", "value", "text"),
    [
        ("float", 1 / 3, "0.333333333333333"),
        ("float", 1e20, "1e+20"),
        ("float", float("inf"), "Infinity"),
        ("float4", 36.56889169125856, "36.5689"),
        ("bool", True, "t"),
        ("timestamp", T, "2024-03-01T12:00:00.000000Z"),
        ("numeric", Decimal("-0.0"), "0.0"),
        ("bytes", b"\x01\xff", "01ff"),
        ("int", 7, "7"),
        ("text", None, None),
    ],
)
def test_canonical_texts(kind: str, value: Any, text: str | None) -> None:
    assert canonical(kind, value) == text


def test_jsonb_key_order_is_postgres_order() -> None:
    # by length in bytes, then bytes: "é" is two bytes, after "bb"
    assert (
        jsonb_text({"bb": 1, "a": 2, "é": 3, "c": None}) == '{"a": 2, "c": null, "bb": 1, "é": 3}'
    )


def test_row_mapping_renames_computes_and_rejects() -> None:
    spec = TableMap(
        "src",
        "dst",
        key=["vid"],
        columns=[
            Column("vid", source="video_id"),
            Column("n", convert=integer()),
            Column("slug", compute=lambda r: r["title"].lower(), kind="text", needs=("title",)),
        ],
    )
    m = spec.bind({"vid": "text", "n": "int", "slug": "text"}, ["video_id", "n", "title"])
    ok = m.convert(m_row(m, video_id="a", n="12", title="Hello"))
    assert isinstance(ok, Converted)
    assert ok.values == ("a", 12, "hello")
    bad = m.convert(m_row(m, video_id="b", n="1.5", title="x"), source_key="2")
    assert isinstance(bad, Reject)
    assert bad.key == "b"
    assert "n:" in bad.reason
    with pytest.raises(MappingError, match="no column 'missing'"):
        TableMap("src", "dst", key=["vid"], columns=[Column("vid", source="missing")]).bind(
            {"vid": "text"}, ["video_id"]
        )


def m_row(m: Any, **values: Any) -> tuple[Any, ...]:
    return tuple(values[c] for c in m.select)
