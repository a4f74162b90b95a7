"""Moved to handrail.engine.journal; importable here for one release (CHANGELOG.md)."""

import sys

from .engine import journal as _moved

sys.modules[__name__] = _moved
