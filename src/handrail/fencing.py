"""Moved to handrail.engine.fencing; importable here for one release (CHANGELOG.md)."""

import sys

from .engine import fencing as _moved

sys.modules[__name__] = _moved
