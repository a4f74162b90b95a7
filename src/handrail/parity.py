"""Moved to :mod:`handrail.tablecopy.parity`; this alias keeps the old path for one release."""

import sys

from .tablecopy import parity as _m

sys.modules[__name__] = _m
