"""Documents generated from a runbook and its journal (Markdown and HTML).

- :func:`runbook_document`: the operator's runbook and the blast-radius table, from the
  definition, a dry run, and the last rehearsal's measured times;
- :func:`run_report`: the audit of one run;
- :func:`render`: a :class:`Document` as Markdown (``"md"``) or HTML (``"html"``).

The library builds documents; writing them to a file or the terminal is the CLI's job.
"""

from .audit import run_report
from .document import FOOTER_MARK, Document, render, to_html, to_markdown
from .runbook_doc import DocInputs, Rehearsal, last_rehearsal, rollback_estimate, runbook_document

__all__ = [
    "FOOTER_MARK",
    "DocInputs",
    "Document",
    "Rehearsal",
    "last_rehearsal",
    "render",
    "rollback_estimate",
    "run_report",
    "runbook_document",
    "to_html",
    "to_markdown",
]
