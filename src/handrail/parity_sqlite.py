"""Moved to :mod:`handrail.tablecopy.parity_sqlite` (an alias for one release)."""

import sys

from .tablecopy import parity_sqlite as _m

sys.modules[__name__] = _m
