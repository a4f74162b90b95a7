"""Recipes: ready-made runbooks for real migrations, each with a sample maker.

Each recipe rewrites a migration people once did by hand (a guide, a script, a runbook)
so that it is verified and can be undone. A recipe knows how to make realistic sample
data in a directory and how to write a runbook file for that directory, so
``handrail demo --recipe NAME`` runs it end to end. It declares the throwaway services
its demo ``needs`` (started by :mod:`.demo_services`) and may bring its own CLI ``commands``,
which the core CLI registers (the dhash recipe's ``review``, the domains recipe's
``ties``): the core CLI knows no recipe's steps or resources.

One folder per recipe: ``recipe.py`` (the runbook's ``build()``), ``sample.py`` (the
sample data), ``commands.py`` (its commands, if any).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import click

from ..errors import BadInput
from . import demo_services
from .dhash.commands import review
from .domains.commands import ties


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str
    #: what it rewrites, in words (the hand-made migration it comes from)
    source: str
    #: make sample data under a directory; returns the runbook file's body
    prepare: Callable[[Path], str]
    #: throwaway services the demo starts (see :mod:`.demo_services`): "postgres", "peertube"
    needs: tuple[str, ...] = ()
    #: click commands or groups of its own, registered on ``handrail`` by the core CLI
    commands: tuple[click.Command, ...] = ()


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


def _domains(root: Path) -> str:
    from .domains.sample import make_sample

    make_sample(root, documents=6000, seed=7, pg_dsn=os.environ["HANDRAIL_DEMO_PG_DSN"])
    return (
        '"""The domain-categorization migration for the RECON data beside this file."""\n\n'
        "import os\n"
        "from pathlib import Path\n\n"
        "from handrail.recipes.domains.recipe import build\n\n"
        "runbook = build(\n"
        "    Path(__file__).parent,\n"
        '    peertube_url=os.environ["PEERTUBE_URL"],\n'
        '    peertube_dsn=os.environ["HANDRAIL_DEMO_PG_DSN"],\n'
        '    token_env="PEERTUBE_TOKEN",\n'
        "    stages=(100, 1000, None),\n"
        "    reprocess_stages=(10, 100, None),\n"
        ")\n"
    )


def _merge(root: Path) -> str:
    from .merge.sample import make_sample

    make_sample(root, videos=3000, seed=7)
    return (
        '"""The YTV2 merge: the two SQLite copies beside this file into PostgreSQL."""\n\n'
        "import os\n"
        "from pathlib import Path\n\n"
        "from handrail.recipes.merge.recipe import build\n\n"
        'runbook = build(Path(__file__).parent, dsn=os.environ["HANDRAIL_DEMO_PG_DSN"])\n'
    )


@contextmanager
def services(recipe: Recipe) -> Iterator[dict[str, str]]:
    """Start what the recipe's demo needs and give the environment variables its
    runbook reads (see :mod:`.demo_services`)."""
    with demo_services.services(recipe.needs) as env:
        yield env


RECIPES: dict[str, Recipe] = {
    "json-state": Recipe(
        "json-state",
        "py-captions JSON state files into SQLite (settings, executions, queue, progress, "
        "heartbeats)",
        "a hand-written guide that moved an app's JSON state files into SQLite",
        _json_state,
    ),
    "domains": Recipe(
        "domains",
        "RECON domain categorization: schema, backfill, tiebreaker, staged PeerTube push, "
        "quarantined reprocess",
        "a hand-written runbook and blast-radius table for a document catalogue's backfill "
        "and its push to a video site",
        _domains,
        needs=("postgres", "peertube"),
        commands=(ties,),
    ),
    "merge": Recipe(
        "merge",
        "two diverged SQLite copies merged into PostgreSQL by video_id, with a parity proof",
        "a hand-written plan and script that merged two copies of an app's database",
        _merge,
        needs=("postgres",),
    ),
    "dhash": Recipe(
        "dhash",
        "image library: dHash fingerprints, near-duplicate clusters, a review queue",
        "a hand-written plan to fingerprint an image library and find its near-duplicates",
        _dhash,
        commands=(review,),
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
