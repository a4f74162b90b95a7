"""Moved to handrail.steps.json_import; importable here for one release (CHANGELOG.md)."""

import sys

from ..steps import json_import as _moved

sys.modules[__name__] = _moved
