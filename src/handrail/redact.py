"""Keep secrets out of logs, the journal and reports (policy 7).

Everything handrail writes for people or machines passes through :func:`redact`.
"""

from __future__ import annotations

import re
from typing import Any

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # scheme://user:password@host  ->  scheme://user:***@host
    (
        re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]+(?P<post>@)"),
        r"\g<pre>***\g<post>",
    ),
    # libpq keyword form: password=... (quoted or bare)
    (re.compile(r"(?i)(?P<pre>\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s]+)"), r"\g<pre>***"),
    # HTTP credentials
    (
        re.compile(r"(?i)(?P<pre>\bauthorization\s*[:=]\s*)(bearer\s+|basic\s+|token\s+)?\S+"),
        r"\g<pre>***",
    ),
    (
        re.compile(r"(?i)(?P<pre>[?&](?:access_token|token|api_key|apikey|password)=)[^&\s]+"),
        r"\g<pre>***",
    ),
)

_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Remember a literal secret (a token read from the environment) so it is masked anywhere."""
    if value and len(value) >= 4:
        _secrets.add(value)


def redact(text: str) -> str:
    """Mask passwords in DSNs and URLs, bearer tokens, and registered secrets."""
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    for secret in _secrets:
        text = text.replace(secret, "***")
    return text


def redact_obj(obj: Any) -> Any:
    """Apply :func:`redact` to every string inside a JSON-like structure."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {k: redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact_obj(v) for v in obj]
    return obj
