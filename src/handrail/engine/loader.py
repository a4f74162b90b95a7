"""Load a runbook file: a Python file that defines ``runbook``."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import BadInput, RunbookError
from ..runbook import Runbook


def load_runbook(path: str | Path) -> Runbook:
    """Execute the file and return its ``runbook``; every failure names the file (and line)."""
    # Resolved, so that paths the runbook builds from __file__ are the same whichever way
    # the file was named (the plan hash covers them, and approvals are bound to it).
    p = Path(path).resolve()
    if not p.exists():
        raise RunbookError(f"runbook file not found: {p}")
    if p.is_dir():
        raise RunbookError(f"{p} is a directory; give the runbook's .py file")
    try:
        source = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RunbookError(f"cannot read runbook {p}: {exc}") from exc
    try:
        code = compile(source, str(p), "exec")
    except SyntaxError as exc:
        raise RunbookError(
            f"{p}:{exc.lineno}:{exc.offset or 0}: syntax error: {exc.msg}",
            hint="fix the runbook file; nothing was run",
        ) from exc
    digest = hashlib.sha256(str(p.resolve()).encode()).hexdigest()[:12]
    name = f"handrail_runbook_{digest}"
    spec = importlib.util.spec_from_loader(name, loader=None, origin=str(p))
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__file__ = str(p)
    sys.modules[name] = module
    _guarded(p, "the runbook", lambda: exec(code, module.__dict__))
    rb = module.__dict__.get("runbook")
    if rb is None:
        raise RunbookError(
            f"{p} does not define `runbook`",
            hint="assign a handrail.Runbook to a module-level variable named runbook",
        )
    if callable(rb) and not isinstance(rb, Runbook):
        rb = _guarded(p, "the runbook factory `runbook()`", rb)
    if not isinstance(rb, Runbook):
        raise RunbookError(f"{p}: `runbook` is a {type(rb).__name__}, not a handrail.Runbook")
    rb.source = source
    return rb


def _guarded(path: Path, what: str, fn: Callable[[], Any]) -> Any:
    """Call ``fn`` (the runbook's code); anything it raises becomes a RunbookError (exit 2).

    SystemExit (``sys.exit`` in a runbook) and the other BaseExceptions must not escape: the
    process would exit silently with a code of the runbook's choosing. Only Ctrl-C passes."""
    try:
        return fn()
    except KeyboardInterrupt:
        raise
    except BadInput as exc:
        if str(path) in exc.message:
            raise
        raise RunbookError(f"{_where(path, exc)}: {exc.message}", hint=exc.hint) from exc
    except BaseException as exc:
        raise _raised(path, exc, what) from exc


def _where(path: Path, exc: BaseException) -> str:
    """``file:line`` of the deepest frame of the runbook file in the traceback."""
    tb = traceback.extract_tb(exc.__traceback__)
    frame = next((f for f in reversed(tb) if f.filename == str(path)), None)
    return f"{path}:{frame.lineno}" if frame else str(path)


def _raised(path: Path, exc: BaseException, what: str) -> RunbookError:
    """A RunbookError naming the runbook's line that raised, and what it raised."""
    where = _where(path, exc)
    if isinstance(exc, SystemExit):
        raised = f"called sys.exit({exc.code!r})"
    else:
        detail = f": {exc}" if str(exc) else ""
        raised = f"raised {type(exc).__name__}{detail}"
    return RunbookError(
        f"{where}: {what} {raised} while loading; nothing was run",
        hint="fix the runbook file: it must define `runbook` without exiting or raising",
    )


def runbook_key(path: str | Path) -> str:
    """The identity of a runbook across runs: its absolute path."""
    return str(Path(path).resolve())


def default_state_dir(runbook_path: str | Path) -> Path:
    """``.handrail/`` beside the runbook."""
    return Path(runbook_path).resolve().parent / ".handrail"
