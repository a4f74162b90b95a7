"""Moved to :mod:`handrail.tablecopy.mapping`; this alias keeps the old path for one release."""

import sys

from .tablecopy import mapping as _m

sys.modules[__name__] = _m
