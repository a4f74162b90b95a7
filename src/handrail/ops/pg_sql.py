"""Moved to handrail.steps.pg_sql; importable here for one release (CHANGELOG.md)."""

import sys

from ..steps import pg_sql as _moved

sys.modules[__name__] = _moved
