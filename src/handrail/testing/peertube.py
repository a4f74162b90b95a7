"""Moved to :mod:`handrail.recipes.demo_services.peertube` (the demo uses it too); this old
path keeps working for one release."""

import sys

from ..recipes.demo_services import peertube as _m

sys.modules[__name__] = _m
