"""Moved to handrail.engine.diskfull; importable here for one release (CHANGELOG.md)."""

import sys

from .engine import diskfull as _moved

sys.modules[__name__] = _moved
