"""Transform a JSON file in place: temp file, fsync, atomic rename; exact rollback.

The new file and the one rollback writes back keep the owner, group and mode the file
had before the step: an application running as another user still owns its config."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..engine import fencing
from ..engine.context import StepContext
from ..errors import RollbackConflict, RunbookError, StepFailed
from ..hashing import sha256_file, sha256_text
from ..inline import code
from ..model import CheckResult, Outcome, Plan
from ..resources._files import Owner, atomic_write_bytes, check_replaceable
from ..resources.jsonfile import JSONFile, load_json
from ..runbook import Step, describe_callable


class TransformJSON(Step):
    """Replace a JSON file's content with ``fn(old)`` (``old`` is None if the file is absent).

    Not transactional, so made idempotent instead: the old bytes and the sha256 of the
    old and new file are journalled before the rename; on resume a file that already has
    the new digest is left alone. Rollback writes the old bytes back (or removes a file
    the step created) only if the file still holds what the step wrote.
    """

    def __init__(
        self,
        name: str,
        file: JSONFile,
        fn: Callable[..., Any],
        *,
        indent: int | None = 2,
        **kw: Any,
    ) -> None:
        self.file, self.fn, self.indent = file, fn, indent
        kw.setdefault("writes", (file,))
        super().__init__(name, **kw)

    def params(self) -> dict[str, Any]:
        return {"file": self.file.name, "fn": describe_callable(self.fn), "indent": self.indent}

    def explain_changes(self) -> str:
        return f"rewrites {code(self.file.name)} atomically (temp file, fsync, rename)"

    def explain_worst_case(self) -> str:
        return "none half-written: the old file or the new one, never a mix"

    def explain_rollback(self) -> str:
        return (
            f"writes back the previous bytes of {code(self.file.name)} if it still holds "
            "what the step wrote (removes it if the step created it); otherwise reports it"
        )

    def _render(self, value: Any) -> bytes:
        try:
            text = json.dumps(
                value, indent=self.indent, ensure_ascii=False, allow_nan=self.file.allow_nan
            )
        except ValueError as exc:  # NaN or Infinity: the file would no longer be JSON
            raise RunbookError(
                f"step {self.name!r}: {describe_callable(self.fn)} returned {exc}; written "
                f"out, {self.file.path} would not be valid JSON",
                hint="return null (None) instead, or declare the file with allow_nan=True "
                "if its application reads NaN and Infinity",
            ) from exc
        return (text + "\n").encode()

    def _new(self, ctx: StepContext) -> tuple[Any, Any]:
        f = ctx.use(self.file)
        old = load_json(f.path, what=self.file.name, allow_nan=f.allow_nan) if f.exists() else None
        copy = json.loads(json.dumps(old)) if old is not None else None
        # fn(old) or fn(old, ctx): a transform may need the run (its results, its time).
        if len(inspect.signature(self.fn).parameters) >= 2:
            return old, self.fn(copy, ctx)
        return old, self.fn(copy)

    def validate(self, ctx: StepContext) -> None:
        """Before the run's first change: the file can be replaced keeping its owner,
        group and mode. (``fn`` is not called here: it may read what earlier steps make;
        plan and the preflight's forward run check its result.)"""
        check_replaceable(ctx.use(self.file).path)

    def plan(self, ctx: StepContext) -> Plan:
        old, new = self._new(ctx)
        self._render(new)  # a value that is not JSON is refused now, not at apply
        check_replaceable(ctx.use(self.file).path)  # its owner can be kept
        if isinstance(old, dict) and isinstance(new, dict):
            added = sorted(set(new) - set(old))
            removed = sorted(set(old) - set(new))
            changed = sorted(k for k in set(old) & set(new) if old[k] != new[k])
            details: dict[str, Any] = {"added": added, "removed": removed, "changed": changed}
        else:
            details = {"changed": old != new}
        verb = "create" if old is None else "rewrite"
        return Plan(
            summary=f"{verb} {ctx.use(self.file).path.name} atomically",
            items=int(old != new),
            details=details,
        )

    def apply_batch(self, ctx: StepContext, batch: int, items: list[Any]) -> int:
        f = ctx.use(self.file)
        current = sha256_file(f.path)[0] if f.exists() else None
        if "post" in ctx.state:
            if current == ctx.state["post"]:
                return 1  # renamed before the crash: done
            if current != ctx.state["pre"]:
                raise StepFailed(f"{f.path} changed since this step began; not overwriting it")
        _, new = self._new(ctx)
        data = self._render(new)
        saved = ctx.step_dir() / "before.json"
        fencing.check()  # a stale holder must not overwrite the saved original
        if f.exists():
            saved.write_bytes(f.path.read_bytes())
        owner = Owner.of(f.path)
        ctx.save_state(
            pre=current,
            post=sha256_text(data.decode()),
            saved=str(saved),
            owner=owner.to_json() if owner else None,
        )
        atomic_write_bytes(f.path, data, owner=owner)
        return 1

    def verify(self, ctx: StepContext) -> list[CheckResult]:
        f = ctx.use(self.file)
        ok = f.exists() and sha256_file(f.path)[0] == ctx.state.get("post")
        return [
            CheckResult(
                f"{self.name}: file written",
                Outcome.PASS if ok else Outcome.FAIL,
                {"path": str(f.path), "sha256": ctx.state.get("post")},
            )
        ]

    def rollback(self, ctx: StepContext) -> None:
        f = ctx.use(self.file)
        if "post" not in ctx.state:
            return
        current = sha256_file(f.path)[0] if f.exists() else None
        if current == ctx.state["pre"]:
            return  # never renamed (crash before), or already rolled back
        if current != ctx.state["post"] and not ctx.state.get("_force"):
            raise RollbackConflict(
                f"{f.path} was changed after this step wrote it; left alone",
                hint="inspect it; `handrail rollback RUN --force` restores the old content",
            )
        if ctx.state["pre"] is None:
            f.path.unlink(missing_ok=True)
        else:
            # The owner, group and mode the file had before the step, not whatever it
            # has now (a forced rollback may replace a file someone else rewrote).
            owner = Owner.from_json(ctx.state.get("owner")) or Owner.of(f.path)
            atomic_write_bytes(f.path, Path(ctx.state["saved"]).read_bytes(), owner=owner)
