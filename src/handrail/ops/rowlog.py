"""Moved to handrail.steps.rowlog; importable here for one release (CHANGELOG.md)."""

import sys

from ..steps import rowlog as _moved

sys.modules[__name__] = _moved
