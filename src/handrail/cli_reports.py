"""CLI commands for rehearsals and generated documents (registered on the main group)."""

from __future__ import annotations

import click


def register(main: click.Group) -> None:
    """Add this module's commands to ``main``."""
