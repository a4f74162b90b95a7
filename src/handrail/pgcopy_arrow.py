"""Moved to :mod:`handrail.tablecopy.read_arrow`; this alias keeps the old path for one release."""

import sys

from .tablecopy import read_arrow as _m

sys.modules[__name__] = _m
