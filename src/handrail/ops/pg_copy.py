"""Moved to :mod:`handrail.tablecopy.steps`; this alias keeps the old path for one release."""

import sys

from ..tablecopy import steps as _m

sys.modules[__name__] = _m
