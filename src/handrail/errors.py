"""Every error a user can cause, in one tree, each with an exit code.

    HandrailError                 exit 1   base; anything that went wrong in a run
    ├── BadInput                  exit 2   bad runbook, missing path, corrupt file, bad option
    │   ├── RunbookError          exit 2   runbook file cannot be loaded or is malformed
    │   ├── PreflightFailed       exit 2   a step cannot run: found before the first change
    │   ├── ResourceError         exit 2   a resource is missing, unreadable or corrupt
    │   │   └── CredentialsRefused exit 2  a service answered 401/403 to handrail's token
    │   └── PolicyError           exit 2   the engine refuses: a rule in DESIGN's policy forbids it
    │       └── LeaseHeld         exit 2   another run holds the runbook's lease
    ├── StepFailed                exit 1   a step's apply or rollback raised
    ├── CheckFailed               exit 1   a gate's check failed
    ├── BackupError               exit 1   a backup could not be taken or did not verify
    ├── DiskFull                  exit 1   a disk filled during a run; free space and resume
    ├── RollbackConflict          exit 1   rows changed by someone else after the run wrote them
    └── LeaseLost                 exit 1   another process took the lease over; this one stopped

The CLI turns each into its message and ``exit_code``. The library never prints.
"""

from __future__ import annotations


class HandrailError(Exception):
    """Base of every handrail error; ``exit_code`` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class BadInput(HandrailError):
    """The user gave something unusable: a file, a path, an option."""

    exit_code = 2


class RunbookError(BadInput):
    """A runbook file does not load or does not define a valid ``runbook``."""


class PreflightFailed(BadInput):
    """A step cannot run, found by the preflight before the first change."""


class ResourceError(BadInput):
    """A resource is missing, unreadable, corrupt, or of the wrong kind."""


class CredentialsRefused(ResourceError):
    """A service refused the credentials (401, or 403 for the whole service)."""

    def __init__(self, message: str, *, status: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class PolicyError(BadInput):
    """The engine refuses an action that its safety policy forbids."""


class LeaseHeld(PolicyError):
    """Another run holds the lease of this runbook."""


class StepFailed(HandrailError):
    """A step's apply, verify or rollback raised an exception."""


class CheckFailed(HandrailError):
    """A gate's automated check failed."""


class BackupError(HandrailError):
    """A backup could not be taken, or it failed its verification."""


class DiskFull(HandrailError):
    """A disk filled up while writing: ``path`` is where, ``free`` how many bytes are left.

    The write that failed was rolled back (the journal commits whole records or none), so
    the run resumes with the same command once space is freed."""

    def __init__(
        self, message: str, *, path: str, free: int | None, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.path = path
        self.free = free


class RollbackConflict(HandrailError):
    """Rollback found rows that someone else changed after the run; they were left alone."""

    def __init__(self, message: str, *, hint: str | None = None, items: list[str] | None = None):
        super().__init__(message, hint=hint)
        self.items = list(items or [])


class LeaseLost(HandrailError):
    """Another process took this run's lease over (a newer lease generation): this process
    stopped at its next write and applied nothing more; the new holder continues."""
