"""Moved to handrail.engine.context; importable here for one release (CHANGELOG.md)."""

import sys

from .engine import context as _moved

sys.modules[__name__] = _moved
