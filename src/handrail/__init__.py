"""handrail: data migrations as runbooks in code, with an operator's habits enforced.

The public API. A runbook file defines ``runbook = Runbook(...)`` from these pieces.
"""

from . import checks
from .context import StepContext
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
from .executor import Executor, Observer, RunOptions, RunResult
from .journal import Journal
from .loader import load_runbook
from .model import BlastRadius, CheckResult, Outcome, Plan, RunStatus, StepStatus, Tier
from .ops.backfill import Backfill
from .ops.checkpoint import Checkpoint
from .ops.json_import import ImportJSON, ImportRecords, RecordError, RejectShare, SourceRecord
from .ops.json_transform import TransformJSON
from .ops.sql import SQL, AddColumns, CreateIndex, CreateSchema
from .resources import Backup, Directory, Fingerprint, JSONFile, Resource, SQLite
from .runbook import Check, Gate, Runbook, Stages, Step

__version__ = "0.1.0"

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
    "CreateIndex",
    "CreateSchema",
    "CredentialsRefused",
    "Directory",
    "DiskFull",
    "Executor",
    "Fingerprint",
    "Gate",
    "HandrailError",
    "ImportJSON",
    "ImportRecords",
    "JSONFile",
    "Journal",
    "LeaseHeld",
    "LeaseLost",
    "Observer",
    "Outcome",
    "Plan",
    "PolicyError",
    "PreflightFailed",
    "RecordError",
    "RejectShare",
    "Resource",
    "ResourceError",
    "RollbackConflict",
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
    "Tier",
    "TransformJSON",
    "checks",
    "load_runbook",
]
