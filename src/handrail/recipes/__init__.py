"""Recipes: one runbook per real migration in shared/seeds/, each with a sample maker.

A recipe knows how to make realistic sample data in a directory and how to write a
runbook file for that directory, so ``handrail demo --recipe NAME`` can run it end to end.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
    #: throwaway services the demo starts: "postgres", "peertube"
    needs: tuple[str, ...] = ()


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
    """Start what the recipe's demo needs (a throwaway PostgreSQL cluster, a PeerTube-like
    API on loopback) and give the environment variables its runbook reads."""
    if not recipe.needs:
        yield {}
        return
    import secrets

    from ..testing.postgres import TempCluster

    with TempCluster() as cluster:
        dsn = cluster.create_database("demo")
        env = {"HANDRAIL_DEMO_PG_DSN": dsn}
        if "peertube" not in recipe.needs:
            yield env
            return
        from ..testing.peertube import PeerTubeServer

        token = secrets.token_hex(16)
        from .domains.sample import make_sample  # noqa: F401 - fail early if missing

        with PeerTubeServer(dsn, token=token) as server:
            yield env | {"PEERTUBE_URL": server.url, "PEERTUBE_TOKEN": token}


RECIPES: dict[str, Recipe] = {
    "json-state": Recipe(
        "json-state",
        "py-captions JSON state files into SQLite (settings, executions, queue, progress, "
        "heartbeats)",
        "003 (seeds/README.md part C)",
        _json_state,
    ),
    "domains": Recipe(
        "domains",
        "RECON domain categorization: schema, backfill, tiebreaker, staged PeerTube push, "
        "quarantined reprocess",
        "000 and 001 (seeds/README.md part A)",
        _domains,
        needs=("postgres", "peertube"),
    ),
    "merge": Recipe(
        "merge",
        "two diverged SQLite copies merged into PostgreSQL by video_id, with a parity proof",
        "004 (seeds/README.md part D)",
        _merge,
        needs=("postgres",),
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
