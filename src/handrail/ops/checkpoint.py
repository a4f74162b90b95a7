"""Moved to handrail.steps.checkpoint; importable here for one release (CHANGELOG.md)."""

import sys

from ..steps import checkpoint as _moved

sys.modules[__name__] = _moved
