"""``python -m handrail.cli``: the same as the ``handrail`` command."""

from . import main

main()
