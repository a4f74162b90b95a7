"""Moved to handrail.engine.executor; importable here for one release (CHANGELOG.md)."""

import sys

from .engine import executor as _moved

sys.modules[__name__] = _moved
