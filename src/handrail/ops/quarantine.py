"""Moved to handrail.steps.quarantine; importable here for one release (CHANGELOG.md)."""

import sys

from ..steps import quarantine as _moved

sys.modules[__name__] = _moved
