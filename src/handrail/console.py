"""Moved to :mod:`handrail.cli.render`; this old path keeps working for one release."""

import sys

from .cli import render as _m

sys.modules[__name__] = _m
