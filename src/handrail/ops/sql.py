"""Moved to handrail.steps.sql; importable here for one release (CHANGELOG.md)."""

import sys

from ..steps import sql as _moved

sys.modules[__name__] = _moved
