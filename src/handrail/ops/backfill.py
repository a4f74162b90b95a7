"""Moved to handrail.steps.backfill; importable here for one release (CHANGELOG.md)."""

import sys

from ..steps import backfill as _moved

sys.modules[__name__] = _moved
