"""Moved to handrail.tablecopy.parity_sqlite: this alias keeps the old path for one release."""

import importlib
import sys

# by module name, not `from .tablecopy import parity_sqlite`: the package's API may hold a
# function of the same name (handrail.tablecopy.parity is the function parity)
sys.modules[__name__] = importlib.import_module("handrail.tablecopy.parity_sqlite")
