"""Moved to handrail.engine.preflight; importable here for one release (CHANGELOG.md)."""

import sys

from .engine import preflight as _moved

sys.modules[__name__] = _moved
