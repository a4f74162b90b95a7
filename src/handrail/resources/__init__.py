"""Resources: SQLite, JSON files, directories (and PostgreSQL, HTTP services)."""

from .base import ABSENT, Backup, Fingerprint, Resource, verify_backup

__all__ = ["ABSENT", "Backup", "Fingerprint", "Resource", "verify_backup"]
