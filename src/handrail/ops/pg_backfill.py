"""Moved to handrail.steps.pg_backfill; importable here for one release (CHANGELOG.md)."""

import sys

from ..steps import pg_backfill as _moved

sys.modules[__name__] = _moved
