"""Inline text for people: literal words with `code spans`, as documents show them.

Steps explain themselves (:meth:`~handrail.runbook.Step.explain_changes` and its
siblings) in one sentence whose `backtick-quoted` parts are code, the convention checks'
``describe()`` already follow. Ready-made steps quote names with :func:`code`, which
fences a name holding a backtick with longer backtick runs, so any name stays literal.
The documents (``handrail.report``) render such a sentence with :func:`spans`.

This module imports nothing of handrail's, so steps and documents can both use it.
"""

from __future__ import annotations

import re

_SPECIAL = re.compile(r"([\\`*])")
_TICKS = re.compile(r"`+")


def plain(text: object) -> str:
    """Text shown literally: the characters inline markup uses are escaped."""
    return _SPECIAL.sub(r"\\\1", str(text))


def code(text: object) -> str:
    """An inline code span holding ``text`` exactly (fenced by enough backticks)."""
    s = str(text).replace("\n", " ")
    longest = max((len(m) for m in _TICKS.findall(s)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if s.startswith("`") or s.endswith("`") or not s.strip() else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def names(items: list[str]) -> str:
    """``a``, ``b`` and ``c`` as inline code."""
    coded = [code(i) for i in items]
    if len(coded) <= 1:
        return "".join(coded)
    return ", ".join(coded[:-1]) + " and " + coded[-1]


def spans(text: str) -> str:
    """A sentence with `code spans` as document markup: each span kept as written (a run
    of backticks up to the next run of the same length, as Markdown reads it), every
    other character literal (escaped), a backtick run without its closing twin too."""
    out: list[str] = []
    pos = 0
    while (m := _TICKS.search(text, pos)) is not None:
        close = _closing(text, m.end(), len(m.group()))
        if close is None:  # unpaired: literal backticks
            out.append(plain(text[pos : m.end()]))
            pos = m.end()
            continue
        out.append(plain(text[pos : m.start()]))
        out.append(text[m.start() : close])
        pos = close
    out.append(plain(text[pos:]))
    return "".join(out)


def _closing(text: str, start: int, width: int) -> int | None:
    """The end of the first backtick run of exactly ``width`` at or after ``start``."""
    for m in _TICKS.finditer(text, start):
        if len(m.group()) == width:
            return m.end()
    return None
