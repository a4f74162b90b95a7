"""Resources: SQLite, JSON files, directories; PostgreSQL and HTTP plug in the same way."""

from .base import ABSENT, Backup, Fingerprint, Resource, verify_backup
from .directory import Directory
from .jsonfile import JSONFile
from .sqlite import SQLite

__all__ = [
    "ABSENT",
    "Backup",
    "Directory",
    "Fingerprint",
    "JSONFile",
    "Resource",
    "SQLite",
    "verify_backup",
]
