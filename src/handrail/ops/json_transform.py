"""Moved to handrail.steps.json_transform; importable here for one release (CHANGELOG.md)."""

import sys

from ..steps import json_transform as _moved

sys.modules[__name__] = _moved
