"""Moved to handrail.steps.http_push; importable here for one release (CHANGELOG.md)."""

import sys

from ..steps import http_push as _moved

sys.modules[__name__] = _moved
