"""A small document model, rendered to Markdown (here) and to HTML (a Jinja2 template).

Documents are built once as blocks (headings, paragraphs, lists, tables, code, STOP
callouts), so the Markdown and the HTML of one document always carry the same content.
Inline text uses a sliver of Markdown that both renderers understand: ```code``` spans,
``**strong**``, and backslash escapes. Build it with :func:`code` and :func:`plain`, so
that text from a runbook (a step name with a backtick, SQL with ``*``) stays literal.

Everything above the footer is stable: the same runbook and journal give the same bytes,
so the documents can be committed and diffed. The footer is clearly separated and holds
what may differ between machines (the plan hash covers absolute paths).
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Literal

from ..errors import BadInput

# code and plain live with the steps' explanations, which write the same inline markup.
from ..inline import code as code
from ..inline import plain as plain

FOOTER_MARK = "<!-- handrail: footer (not part of the diffable document) -->"


def strong(text: str) -> str:
    """Bold inline text (already-escaped inline markup inside is kept)."""
    return f"**{text}**"


def anchor(text: str) -> str:
    """A stable id for a heading: lowercase words joined by dashes."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


@dataclass(frozen=True)
class Heading:
    level: int
    text: str
    id: str = ""


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]
    ordered: bool = False


@dataclass(frozen=True)
class Table:
    columns: list[str]
    rows: list[list[str]]
    # per column: "left" or "right" (numbers)
    align: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Code:
    text: str
    lang: str = "console"


@dataclass(frozen=True)
class Callout:
    kind: Literal["stop", "note", "warning"]
    text: str


Block = Heading | Paragraph | Bullets | Table | Code | Callout


@dataclass
class Document:
    """A titled list of blocks, and a footer kept apart from them."""

    title: str
    blocks: list[Block] = field(default_factory=list)
    footer: list[str] = field(default_factory=list)

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)

    def heading(self, level: int, text: str, id: str = "") -> None:
        self.blocks.append(Heading(level, text, id or anchor(text)))

    def para(self, text: str) -> None:
        self.blocks.append(Paragraph(text))

    def bullets(self, items: list[str], *, ordered: bool = False) -> None:
        if items:
            self.blocks.append(Bullets(items, ordered))

    def table(self, columns: list[str], rows: list[list[str]], align: Sequence[str] = ()) -> None:
        self.blocks.append(Table(columns, rows, list(align)))

    def code(self, text: str, lang: str = "console") -> None:
        self.blocks.append(Code(text, lang))

    def callout(self, kind: Literal["stop", "note", "warning"], text: str) -> None:
        self.blocks.append(Callout(kind, text))

    def headings(self, level: int = 2) -> list[Heading]:
        return [b for b in self.blocks if isinstance(b, Heading) and b.level == level]


# -- Markdown ---------------------------------------------------------------------------------
_CALLOUT_LABEL = {"stop": "STOP.", "note": "Note.", "warning": "Warning."}


def _cell(text: str) -> str:
    # GitHub tables: a pipe in a cell (even in a code span) is written \| ; no newlines.
    return text.replace("|", "\\|").replace("\n", "<br>")


def to_markdown(doc: Document) -> str:
    """The document as GitHub-flavoured Markdown, ending with one newline."""
    out: list[str] = [f"# {doc.title}"]
    for block in doc.blocks:
        if isinstance(block, Heading):
            out.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Paragraph):
            out.append(block.text)
        elif isinstance(block, Bullets):
            out.append(
                "\n".join(
                    f"{f'{i}.' if block.ordered else '-'} {item}"
                    for i, item in enumerate(block.items, 1)
                )
            )
        elif isinstance(block, Table):
            aligns = block.align or ["left"] * len(block.columns)
            rule = ["---:" if a == "right" else "---" for a in aligns]
            lines = [
                "| " + " | ".join(_cell(c) for c in block.columns) + " |",
                "| " + " | ".join(rule) + " |",
            ]
            lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in block.rows]
            out.append("\n".join(lines))
        elif isinstance(block, Code):
            longest = max((len(m) for m in re.findall(r"`{3,}", block.text)), default=2)
            fence = "`" * (longest + 1)
            out.append(f"{fence}{block.lang}\n{block.text.rstrip()}\n{fence}")
        else:
            text = block.text.replace("\n", "\n> ")
            out.append(f"> **{_CALLOUT_LABEL[block.kind]}** {text}")
    if doc.footer:
        out.append("---")
        out.append(FOOTER_MARK)
        out.append("  \n".join(doc.footer))
    return "\n\n".join(out) + "\n"


# -- HTML -----------------------------------------------------------------------------------------
def inline_html(text: str) -> str:
    """Inline markup to HTML: code spans, strong, escapes; everything else escaped."""
    out: list[str] = []
    i, n = 0, len(text)
    bold = False
    buf: list[str] = []

    def flush() -> None:
        if buf:
            out.append(html.escape("".join(buf), quote=False))
            buf.clear()

    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n:
            buf.append(text[i + 1])
            i += 2
        elif ch == "`":
            j = i
            while j < n and text[j] == "`":
                j += 1
            fence = text[i:j]
            end = text.find(fence, j)
            while end != -1 and end + len(fence) < n and text[end + len(fence)] == "`":
                end = text.find(fence, end + len(fence) + 1)
            if end == -1:
                buf.append(fence)
                i = j
                continue
            flush()
            body = text[j:end]
            if body.startswith(" ") and body.endswith(" ") and body.strip():
                body = body[1:-1]
            out.append(f"<code>{html.escape(body, quote=False)}</code>")
            i = end + len(fence)
        elif text.startswith("**", i):
            flush()
            out.append("</strong>" if bold else "<strong>")
            bold = not bold
            i += 2
        else:
            buf.append(ch)
            i += 1
    flush()
    if bold:
        out.append("</strong>")
    return "".join(out)


def to_html(doc: Document) -> str:
    """The document as one self-contained HTML page (inline CSS, no scripts)."""
    try:
        import jinja2
        from markupsafe import Markup
    except ImportError:  # the optional "review" extra
        raise BadInput(
            "HTML output needs Jinja2, which is not installed",
            hint="pip install 'handrail[review]', or use --format md",
        ) from None

    template = (
        resources.files("handrail.report").joinpath("templates/document.html.j2").read_text("utf-8")
    )
    env = jinja2.Environment(
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["inline"] = lambda s: Markup(inline_html(str(s)))
    return env.from_string(template).render(
        doc=doc,
        blocks=[(type(b).__name__.lower(), b) for b in doc.blocks],
        toc=doc.headings(2),
        callout_label=_CALLOUT_LABEL,
    )


Format = Literal["md", "html"]


def render(doc: Document, fmt: Format = "md") -> str:
    """Markdown or HTML."""
    return to_html(doc) if fmt == "html" else to_markdown(doc)
