"""handrail: data migrations as runbooks in code, with an operator's habits enforced.

The public API: everything a runbook or a program using handrail needs is importable from
here (``from handrail import Runbook, SQLite, Backfill, Postgres, CopyTable``). Names that
need an optional extra (PostgreSQL: ``pip install 'handrail[postgres]'``; HTTP services:
``handrail[http]``; documents: ``handrail[review]``) are loaded when first used, so the
core works without them. Modules below this one are private: their paths may change.
"""

from typing import TYPE_CHECKING

from . import checks
from .engine.context import StepContext
from .engine.executor import Executor, Observer, RunOptions, RunResult
from .engine.journal import Journal
from .engine.loader import load_runbook, runbook_key
from .errors import (
    BackupError,
    BadInput,
    CheckFailed,
    CredentialsRefused,
    DiskFull,
    HandrailError,
    LeaseHeld,
    LeaseLost,
    PolicyError,
    PreflightFailed,
    ResourceError,
    RollbackConflict,
    RunbookError,
    StepFailed,
)
from .model import BlastRadius, CheckResult, Outcome, Plan, RunStatus, StepStatus, Tier
from .resources import Backup, Directory, Fingerprint, JSONFile, Resource, SQLite
from .runbook import Check, Gate, Runbook, Stages, Step
from .steps.backfill import Backfill
from .steps.checkpoint import Checkpoint
from .steps.json_import import ImportJSON, ImportRecords, RecordError, RejectShare, SourceRecord
from .steps.json_transform import TransformJSON
from .steps.sql import SQL, AddColumns, CreateIndex, CreateSchema

__version__ = "0.1.0"

if TYPE_CHECKING:  # what type checkers see; at run time __getattr__ loads these on use
    from .engine.rehearse import RehearsalOptions, RehearsalResult, rehearse
    from .report import DocInputs, last_rehearsal, render, run_report, runbook_document
    from .resources.http import HTTPService
    from .resources.postgres import Postgres
    from .steps.http_push import HTTPPush
    from .steps.pg_backfill import PgBackfill
    from .steps.pg_sql import PgSQL
    from .steps.quarantine import QuarantineDelete, RowUpdate
    from .tablecopy import mapping as conversions
    from .tablecopy.mapping import Column, CopySpec, TableMap
    from .tablecopy.steps import CopyTable, Parity

#: public names loaded on first use (their modules need optional extras), by module
_LAZY: dict[str, tuple[str, ...]] = {
    "handrail.resources.postgres": ("Postgres",),
    "handrail.resources.http": ("HTTPService",),
    "handrail.steps.pg_sql": ("PgSQL",),
    "handrail.steps.pg_backfill": ("PgBackfill",),
    "handrail.steps.http_push": ("HTTPPush",),
    "handrail.steps.quarantine": ("QuarantineDelete", "RowUpdate"),
    "handrail.tablecopy.steps": ("CopyTable", "Parity"),
    "handrail.tablecopy.mapping": ("Column", "CopySpec", "TableMap"),
    "handrail.engine.rehearse": ("RehearsalOptions", "RehearsalResult", "rehearse"),
    "handrail.report": ("DocInputs", "last_rehearsal", "render", "run_report", "runbook_document"),
}
#: module namespaces exported whole
_LAZY_MODULES = {"conversions": "handrail.tablecopy.mapping"}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> object:
    import importlib

    if name in _LAZY_MODULES:
        return importlib.import_module(_LAZY_MODULES[name])
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'handrail' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE) | set(_LAZY_MODULES))


__all__ = [
    "SQL",
    "AddColumns",
    "Backfill",
    "Backup",
    "BackupError",
    "BadInput",
    "BlastRadius",
    "Check",
    "CheckFailed",
    "CheckResult",
    "Checkpoint",
    "Column",
    "CopySpec",
    "CopyTable",
    "CreateIndex",
    "CreateSchema",
    "CredentialsRefused",
    "Directory",
    "DiskFull",
    "DocInputs",
    "Executor",
    "Fingerprint",
    "Gate",
    "HTTPPush",
    "HTTPService",
    "HandrailError",
    "ImportJSON",
    "ImportRecords",
    "JSONFile",
    "Journal",
    "LeaseHeld",
    "LeaseLost",
    "Observer",
    "Outcome",
    "Parity",
    "PgBackfill",
    "PgSQL",
    "Plan",
    "PolicyError",
    "Postgres",
    "PreflightFailed",
    "QuarantineDelete",
    "RecordError",
    "RehearsalOptions",
    "RehearsalResult",
    "RejectShare",
    "Resource",
    "ResourceError",
    "RollbackConflict",
    "RowUpdate",
    "RunOptions",
    "RunResult",
    "RunStatus",
    "Runbook",
    "RunbookError",
    "SQLite",
    "SourceRecord",
    "Stages",
    "Step",
    "StepContext",
    "StepFailed",
    "StepStatus",
    "TableMap",
    "Tier",
    "TransformJSON",
    "checks",
    "conversions",
    "last_rehearsal",
    "load_runbook",
    "rehearse",
    "render",
    "run_report",
    "runbook_document",
    "runbook_key",
]
