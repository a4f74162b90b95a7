"""Moved to handrail.steps.owned; importable here for one release (CHANGELOG.md)."""

import sys

from ..steps import owned as _moved

sys.modules[__name__] = _moved
