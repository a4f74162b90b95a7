"""Moved to handrail.engine.rehearse; importable here for one release (CHANGELOG.md)."""

import sys

from .engine import rehearse as _moved

sys.modules[__name__] = _moved
