"""Moved to handrail.engine.loader; importable here for one release (CHANGELOG.md)."""

import sys

from .engine import loader as _moved

sys.modules[__name__] = _moved
