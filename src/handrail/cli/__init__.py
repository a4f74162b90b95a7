"""The command line: a thin layer that parses arguments, calls the library, and turns its
errors into a message and an exit code (0 done, 1 failed, 2 bad input, 3 paused at a gate).

How it is cut (an arrow is "imports")::

    __init__  main: the group with every command registered (loaded on first use)
      ├─> run.py      plan, run, approve, reject, rollback
      ├─> state.py    status, backups list/verify/restore, purge, fingerprint
      ├─> reports.py  rehearse, doc, report
      ├─> demo.py     demo, recipes; registers the commands recipes bring
      │     └─> handrail.recipes ─> recipes/dhash/commands.py (review),
      │                             recipes/domains/commands.py (ties)
      └─────────> common.py   the main group, consoles, errors(), shared options,
                    │         resolve_run, open_journal, finish
                    └─> render.py   tables, gate evidence, progress (the console Observer)

Every command module and every recipe's commands import ``common``; ``common`` imports no
command module, so there is no cycle. Commands are module-level functions decorated onto
``common.main`` (as in sqlite-utils), importable and testable alone. ``main`` is put
together on first use, so a recipe's commands can import ``handrail.cli.common`` without
loading the whole CLI (which loads the recipes). The entry point is ``handrail.cli:main``;
``python -m handrail.cli`` runs it too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .common import main

__all__ = ["main"]


def __getattr__(name: str) -> object:
    if name != "main":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from .. import recipes
    from . import demo, reports, run, state  # noqa: F401 - importing registers their commands
    from .common import main

    demo.register_recipe_commands(main, recipes.RECIPES.values())
    globals()["main"] = main  # once: later lookups find it without coming here
    return main
