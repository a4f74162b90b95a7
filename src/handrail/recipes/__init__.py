"""Recipes: one runbook per real migration in shared/seeds/, each with a sample maker.

A recipe knows how to make realistic sample data in a directory and how to write a
runbook file for that directory, so ``handrail demo --recipe NAME`` can run it end to end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInput


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str
    seed: str  # which seed document it comes from
    #: make sample data under a directory; returns the runbook file's body
    prepare: Callable[[Path], str]


def _json_state(root: Path) -> str:
    from .json_state.sample import make_sample

    make_sample(root / "data", executions=3000, seed=7, state_form="dict")
    return (
        '"""The JSON-state-to-SQLite migration for the data directory beside this file."""\n\n'
        "from pathlib import Path\n\n"
        "from handrail.recipes.json_state.recipe import build\n\n"
        'runbook = build(Path(__file__).parent / "data", max_reject_share=0.01)\n'
    )


def _dhash(root: Path) -> str:
    from ..images.sample import make_sample_library

    make_sample_library(root, count=600, seed=7)
    return (
        '"""The image-library dHash migration for the library beside this file."""\n\n'
        "from pathlib import Path\n\n"
        "from handrail.recipes.dhash.recipe import build\n\n"
        "# The sample plants a few broken files on purpose; a real library would keep 0.01.\n"
        "runbook = build(Path(__file__).parent, max_failure_rate=0.02)\n"
    )


RECIPES: dict[str, Recipe] = {
    "json-state": Recipe(
        "json-state",
        "py-captions JSON state files into SQLite (settings, executions, queue, progress, "
        "heartbeats)",
        "003 (seeds/README.md part C)",
        _json_state,
    ),
    "dhash": Recipe(
        "dhash",
        "image library: dHash fingerprints, near-duplicate clusters, a review queue",
        "002 (seeds/README.md part B)",
        _dhash,
    ),
}

DEFAULT = "json-state"


def get(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise BadInput(
            f"no recipe named {name!r}; recipes: {', '.join(sorted(RECIPES))}",
            hint="`handrail recipes` lists them",
        ) from None
