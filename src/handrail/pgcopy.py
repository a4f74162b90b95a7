"""Moved to :mod:`handrail.tablecopy.copy`; this alias keeps the old path for one release."""

import sys

from .tablecopy import copy as _m

sys.modules[__name__] = _m
