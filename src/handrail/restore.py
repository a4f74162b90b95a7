"""Moved to handrail.engine.restore; importable here for one release (CHANGELOG.md)."""

import sys

from .engine import restore as _moved

sys.modules[__name__] = _moved
